"""``nar map``: a self-contained interactive 2-D map of every indexed model.

The embeddings are projected to 2-D (t-SNE when scikit-learn is installed and there are enough
points, else PCA), coloured by family, and written into one HTML file with inline SVG and a few
lines of JavaScript: no network is needed to view it. Hover shows name, source and family; a click
lists the k nearest models by cosine in the full 128-D space (not the 2-D distance).
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["map_points", "project_2d", "render_map", "write_map"]

_PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#17becf",
]


def project_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) unit vectors -> (N, 2) coordinates scaled to [0, 1]. Deterministic for a seed."""
    n = len(vectors)
    if n == 0:
        return np.zeros((0, 2))
    if n == 1:
        return np.full((1, 2), 0.5)
    xy: np.ndarray | None = None
    if n >= 12:
        try:
            from sklearn.manifold import TSNE

            xy = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), metric="cosine", init="pca",
                      random_state=seed).fit_transform(vectors.astype(np.float64))
        except ImportError:
            xy = None
    if xy is None:
        centred = vectors - vectors.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (xy - lo) / np.where(hi - lo > 0, hi - lo, 1.0)


def _family(entry: Any) -> str:
    meta = entry.metadata or {}
    tags = meta.get("tags") or {}
    return str(meta.get("family") or tags.get("family") or entry.family_guess or meta.get("model_type")
               or meta.get("registered_name") or entry.source_kind or "unknown")


def _label(entry: Any) -> str:
    meta = entry.metadata or {}
    name = meta.get("display_name") or meta.get("name") or meta.get("model_name")
    return str(name or entry.key)


def _nearest(index: Any, entry: Any, k: int, hidden: frozenset[str]) -> list[list[Any]]:
    """The ``k`` nearest shown entries by cosine in the full space (FAISS k-NN, best first)."""
    if k < 1:
        return []
    hits = index.search(entry.vector, k=k, exclude_keys=hidden | {entry.key})
    return [[h.key, _label(h.entry), round(float(h.score), 3),
             "identical" if h.entry.graph_hash and h.entry.graph_hash == entry.graph_hash else ""]
            for h in hits]


def map_points(index: Any, k: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Points of the map: key, label, family, source, x, y and the k nearest (key, score).

    An entry that folds into another indexed entry (e.g. a registered version into its model,
    see :mod:`nar_plugin.search.resolvers`) is drawn once, as that entry. Neighbours come from
    the index's k-NN search, so memory stays linear in the number of points.
    """
    from nar_plugin.search.resolvers import fold

    everything = list(index.entries())
    keys = {e.key for e in everything}
    entries = [f.entry for f in fold(everything, keys.__contains__)]
    if not entries:
        return []
    hidden = frozenset(keys - {e.key for e in entries})
    xy = project_2d(np.stack([e.vector for e in entries]).astype(np.float32), seed)
    return [{
        "key": e.key, "label": _label(e), "family": _family(e), "source": e.source_kind or "",
        "hash": (e.graph_hash or "")[:12], "x": round(float(xy[i, 0]), 4), "y": round(float(xy[i, 1]), 4),
        "nearest": _nearest(index, e, k, hidden),
    } for i, e in enumerate(entries)]


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;display:flex;height:100vh;color:#222}
#plot{flex:1;position:relative}svg{width:100%;height:100%}
circle{stroke:#fff;stroke-width:1;cursor:pointer}circle.sel{stroke:#000;stroke-width:3}
#side{width:360px;border-left:1px solid #ddd;padding:12px;overflow:auto}
#tip{position:absolute;pointer-events:none;background:#222;color:#fff;padding:4px 8px;border-radius:4px;display:none;font-size:12px}
.legend span{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
.legend div{margin:2px 0}table{border-collapse:collapse;width:100%}td{padding:2px 4px;border-bottom:1px solid #eee}
h1{font-size:16px;margin:0 0 8px}
</style></head><body>
<div id="plot"><svg id="svg" viewBox="0 0 1000 800" preserveAspectRatio="xMidYMid meet"></svg><div id="tip"></div></div>
<div id="side"><h1>__TITLE__</h1><p id="count"></p><div id="detail"><p>Click a point to list its nearest models (cosine in 128-D).</p></div>
<h1>Families</h1><div class="legend" id="legend"></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const pts = JSON.parse(document.getElementById('data').textContent);
const palette = __PALETTE__;
const fams = [...new Set(pts.map(p => p.family))].sort();
const color = f => palette[fams.indexOf(f) % palette.length];
const svg = document.getElementById('svg'), tip = document.getElementById('tip');
const NS = 'http://www.w3.org/2000/svg';
document.getElementById('count').textContent = pts.length + ' models, ' + fams.length + ' families';
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
pts.forEach((p, i) => {
  const c = document.createElementNS(NS, 'circle');
  c.setAttribute('cx', 40 + p.x * 920); c.setAttribute('cy', 40 + (1 - p.y) * 720);
  c.setAttribute('r', 7); c.setAttribute('fill', color(p.family)); c.dataset.i = i;
  c.addEventListener('mousemove', e => { tip.style.display = 'block'; tip.style.left = (e.offsetX + 12) + 'px';
    tip.style.top = (e.offsetY + 12) + 'px';
    tip.innerHTML = '<b>' + esc(p.label) + '</b><br>' + esc(p.family) + ' · ' + esc(p.source) + '<br>' + esc(p.key); });
  c.addEventListener('mouseleave', () => tip.style.display = 'none');
  c.addEventListener('click', () => select(i));
  svg.appendChild(c);
});
function select(i) {
  document.querySelectorAll('circle').forEach(c => c.classList.toggle('sel', +c.dataset.i === i));
  const p = pts[i];
  let h = '<h1>' + esc(p.label) + '</h1><p>' + esc(p.key) + '<br>family ' + esc(p.family) + ', hash ' + esc(p.hash) + '</p><table>';
  p.nearest.forEach(n => { h += '<tr><td>' + esc(n[1]) + '</td><td>' + n[2].toFixed(3) + '</td><td>' + esc(n[3]) + '</td></tr>'; });
  document.getElementById('detail').innerHTML = h + '</table>';
}
document.getElementById('legend').innerHTML = fams.map(f => '<div><span style="background:' + color(f) + '"></span>' + esc(f) + '</div>').join('');
</script></body></html>
"""


def render_map(points: list[dict[str, Any]], title: str = "nar-plugin: architecture map") -> str:
    """The map as one HTML document (inline data, no external resources)."""
    data = json.dumps(points).replace("</", "<\\/")  # keep the JSON from closing the script tag
    return (_TEMPLATE.replace("__TITLE__", html.escape(title))
            .replace("__PALETTE__", json.dumps(_PALETTE)).replace("__DATA__", data))


def write_map(out: str | Path, index: Any = None, k: int = 5, seed: int = 0) -> int:
    """Write the map of ``index`` (default: the one under ``NAR_HOME``); returns the point count."""
    from nar_plugin.search.api import open_index

    points = map_points(open_index(index), k=k, seed=seed)
    Path(out).write_text(render_map(points))
    return len(points)

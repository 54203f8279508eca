"""The architecture map: projection, HTML, and (slow tier) a real headless browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nar_plugin.apps.map import map_points, project_2d, render_map, write_map
from nar_plugin.index import EmbeddingIndex


def _index(tmp_path: Path) -> EmbeddingIndex:
    rng = np.random.default_rng(0)
    idx = EmbeddingIndex(tmp_path / "idx", encoder_version="test-enc")
    centers = rng.normal(size=(3, 128))
    for f in range(3):
        for i in range(6):
            v = centers[f] + 0.1 * rng.normal(size=128)
            idx.add(f"m:{f}-{i}", v.astype(np.float32), graph_hash=f"h{f}{i}",
                    metadata={"family": f"fam{f}", "name": f"model {f}-{i}"})
    return idx


def test_projection_is_deterministic_and_scaled() -> None:
    v = np.random.default_rng(1).normal(size=(20, 128)).astype(np.float32)
    a, b = project_2d(v, seed=0), project_2d(v, seed=0)
    assert np.allclose(a, b) and a.min() >= 0 and a.max() <= 1 and a.shape == (20, 2)
    assert project_2d(v[:3]).shape == (3, 2)  # PCA path for tiny sets


def test_nearest_lists_use_full_dimensional_cosine(tmp_path: Path) -> None:
    pts = map_points(_index(tmp_path), k=5)
    assert len(pts) == 18
    for p in pts:
        fam = p["family"]
        # each point's 5 nearest are the other 5 members of its family
        assert all(n[0].startswith(f"m:{fam[-1]}-") for n in p["nearest"]), p
        assert [n[2] for n in p["nearest"]] == sorted((n[2] for n in p["nearest"]), reverse=True)


def test_html_is_self_contained_and_escapes(tmp_path: Path) -> None:
    idx = _index(tmp_path)
    idx.add("evil", np.ones(128, dtype=np.float32), metadata={"family": "</script><b>x", "name": "<img>"})
    out = tmp_path / "map.html"
    assert write_map(out, index=idx) == 19
    doc = out.read_text()
    assert not re.search(r"(src|href)=\"https?://", doc)  # nothing fetched at view time
    data = doc.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    pts = json.loads(data)
    assert {p["family"] for p in pts} >= {"fam0", "fam1", "fam2", "</script><b>x"}
    assert render_map([]).count("<svg") == 1


@pytest.mark.slow
def test_map_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the slow tier needs Chromium: apt-get install chromium")
    out = tmp_path / "map.html"
    write_map(out, index=_index(tmp_path))
    shot = tmp_path / "map.png"
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=3000", "--dump-dom", out.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.stdout.count("<circle") == 18, dom.stderr[-2000:]  # the script drew every point
    assert "18 models, 3 families" in dom.stdout
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1300,850",
                    f"--screenshot={shot}", out.as_uri()], capture_output=True, timeout=120, check=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

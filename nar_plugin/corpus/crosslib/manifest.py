"""The committed model list of the cross-library benchmark (``corpus/cross_library/manifest.json``).

:func:`generate_manifest` enumerates every library (:mod:`.libraries`), maps names with the
rules of :mod:`.families`, drops resolution twins, and keeps only families implemented by at
least two libraries (the benchmark is about the same architecture written by different people).
The result is committed, so evaluating needs none of the third-party libraries; regenerate it
after changing a rule (``nar corpus crosslib manifest``).
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from nar_plugin.corpus.crosslib.libraries import LIBRARIES, Candidate, candidates
from nar_plugin.errors import CorruptArtifactError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MIN_LIBRARIES",
    "default_dir",
    "generate_manifest",
    "load_manifest",
    "write_manifest",
]

MANIFEST_FORMAT = "nar-crosslib-manifest"
#: Bump when the row schema or the mapping rules change.
MANIFEST_VERSION = 1
#: A family is in the benchmark when at least this many libraries implement it.
MIN_LIBRARIES = 2
_RES_TWIN = re.compile(r"(_window\d+)?_\d{3}$")


def default_dir() -> Path:
    """``<corpus dir>/cross_library`` (``<repo>/corpus/cross_library`` in a source checkout)."""
    from nar_plugin.corpus.build import default_corpus_dir

    return default_corpus_dir() / "cross_library"


def _drop_resolution_twins(rows: Iterable[Candidate]) -> tuple[list[Candidate], list[str]]:
    kept: dict[tuple[str, str, str], Candidate] = {}
    dropped: list[str] = []
    def order(c: Candidate) -> tuple[str, str, int, str]:  # the lowest resolution of a stem wins
        m = re.search(r"_(\d{3})$", c.name)
        return c.library, _RES_TWIN.sub("", c.name), int(m.group(1)) if m else 0, c.name

    for c in sorted(rows, key=order):
        sig = (c.library, c.fine, _RES_TWIN.sub("", c.name))
        if sig in kept:
            dropped.append(c.key)
        else:
            kept[sig] = c
    return list(kept.values()), dropped


def generate_manifest(libraries: Sequence[str] = LIBRARIES, min_libraries: int = MIN_LIBRARIES) -> dict[str, Any]:
    """Enumerate, map and filter; returns the manifest document (see :func:`write_manifest`).

    Raises:
        ImportError: a library is not importable (run inside
            :func:`~nar_plugin.corpus.crosslib.install.on_path`).
    """
    from importlib.metadata import PackageNotFoundError, version

    rows: list[Candidate] = []
    for lib in libraries:
        rows.extend(candidates(lib))
    rows, twins = _drop_resolution_twins(rows)
    libs_of: dict[str, set[str]] = defaultdict(set)
    for c in rows:
        libs_of[c.family].add(c.library)
    keep = {f for f, libs in libs_of.items() if len(libs) >= min_libraries}
    single = sorted(c.key for c in rows if c.family not in keep)
    rows = sorted((c for c in rows if c.family in keep), key=lambda c: (LIBRARIES.index(c.library), c.name))
    versions = {}
    for lib, pkg in (("timm", "timm"), ("torchvision", "torchvision"), ("transformers", "transformers"),
                     ("pytorchcv", "pytorchcv"), ("efficientnet_pytorch", "efficientnet-pytorch"),
                     ("pretrainedmodels", "pretrainedmodels"), ("open_clip", "open-clip-torch"),
                     ("vit_pytorch", "vit-pytorch"), ("smp", "segmentation-models-pytorch"), ("torchaudio", "torchaudio"),
                     ("torch", "torch")):
        try:
            versions[lib] = version(pkg)
        except PackageNotFoundError:
            versions[lib] = "absent"
    return {
        "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "min_libraries": min_libraries,
        "library_versions": versions,
        "dropped": {"resolution_twins": twins, "single_library_family": single},
        "models": [_row(c) for c in rows],
    }


def _row(c: Candidate) -> dict[str, Any]:
    return {"key": c.key, "library": c.library, "name": c.name, "family": c.family, "fine": c.fine,
            "spec": c.spec, "build": dict(c.build)}


def write_manifest(doc: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``doc`` as JSON with one model per line (reviewable diffs). Returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in doc.items() if k != "models"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)},")
    lines.append('  "models": [')
    rows = [json.dumps(r, sort_keys=False, separators=(", ", ": ")) for r in doc["models"]]
    lines.extend(f"    {r}{',' if i < len(rows) - 1 else ''}" for i, r in enumerate(rows))
    lines.append("  ]")
    lines.append("}")
    tmp = p.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, p)
    return p


def load_manifest(path: str | os.PathLike[str] | None = None) -> list[Candidate]:
    """The benchmark's models, in manifest order.

    Raises:
        FileNotFoundError: no manifest at ``path``.
        CorruptArtifactError: not a manifest, or one of another format version.
    """
    p = Path(path) if path is not None else default_dir() / "manifest.json"
    if p.is_dir():
        p = p / "manifest.json"
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CorruptArtifactError(f"{p} does not parse: {e}", str(p)) from e
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise CorruptArtifactError(f"{p} is not a cross-library manifest (expected format {MANIFEST_FORMAT!r})", str(p))
    if doc.get("format_version") != MANIFEST_VERSION:
        raise CorruptArtifactError(f"{p} has manifest version {doc.get('format_version')!r}, expected "
                                   f"{MANIFEST_VERSION}; regenerate it", str(p))
    return [Candidate(r["library"], r["name"], r["family"], r["fine"], r["spec"], r.get("build", {}))
            for r in doc["models"]]

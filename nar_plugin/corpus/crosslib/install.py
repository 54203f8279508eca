"""Third-party model libraries of the cross-library benchmark, installed outside the venv.

The libraries (pytorchcv, efficientnet-pytorch, ..., torchaudio) pin other torch versions in their metadata
although their model code runs on the project's torch, so they are installed ``--no-deps``
into a cache folder (never into the project's environment, never with a torch wheel) and put on
``sys.path`` / ``PYTHONPATH`` only for the process that builds the benchmark's graphs.

``nar corpus crosslib install`` runs :func:`install` with the pinned versions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import PathDistribution
from pathlib import Path

__all__ = [
    "HELPERS",
    "NOT_USABLE",
    "PINNED",
    "THIRDPARTY_ENV",
    "install",
    "installed_versions",
    "on_path",
    "thirdparty_dir",
]

logger = logging.getLogger(__name__)

#: Model libraries (PyPI name -> pinned version). The benchmark manifest was generated with these.
PINNED: dict[str, str] = {
    "pytorchcv": "0.0.74",
    "efficientnet-pytorch": "0.7.1",
    "pretrainedmodels": "0.7.4",
    "open-clip-torch": "3.3.0",
    "vit-pytorch": "1.26.11",
    "segmentation-models-pytorch": "0.6.0",
    # torchaudio 2.11.1 declares torch>=2.11 and its model code (wav2vec2, HuBERT, WavLM) is pure
    # Python: it imports and builds on the project's torch 2.14.1 (its compiled extension is only
    # loaded by I/O and some functional ops, which the benchmark does not use)
    "torchaudio": "2.11.1",
}
#: Pure-Python packages the libraries import at import time and the project's venv lacks
#: (``regex``, ``timm``, ``huggingface_hub``, ``safetensors``, ``tqdm`` come from the venv).
HELPERS: dict[str, str] = {
    "einops": "0.8.2",   # vit-pytorch, open_clip
    "ftfy": "6.3.1",     # open_clip's tokenizer
    "wcwidth": "0.9.4",  # ftfy
    "munch": "4.0.0",    # pretrainedmodels
}
#: Libraries of the benchmark's wish list that cannot be used, with the reason.
NOT_USABLE: dict[str, str] = {}
#: Environment variable overriding the install folder.
THIRDPARTY_ENV = "NAR_THIRDPARTY_DIR"


def thirdparty_dir() -> Path:
    """``$NAR_THIRDPARTY_DIR`` or ``<user cache>/nar-plugin/thirdparty`` (``~/.cache/...`` on Linux)."""
    env = os.environ.get(THIRDPARTY_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("nar-plugin")) / "thirdparty"


def install(target: str | os.PathLike[str] | None = None, *, python: str | None = None,
            dry_run: bool = False) -> list[str]:
    """``pip install --no-deps --target <target>`` the pinned libraries and helpers.

    Args:
        target: install folder (default :func:`thirdparty_dir`). Must be outside the project's
            virtual environment; nothing there is touched.
        python: interpreter whose pip runs (default: the current one).
        dry_run: only return the command.

    Returns:
        The pip command line that was (or would be) run.

    Raises:
        subprocess.CalledProcessError: pip failed.
    """
    dest = Path(target).expanduser() if target is not None else thirdparty_dir()
    reqs = [f"{n}=={v}" for n, v in {**PINNED, **HELPERS}.items()]
    cmd = [python or sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--target", str(dest), *reqs]
    if not dry_run:
        dest.mkdir(parents=True, exist_ok=True)
        logger.info("installing %d packages into %s", len(reqs), dest)
        subprocess.run(cmd, check=True)
    return cmd


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def installed_versions(target: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Versions found in ``target`` (``*.dist-info``), keyed by normalised PyPI name."""
    dest = Path(target).expanduser() if target is not None else thirdparty_dir()
    out: dict[str, str] = {}
    for info in sorted(dest.glob("*.dist-info")):
        meta = PathDistribution(info).metadata
        if meta and meta.get("Name"):
            out[_norm(meta["Name"])] = str(meta.get("Version"))
    return out


def check_versions(found: Mapping[str, str]) -> dict[str, tuple[str | None, str]]:
    """Pinned libraries whose installed version differs: ``{name: (found, pinned)}``."""
    return {n: (found.get(_norm(n)), v) for n, v in PINNED.items() if found.get(_norm(n)) != v}


@contextlib.contextmanager
def on_path(target: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """Put ``target`` on ``sys.path`` and ``PYTHONPATH`` (for spawned workers) inside the block.

    Raises:
        FileNotFoundError: nothing is installed there (run ``nar corpus crosslib install``).
    """
    dest = Path(target).expanduser() if target is not None else thirdparty_dir()
    if not dest.is_dir() or not any(dest.glob("*.dist-info")):
        raise FileNotFoundError(f"no third-party model libraries in {dest}; run "
                                "`nar corpus crosslib install` first")
    mismatch = check_versions(installed_versions(dest))
    if mismatch:
        logger.warning("third-party libraries differ from the pinned versions (found, pinned): %s", mismatch)
    old_env = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(dest))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(dest), *([old_env] if old_env else [])])
    try:
        yield dest
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(dest))
        if old_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_env

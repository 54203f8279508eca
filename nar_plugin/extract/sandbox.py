"""Extract the graph of an untrusted artifact in a child process with a time and memory limit.

Webhook receivers read what anyone with write access logged or pushed. The budgets of
:mod:`nar_plugin.extract.limits` bound what a reader does on purpose; a child process bounds what
it may do by accident (a parser's C code, transformers building a model, torch.export): the child
gets an address-space limit (``setrlimit(RLIMIT_AS)``, taken *after* it imported torch, whose
shared libraries alone map ~3.5 GB) and a CPU-time limit, the parent kills its whole process group
at the wall-time limit, and only the graph (JSON) or the error (type name + message) comes back.

The child never unpickles (``NAR_TRUST_PICKLE`` is forced off), never reaches a hub
(``HF_HUB_OFFLINE``) and never runs a config's custom code (``trust_remote_code=False``).

Run by hand::

    python -m nar_plugin.extract.sandbox PATH --out result.json --memory-mb 4096 --timeout-s 300
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nar_plugin import errors
from nar_plugin.config import NAR_EXTRACT_TIMEOUT, NAR_SANDBOX_MEMORY_MB
from nar_plugin.errors import (
    ConfigError,
    ExtractionTimeoutError,
    GraphExtractionError,
    NarError,
    SandboxMemoryError,
    UnsupportedModelError,
)
from nar_plugin.extract.kinds import directory_kind
from nar_plugin.extract.limits import bounded, check_node_count, confine, read_json
from nar_plugin.graph import ArchGraph

logger = logging.getLogger(__name__)

__all__ = ["extract_graph_sandboxed", "extract_untrusted", "untrusted_kind"]

#: Environment of the child: no pickles, no network, no autologging, one thread per pool.
_CHILD_ENV = {
    "NAR_TRUST_PICKLE": "false",
    "NAR_AUTOLOG": "false",
    "NAR_HF_AUTOLOG": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}

#: What each kind imports before the memory limit is taken (so imports do not count against it).
_IMPORTS = {
    "onnx": ("onnx",),
    "hf-config": ("torch", "torch.export", "transformers", "nar_plugin.extract.torch_module"),
    "timm-config": ("torch", "torch.fx", "timm", "nar_plugin.extract.torch_module"),
}


# ------------------------------------------------------------------ what a path holds
def _json_kind(data: Any, path: Path) -> str:
    if isinstance(data, dict):
        if data.get("format") == "nar-archgraph":
            return "archgraph"
        if "model_type" in data:
            return "hf-config"
        if "architecture" in data:
            return "timm-config"
    raise UnsupportedModelError(f"{path} is neither a transformers config (model_type), a timm config "
                                "(architecture) nor an ArchGraph")


def untrusted_kind(path: str | Path) -> str:
    """``mlflow``, ``pt2``, ``onnx``, ``hf-config``, ``timm-config`` or ``archgraph``: what a stored
    artifact is, decided from names and (for JSON) a bounded read; nothing is built.

    Raises:
        UnsupportedModelError: none of those, or the path does not exist.
        CorruptArtifactError, BudgetExceededError: a JSON file that does not parse or is too big.
    """
    p = Path(path)
    if p.is_dir():
        kind = directory_kind(p)
        return untrusted_kind(p / "config.json") if kind == "config" else kind
    if not p.is_file():
        raise UnsupportedModelError(f"{p} is not a file or folder")
    if p.name == "MLmodel":
        return "mlflow"
    suffix = p.suffix.lower()
    if suffix in (".pt2", ".zip"):
        return "pt2"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".json":
        return _json_kind(read_json(p), p)
    raise UnsupportedModelError(f"cannot read {p.name}: expected an MLmodel folder, a .pt2 archive, an .onnx "
                                "file or a config.json")


def _onnx_file(p: Path) -> Path:
    return p if p.is_file() else confine(sorted(p.glob("*.onnx"))[0], p, "ONNX file")


def extract_untrusted(path: str | Path, kind: str | None = None) -> ArchGraph:
    """Extract the graph of a stored artifact someone else wrote, in this process, under the
    budgets for untrusted input (sizes, depth, config sizes, nodes, wall time).

    Only stored kinds are read (no timm names or model types resolved from strings, no pickles).
    :func:`extract_graph_sandboxed` runs this in a child process.

    Raises:
        NarError: the typed error of whichever budget or check failed.
    """
    from nar_plugin.extract import TORCH_LOCK

    p = Path(path)
    kind = kind or untrusted_kind(p)
    meta = {"source": str(p)}
    with bounded():
        if kind == "mlflow":
            from nar_plugin.extract.mlflow_model import graph_from_mlflow_dir

            with TORCH_LOCK:  # a config-only MLflow model is built and traced
                return graph_from_mlflow_dir(p)
        if kind == "pt2":
            from nar_plugin.extract.aten import graph_from_pt2

            return graph_from_pt2(p, {"source_kind": "pt2"})
        if kind == "onnx":
            from nar_plugin.extract.onnx import graph_from_onnx

            return graph_from_onnx(_onnx_file(p), {"source_kind": "onnx"})
        config_path = p / "config.json" if p.is_dir() else p
        data = read_json(config_path)
        if kind == "archgraph":
            ops = data.get("ops") if isinstance(data, dict) else None
            check_node_count(len(ops) if isinstance(ops, list) else 0)
            return ArchGraph.from_dict(data)
        if kind == "hf-config":
            from nar_plugin.extract.transformers import graph_from_hf_config

            with TORCH_LOCK:
                return graph_from_hf_config(data, meta)
        if kind == "timm-config":
            from nar_plugin.extract.timm_models import graph_from_timm_config

            with TORCH_LOCK:
                return graph_from_timm_config(data, meta)
    raise UnsupportedModelError(f"no reader for untrusted artifacts of kind {kind!r}")


def _precheck(p: Path, kind: str) -> str:
    """The cheap checks of a config, before torch/transformers are imported (an 800-layer config
    is refused in milliseconds); returns the kind whose imports the extraction needs."""
    if kind == "mlflow":
        d = p.parent if p.name == "MLmodel" else p
        if any(d.glob("data/*.pt2")) or any(d.glob("*.pt2")):
            return "pt2"
        if any(d.glob("*.onnx")):
            return "onnx"
        configs = sorted(d.rglob("config.json"))
        return _precheck(confine(configs[0], d, "config.json"), "hf-config") if configs else "pt2"
    if kind in ("hf-config", "timm-config"):
        data = read_json(p / "config.json" if p.is_dir() else p)
        if isinstance(data, dict) and kind == "hf-config":
            from nar_plugin.extract.limits import check_config_sizes

            check_config_sizes(data, str(p))
        elif isinstance(data, dict):
            from nar_plugin.extract.timm_models import safe_model_args

            safe_model_args(data.get("model_args"), str(p))
    return kind


# ------------------------------------------------------------------ the child
def _vm_size() -> int | None:
    """This process's address-space size in bytes (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _limit_memory(memory_mb: int) -> None:
    """Address space: what the process maps now plus ``memory_mb`` (soft limit; POSIX only)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX: only the wall-time limit applies
        return
    now = _vm_size()
    if now is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = now + memory_mb * (1 << 20)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _unlimit_memory() -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def _limit_cpu(timeout_s: float) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(math.ceil(timeout_s)) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard == resource.RLIM_INFINITY or cpu < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _describe(e: BaseException, memory_mb: int) -> dict[str, Any]:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, NarError) and isinstance(getattr(errors, type(e).__name__, None), type):
        fields = {k: v for k, v in vars(e).items() if not k.startswith("_") and _jsonable(v)}
        return {"ok": False, "type": type(e).__name__, "message": str(e), "fields": fields}
    if isinstance(e, MemoryError) or "can't allocate memory" in text.lower():
        return {"ok": False, "type": "SandboxMemoryError", "fields": {"limit_mb": memory_mb},
                "message": f"extraction ran out of its memory budget of {memory_mb} MB "
                           "(raise NAR_SANDBOX_MEMORY_MB to allow more)"}
    return {"ok": False, "type": "GraphExtractionError", "fields": {},
            "message": f"extraction failed in the sandbox: {type(e).__name__}: {text[:300]}"}


def main(argv: list[str] | None = None) -> int:
    """The child: classify, pre-check, import, limit memory, extract, write the result file."""
    ap = argparse.ArgumentParser(prog="python -m nar_plugin.extract.sandbox")
    ap.add_argument("path")
    ap.add_argument("--out", required=True)
    ap.add_argument("--memory-mb", type=int, required=True)
    ap.add_argument("--timeout-s", type=float, required=True)
    args = ap.parse_args(argv)
    _limit_cpu(args.timeout_s)
    try:
        _limit_memory(args.memory_mb)
        path = Path(args.path)
        kind = untrusted_kind(path)
        needs = _precheck(path, kind)
        if _IMPORTS.get(needs):
            import importlib

            _unlimit_memory()  # imports map shared libraries: they are not the input's doing
            for module in _IMPORTS[needs]:
                importlib.import_module(module)
            _limit_memory(args.memory_mb)
        result: dict[str, Any] = {"ok": True, "graph": extract_untrusted(path, kind).to_dict()}
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent as data
        result = _describe(e, args.memory_mb)
    _unlimit_memory()  # writing our own result is not the input's doing
    tmp = Path(args.out + ".part")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)
    return 0


# ------------------------------------------------------------------ the parent
def _rebuild(result: dict[str, Any]) -> NarError:
    """The child's error as the same nar_plugin.errors type, message and fields."""
    cls = getattr(errors, str(result.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, NarError)):
        cls = GraphExtractionError
    message = str(result.get("message", ""))
    try:  # without running __init__: the types' signatures differ, the message is final
        err = cls.__new__(cls)
    except TypeError:  # MemoryError subclasses have their own allocator
        err = cls(message)
    err.args = (message,)
    for k, v in (result.get("fields") or {}).items():
        if k != "args":
            setattr(err, k, v)
    if isinstance(err, GraphExtractionError) and not hasattr(err, "attempts"):
        err.attempts = {}
    return err


def _positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, found {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, found {value!r}")
    return v


def _child_env(timeout_s: float) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_CHILD_ENV)
    env["NAR_EXTRACT_TIMEOUT"] = repr(timeout_s)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the nar_plugin package
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()
    proc.wait()


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return str(num)


def _stderr_tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - 2000))
            lines = f.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def extract_graph_sandboxed(path: str | Path, *, timeout_s: float | None = None,
                            memory_mb: int | None = None) -> ArchGraph:
    """Extract the graph of an untrusted stored artifact in a child process.

    Args:
        path: an MLflow model folder (or its ``MLmodel``), a ``.pt2`` archive, an ``.onnx`` file
            or a ``config.json`` (transformers or timm), as written by someone else.
        timeout_s: wall-time limit of the whole child, startup included (default
            ``NAR_EXTRACT_TIMEOUT``); the process group is killed when it passes.
        memory_mb: address space the child may add after its imports (default
            ``NAR_SANDBOX_MEMORY_MB``), set with ``setrlimit(RLIMIT_AS)`` in the child.

    Returns:
        The :class:`ArchGraph`, exactly as :func:`extract_untrusted` gives it in-process.

    Raises:
        ExtractionTimeoutError: the child ran past ``timeout_s``.
        SandboxMemoryError: the child ran out of ``memory_mb``.
        NarError: the child's typed error (same type, message and fields), e.g.
            BudgetExceededError, CorruptArtifactError, UnsafePathError, UnsupportedModelError.
        GraphExtractionError: the child failed in another way (crash, signal).
        ConfigError: a bad ``timeout_s`` / ``memory_mb`` or budget variable.

    Example:
        >>> graph = extract_graph_sandboxed(local_dir, timeout_s=60, memory_mb=2048)
    """
    timeout = _positive(timeout_s if timeout_s is not None else NAR_EXTRACT_TIMEOUT.get(),
                        "timeout_s" if timeout_s is not None else NAR_EXTRACT_TIMEOUT.name)
    memory = int(_positive(memory_mb if memory_mb is not None else NAR_SANDBOX_MEMORY_MB.get(),
                           "memory_mb" if memory_mb is not None else NAR_SANDBOX_MEMORY_MB.name))
    p = Path(path)
    if not p.exists():
        raise UnsupportedModelError(f"{p} does not exist (expected an artifact to extract a graph from)")
    with tempfile.TemporaryDirectory(prefix="nar-sandbox-") as tmp:
        out, log = Path(tmp, "result.json"), Path(tmp, "stderr.log")
        cmd = [sys.executable, "-m", "nar_plugin.extract.sandbox", str(p.resolve()), "--out", str(out),
               "--memory-mb", str(memory), "--timeout-s", repr(timeout)]
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=tmp,
                                    env=_child_env(timeout), start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise ExtractionTimeoutError(
                    f"sandboxed extraction of {p} ran past its limit of {timeout:g} s and was killed "
                    "(raise NAR_EXTRACT_TIMEOUT or pass timeout_s to allow more)", timeout) from None
            except BaseException:
                _kill(proc)
                raise
        if out.is_file():
            try:
                result = json.loads(out.read_bytes())
            except ValueError as e:
                raise GraphExtractionError(f"sandboxed extraction of {p} wrote an unreadable result: {e}") from e
            if result.get("ok"):
                return ArchGraph.from_dict(result["graph"])
            raise _rebuild(result)
        if rc == -getattr(signal, "SIGXCPU", 24):
            raise ExtractionTimeoutError(f"sandboxed extraction of {p} ran out of CPU time ({timeout:g} s)", timeout)
        if rc == -signal.SIGKILL:
            raise SandboxMemoryError(f"sandboxed extraction of {p} was killed (SIGKILL), most likely out of "
                                     f"memory (limit {memory} MB)", memory)
        what = f"signal {_signal_name(-rc)}" if rc < 0 else f"exit code {rc}"
        raise GraphExtractionError(f"sandboxed extraction of {p} died with {what} and no result: "
                                   f"{_stderr_tail(log) or 'no output'}", {"sandbox": what})


if __name__ == "__main__":  # pragma: no cover - the child process
    sys.exit(main())

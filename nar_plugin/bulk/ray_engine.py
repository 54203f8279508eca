"""The Ray engine: a Ray Data pipeline over the bulk stages.

::

    from_items(sources) -> map_batches(extract_source)         CPU tasks, ``workers`` at a time
                        -> map_batches(_Embedder)              one actor per 32 workers, on GPUs if enough
                        -> iter_batches on the driver          -> Writer (one transaction per batch)

Only this module imports Ray, and only inside :func:`run_ray` (``import nar_plugin.bulk`` does
not). Rows travel as pickled :class:`~nar_plugin.bulk.stages.Outcome` bytes: Arrow stores them
as one binary column, whatever the outcome holds (tensors, dicts). ``ray.init()`` starts a
local cluster unless ``RAY_ADDRESS`` names one, so a laptop and a cluster run the same code.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from nar_plugin.bulk.sources import Source
from nar_plugin.bulk.stages import embed_outcomes, extract_source, on_device

__all__ = ["run_ray"]

logger = logging.getLogger(__name__)

#: environment variables handed to workers on a remote cluster (local workers inherit them)
_ENV_PREFIXES = ("NAR_", "HF_", "MLFLOW_", "TRANSFORMERS_")


def _extract_batch(batch: dict[str, np.ndarray], hf_cache_dir: Any = None, token: Any = None) -> dict[str, Any]:
    out = []
    for src, prev in zip(batch["source"], batch["previous"]):
        outcome = extract_source(Source.from_dict(json.loads(src)), prev or None,
                                 hf_cache_dir=hf_cache_dir, token=token)
        out.append(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL))
    return {"blob": np.array(out, dtype=object)}


class _Embedder:
    """The embed stage: loads the encoder once per actor and embeds whole batches. It runs on a
    GPU when Ray gave the actor one (Ray hides the GPUs of actors that asked for none)."""

    def __init__(self) -> None:
        import torch

        from nar_plugin.model.inference import load_encoder

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = on_device(load_encoder(), self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        outcomes = [pickle.loads(b) for b in batch["blob"]]
        embed_outcomes(outcomes, self.encoder, self.device)
        return {"blob": np.array([pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL) for o in outcomes], dtype=object)}


def _init(ray: Any, workers: int | None, init_kwargs: dict[str, Any]) -> bool:
    """Connect to ``RAY_ADDRESS`` or start a local cluster; returns True when started here."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if os.environ.get("RAY_ADDRESS"):
        env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) and k != "RAY_ADDRESS"}
        kwargs["runtime_env"] = {"env_vars": env}
    else:
        # one CPU per extraction worker, plus a share for the embed actor and the driver
        kwargs["num_cpus"] = (workers or os.cpu_count() or 1) + 1
    kwargs.update(init_kwargs)
    ray.init(**kwargs)
    return True


#: extraction workers one CPU embed actor keeps up with: ``embed_many`` (motif sampling + forward)
#: runs ~50 graphs/s on one thread (docs/benchmarks.md, "Encoder"), an extraction takes ~0.3-2 s
_WORKERS_PER_CPU_ACTOR = 32


def _plan(ray: Any, workers: int | None, device: str) -> tuple[int, str, float, int]:
    """(extraction workers, embed device, GPUs per embed actor, embed actors) for this cluster.

    One embed actor per 32 workers. They run on GPUs when the cluster has a GPU for each of them;
    otherwise on CPUs: an actor's motif sampling (the CPU half of ``embed_many``) bounds it
    either way, so more CPU actors beat fewer GPU ones.
    """
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    n = workers or max(1, cpus - 1)
    gpus = int(resources.get("GPU", 0)) if device in ("auto", "cuda") else 0
    wanted = -(-n // _WORKERS_PER_CPU_ACTOR)
    if gpus >= wanted:
        return n, "cuda", 1.0, wanted
    return n, "cpu", 0.0, wanted


def _blocks(n: int, workers: int) -> int:
    """Blocks of the source list: small enough to balance the workers, few enough that Ray's
    per-block cost stays small (about 20 sources a block on large runs)."""
    return max(1, min(n, max(workers * 8, n // 20)))


def run_ray(todo: list[tuple[Source, str | None]], writer: Any, *, workers: int | None = None,
            batch_size: int = 64, device: str = "auto", hf_cache_dir: Any = None, token: Any = None,
            init_kwargs: dict[str, Any] | None = None, shutdown: bool = True) -> dict[str, Any]:
    """Run the stages of ``todo`` on Ray and hand every outcome to ``writer``.

    Args:
        todo: ``(source, previous revision or None)`` pairs.
        writer: a :class:`~nar_plugin.bulk.writer.Writer`.
        workers: extraction tasks at a time (default: the cluster's CPUs less one).
        batch_size: sources per embed batch and per write.
        device: ``auto`` / ``cuda``: the embed actors on GPUs when the cluster has one for each
            (:func:`_plan`); ``cpu``: never.
        init_kwargs: extra ``ray.init`` arguments (e.g. ``num_cpus``).
        shutdown: shut Ray down afterwards when this call started it.

    Returns:
        ``{"workers": n, "device": ..., "embed_actors": ..., "init_s": seconds to start or join the cluster,
        "first_batch_s": seconds from the call to the first batch at the driver}``.

    Raises:
        MissingDependencyError: Ray is not installed (``pip install 'nar-plugin[ray]'``).
    """
    from nar_plugin.utils.deps import require

    t0 = time.perf_counter()
    ray = require("ray", "ray")
    require("ray.data", "ray")
    started = _init(ray, workers, dict(init_kwargs or {}))
    init_s = time.perf_counter() - t0
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # Ray Data's per-run notices; our progress and report say it all
    try:
        n, dev, gpus, actors = _plan(ray, workers, device)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the writer's progress is the run's
        ctx.print_on_execution_start = False
        rows = [{"source": json.dumps(s.to_dict()), "previous": prev or ""} for s, prev in todo]
        ds = ray.data.from_items(rows, override_num_blocks=_blocks(len(rows), n))
        ds = ds.map_batches(_extract_batch, batch_size=1, batch_format="numpy", num_cpus=1,
                            compute=ray.data.TaskPoolStrategy(size=n),
                            fn_kwargs={"hf_cache_dir": str(hf_cache_dir) if hf_cache_dir else None, "token": token})
        ds = ds.map_batches(_Embedder, batch_size=batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=0 if gpus else 0.5,
                            num_gpus=gpus)
        first: float | None = None
        for batch in _batches(ds, batch_size):
            if first is None:
                first = time.perf_counter() - t0
            writer.add(pickle.loads(b) for b in batch["blob"])
        writer.flush()
        return {"workers": n, "device": dev, "embed_actors": actors, "init_s": init_s,
                "first_batch_s": first or 0.0}
    finally:
        data_log.setLevel(level)
        if started and shutdown:
            ray.shutdown()


def _batches(ds: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    yield from ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1)

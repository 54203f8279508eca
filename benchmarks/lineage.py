"""Model-tree recovery from weight fingerprints, and what a fingerprint costs.

1. **Tree.** A generated model tree: ``--roots`` roots (CNNs and transformers, two independently
   initialised roots per architecture, so same-architecture strangers exist), each "pre-trained"
   with SGD on its own synthetic task; ``--children`` children per root and ``--grandchildren``
   per child, each fine-tuned from its parent on another task, half of them fully (SGD), half
   LoRA-style (rank-4 updates to a few weight matrices, trained, then merged: the other weights
   stay byte-identical; buffers such as BatchNorm statistics are the trained model's, as with
   PEFT's ``merge_and_unload``). :func:`nar_plugin.lineage.compare.reconstruct_tree` sees only the
   fingerprints. Printed: edge precision / recall (undirected), direction accuracy (of the true
   edges found), and the accuracy of each direction signal alone (step counters, kurtosis,
   weight norm); ``--no-counters`` hides the step counters from the comparison (kurtosis only),
   ``--frozen-lora-buffers`` gives every LoRA child its parent's BatchNorm buffers.
2. **Cost.** ResNet-50: ``mlflow.pytorch.log_model`` (local SQLite tracking store, nar-plugin's
   hooks off) vs fingerprinting what it saved (the pt2 archive in the model folder), and
   fingerprinting the in-memory module.
3. **Memory.** A 1 GiB safetensors file (written block by block), fingerprinted in a child process:
   peak RSS above the same process after its imports.

Usage: ``python benchmarks/lineage.py [--quick] [--skip-cost] [--skip-memory]``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nar_plugin.lineage import compare, fingerprint_module, reconstruct_tree

IMG = 16
SEQ, VOCAB = 16, 64


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SmallTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 64)
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x)).mean(1))


def _batch(kind: str, task: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    tg = torch.Generator().manual_seed(1000 + task)  # the task's fixed labelling rule
    if kind == "cnn":
        w = torch.randn(3 * IMG * IMG, 10, generator=tg)
        x = torch.randn(16, 3, IMG, IMG, generator=g)
        return x, (x.flatten(1) @ w).argmax(1)
    table = torch.randint(0, 10, (VOCAB,), generator=tg)
    x = torch.randint(0, VOCAB, (16, SEQ), generator=g)
    return x, table[x].mode(1).values


def train(model: nn.Module, kind: str, task: int, steps: int, lr: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        x, y = _batch(kind, task, g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def lora_finetune(parent: nn.Module, kind: str, task: int, steps: int, seed: int, rank: int = 4) -> nn.Module:
    """Freeze everything, learn ``W + B @ A`` on a few weight matrices, merge: LoRA-style."""
    child = copy.deepcopy(parent)
    for p in child.parameters():
        p.requires_grad_(False)
    targets = [m for name, m in child.named_modules()
               if isinstance(m, nn.Linear) and ("linear1" in name or name == "head")] if kind == "tf" else \
              [m for m in child.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-2:]
    g = torch.Generator().manual_seed(seed + 17)
    adapters = []
    for m in targets:
        out_f, in_f = m.weight.shape[0], m.weight[0].numel()
        a = nn.Parameter(torch.randn(rank, in_f, generator=g) / in_f ** 0.5)  # LoRA's usual init: A random, B zero
        b = nn.Parameter(torch.zeros(out_f, rank))
        adapters.append((m, a, b))
        m.register_parameter("lora_a", a)
        m.register_parameter("lora_b", b)
        w0 = m.weight.detach().clone()

        def hook(mod: nn.Module, args: tuple, w0: torch.Tensor = w0) -> None:
            mod.weight = (w0 + (mod.lora_b @ mod.lora_a).reshape(w0.shape))  # type: ignore[assignment]

        del m.weight
        m.weight = w0.clone()  # type: ignore[assignment]
        m.register_forward_pre_hook(hook)
    train(child, kind, task, steps, lr=0.05, seed=seed)
    merged = copy.deepcopy(parent)
    with torch.no_grad():
        names = {id(m): n for n, m in child.named_modules()}
        for m, a, b in adapters:
            target = merged.get_submodule(names[id(m)])
            target.weight += (b @ a).reshape(target.weight.shape)
        for name, buf in child.named_buffers():  # what PEFT's merge_and_unload returns: the trained
            merged.get_buffer(name).copy_(buf)    # model, whose BatchNorm statistics moved in train mode
    return merged


def build_tree(roots: int, children: int, grandchildren: int, steps: int) -> tuple[dict[str, nn.Module], list[tuple[str, str]]]:
    models: dict[str, nn.Module] = {}
    edges: list[tuple[str, str]] = []
    task = 0
    for r in range(roots):
        kind = "cnn" if r % 2 == 0 else "tf"
        torch.manual_seed(100 + r)
        root = SmallCNN() if kind == "cnn" else SmallTransformer()
        task += 1
        rname = f"{kind}{r}"
        models[rname] = train(root, kind, task, steps * 2, lr=0.05, seed=r)
        frontier = [(rname, children)]
        for depth in range(2):
            nxt = []
            for parent, n in frontier:
                for c in range(n):
                    task += 1
                    cname = f"{parent}.{c}"
                    lora = (c + depth) % 2 == 1
                    seed = zlib.crc32(cname.encode()) % 10_000  # str hash() changes per process
                    child = (lora_finetune(models[parent], kind, task, steps, seed) if lora else
                             train(copy.deepcopy(models[parent]), kind, task, steps,
                                   lr=0.05 if kind == "cnn" else 0.01, seed=seed))
                    models[cname + ("~lora" if lora else "")] = child
                    edges.append((parent, cname + ("~lora" if lora else "")))
                    nxt.append((cname + ("~lora" if lora else ""), grandchildren))
            frontier = nxt if depth == 0 else []
    return models, edges


def _fingerprints(args: argparse.Namespace) -> tuple[dict[str, Any], list[tuple[str, str]], float]:
    """The tree's fingerprints and true edges (from ``--cache`` when it holds this configuration)."""
    from nar_plugin.lineage import WeightFingerprint

    config = [args.roots, args.children, args.grandchildren, args.steps, 5]  # 5: the version of the generator
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        doc = json.loads(cache.read_text())
        if doc["config"] == config:
            fps = {k: WeightFingerprint.from_bytes(base64.b64decode(v)) for k, v in doc["fingerprints"].items()}
            return fps, [tuple(e) for e in doc["edges"]], float(doc["train_s"])
    t0 = time.perf_counter()
    models, truth = build_tree(args.roots, args.children, args.grandchildren, args.steps)
    t_train = time.perf_counter() - t0
    fps = {k: fingerprint_module(m) for k, m in models.items()}
    if cache is not None:
        cache.write_text(json.dumps({"config": config, "edges": truth, "train_s": t_train, "fingerprints": {
            k: base64.b64encode(fp.to_bytes()).decode() for k, fp in fps.items()}}))
    return fps, truth, t_train


def _without_counters(fp: Any) -> Any:
    """``fp`` without its step counters: the direction then rests on kurtosis alone."""
    from nar_plugin.lineage import WeightFingerprint
    from nar_plugin.lineage.compare import COUNTER_NAMES

    kept = tuple(t for t in fp.tensors if t.name.rsplit(".", 1)[-1] not in COUNTER_NAMES)
    return WeightFingerprint(kept, fp.weights_hash, fp.source)


def _parent_buffers(fps: dict[str, Any], truth: list[tuple[str, str]]) -> dict[str, Any]:
    """Each LoRA-style child with its parent's BatchNorm buffers (statistics and counters), as if
    BatchNorm had been frozen while the adapters trained (generator version 3's merge)."""
    from nar_plugin.lineage import WeightFingerprint
    from nar_plugin.lineage.fingerprint import weights_hash_of

    parent = {c: p for p, c in truth}
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    out: dict[str, Any] = {}

    def fixed(key: str) -> Any:
        if key not in out:
            fp = fps[key]
            if key.endswith("~lora"):
                par = fixed(parent[key])
                tensors = tuple(par.get(t.name) if t.name.rsplit(".", 1)[-1] in buffers else t for t in fp.tensors)
                fp = WeightFingerprint(tensors, weights_hash_of(tensors), fp.source)
            out[key] = fp
        return out[key]

    return {k: fixed(k) for k in fps}


def tree_metrics(args: argparse.Namespace) -> dict[str, float]:
    fps, truth, t_train = _fingerprints(args)
    if args.frozen_lora_buffers:
        fps = _parent_buffers(fps, truth)
    if args.no_counters:
        fps = {k: _without_counters(fp) for k, fp in fps.items()}
    t1 = time.perf_counter()
    found = reconstruct_tree(fps)
    t_tree = time.perf_counter() - t1
    alone = []  # the weights alone: ties broken by 5 random key orders, never the generation order
    for seed in range(5):
        shuffled = list(fps)
        np.random.default_rng(seed).shuffle(shuffled)
        edges = reconstruct_tree({k: fps[k] for k in shuffled})
        hits = [e for e in edges if frozenset((e.parent, e.child)) in {frozenset(t) for t in truth}]
        alone.append(sum((e.parent, e.child) in set(truth) for e in hits) / max(len(hits), 1))
    ordered = reconstruct_tree(fps, order={k: i for i, k in enumerate(fps)})  # + registration order for ties
    ordered_ok = sum(1 for e in ordered if (e.parent, e.child) in set(truth))
    true_set = {frozenset(e) for e in truth}
    found_set = {frozenset((e.parent, e.child)) for e in found}
    hit = true_set & found_set
    signals = {"kurtosis": 0, "norm": 0, "decisive": 0, "decisive_ok": 0, "counters": 0, "counters_ok": 0}
    for parent, child in truth:
        c = compare(fps[parent], fps[child])
        signals["kurtosis"] += c.kurtosis_delta > 0
        signals["norm"] += c.norm_delta > 0
        signals["decisive"] += c.direction is not None
        signals["decisive_ok"] += c.direction == "a->b"
        signals["counters"] += c.evidence == "counters"
        signals["counters_ok"] += c.evidence == "counters" and c.direction == "a->b"
    strangers = [(a, b) for a in fps for b in fps if a < b and a.split(".")[0] != b.split(".")[0]
                 and a[:2] == b[:2]]
    sims = [compare(fps[a], fps[b]).similarity or 0.0 for a, b in strangers]
    kin = [compare(fps[p], fps[c]).similarity or 0.0 for p, c in truth]
    out = {
        "models": len(fps), "roots": args.roots, "descendants": len(truth),
        "edges_found": len(found), "edge_precision": len(hit) / max(len(found_set), 1),
        "edge_recall": len(hit) / max(len(true_set), 1),
        "direction_accuracy_weights_alone_mean": float(np.mean(alone)),
        "direction_accuracy_weights_alone_min": float(min(alone)),
        "direction_accuracy_with_order": ordered_ok / max(len(hit), 1),
        "direction_by_kurtosis": signals["kurtosis"] / len(truth), "direction_by_norm": signals["norm"] / len(truth),
        "pairwise_decisive_share": signals["decisive"] / len(truth),
        "pairwise_decisive_accuracy": signals["decisive_ok"] / max(signals["decisive"], 1),
        "pairwise_counter_share": signals["counters"] / len(truth),
        "pairwise_counter_accuracy": signals["counters_ok"] / max(signals["counters"], 1),
        "parent_child_similarity_min": float(min(kin)), "stranger_similarity_max": float(max(sims)) if sims else 0.0,
        "train_s": t_train, "tree_s": t_tree,
    }
    return out


def cost(args: argparse.Namespace) -> dict[str, float]:
    import mlflow
    import torchvision

    from nar_plugin.integrations.mlflow.hooks import autolog
    from nar_plugin.lineage.readers import fingerprint_mlflow_dir

    autolog(disable=True, silent=True)  # log_model alone, without nar-plugin's own indexing
    model = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.create_experiment("bench", artifact_location=Path(tmp, "artifacts").as_uri())  # not ./mlruns
        mlflow.set_experiment("bench")
        times = []
        for _ in range(args.repeats):
            with mlflow.start_run():
                t0 = time.perf_counter()
                mlflow.pytorch.log_model(model, name="m", input_example=x.numpy(), pip_requirements=["torch"])
                times.append(time.perf_counter() - t0)
        saved = Path(tmp) / "saved"
        mlflow.pytorch.save_model(model, str(saved), input_example=x.numpy(), pip_requirements=["torch"])
        fp_dir = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fp = fingerprint_mlflow_dir(saved)
            fp_dir.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fpm = fingerprint_module(model)
        t_mod = time.perf_counter() - t0
    assert fp is not None and fp.weights_hash == fpm.weights_hash, "pt2 and module fingerprints differ"
    return {"log_model_s": float(np.median(times)), "fingerprint_saved_s": float(np.median(fp_dir)),
            "fingerprint_module_s": t_mod, "ratio": float(np.median(fp_dir) / np.median(times)),
            "tensors": len(fp), "params_mb": fp.numel * 4 / 2**20, "stored_kb": len(fp.to_bytes()) / 1024}


_CHILD = """
import resource, sys, time, tracemalloc
from nar_plugin.lineage.readers import fingerprint_file
import numpy  # noqa
fingerprint_file(sys.argv[2])  # warm-up on a small file: tables and caches exist before measuring
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter()
fp = fingerprint_file(sys.argv[1])
secs = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1]
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, secs, len(fp), traced)
"""


def memory(args: argparse.Namespace) -> dict[str, float]:
    n_tensors, per = 16, (1 << 30) // 16 // 4  # 16 float32 tensors, 1 GiB in all
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        header, off = {}, 0
        for i in range(n_tensors):
            header[f"layer{i}.weight"] = {"dtype": "F32", "shape": [per // 1024, 1024], "data_offsets": [off, off + per * 4]}
            off += per * 4
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)
        rng = np.random.default_rng(0)
        with path.open("wb") as fh:
            fh.write(len(head).to_bytes(8, "little") + head)
            for _ in range(n_tensors):
                for _ in range(per // (1 << 20)):
                    fh.write(rng.standard_normal(1 << 20, dtype=np.float32).tobytes())
        small = Path(tmp) / "small.safetensors"
        head = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
        small.write_bytes(len(head).to_bytes(8, "little") + head + bytes(16))
        res = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(small)], capture_output=True, text=True,
                             check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        base, peak, secs, count, traced = res.stdout.split()
    return {"file_gib": 1.0, "peak_rss_extra_mb": (int(peak) - int(base)) / 1024,
            "peak_traced_mb": int(traced) / 2**20, "seconds": float(secs), "tensors": int(count)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roots", type=int, default=4)
    ap.add_argument("--children", type=int, default=3)
    ap.add_argument("--grandchildren", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150, help="SGD steps per fine-tune (roots: twice that)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default="", help="JSON file keeping the tree's fingerprints between runs")
    ap.add_argument("--quick", action="store_true", help="a smaller tree, no cost or memory runs")
    ap.add_argument("--no-counters", action="store_true", help="hide BatchNorm step counters (kurtosis only)")
    ap.add_argument("--frozen-lora-buffers", action="store_true",
                    help="LoRA children keep their parent's BatchNorm buffers (as if BatchNorm were frozen)")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        args.roots, args.children, args.grandchildren, args.steps = 2, 2, 1, 100
    tree = tree_metrics(args)
    print("tree:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in tree.items()}))
    if not (args.quick or args.skip_cost):
        c = cost(args)
        print("cost:", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in c.items()}))
    if not (args.quick or args.skip_memory):
        m = memory(args)
        print("memory:", json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}))


if __name__ == "__main__":
    main()

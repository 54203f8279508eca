"""``nar demo``: the whole product on embedded defaults, in a few minutes.

1. An embedded MLflow (SQLite store in ``<dir>/mlflow.db``; or a local ``mlflow server`` with
   ``--server``), with nar-plugin activated the zero-code way (the entry point).
2. 30+ real models logged with plain ``mlflow.<flavor>.log_model`` calls: timm and torchvision
   architectures and hand-written modules (pt2 format), transformers models (the transformers
   flavor, tiny random weights and a local tokenizer: nothing is downloaded).
3. A few registered: resnet18, a retrain of it as version 2 (normal: ``nar.relation_to_previous``),
   an exact copy under another name (a duplicate: same weights) and a fine-tune of version 1
   (``nar.parent``), read from the weights.
4. ``find_similar`` for a few runs, with relations and explanations; the registry dedup report;
   ``nar-map.html``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DemoModel", "demo_environment", "demo_models", "run_demo"]


@dataclass(frozen=True)
class DemoModel:
    """One model the demo logs: a name, its family (for the reader), and how to build it."""

    name: str
    family: str
    flavor: str  # "pytorch" or "transformers"
    build: Callable[[], Any]
    input_size: int = 224


def _timm(name: str, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        import timm

        return timm.create_model(name, **kw)
    return build


def _tv(name: str) -> Callable[[], Any]:
    def build() -> Any:
        import torchvision

        return getattr(torchvision.models, name)()
    return build


def _hand_mlp() -> Any:
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def _hand_cnn() -> Any:
    from torch import nn

    def block(i: int, o: int) -> Any:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(128, 10))


def _hand_vit() -> Any:
    """A ViT written by hand: functional attention, no library layers for it."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, d: int, heads: int) -> None:
            super().__init__()
            self.h, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, d = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-2, -1)) * (d // self.h) ** -0.5
            return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))

    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.n1, self.attn, self.n2 = nn.LayerNorm(d), Attention(d, 3), nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.n1(x))
            return x + self.mlp(self.n2(x))

    class HandViT(nn.Module):
        def __init__(self, d: int = 192, depth: int = 6) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, d, 16, 16)
            self.cls = nn.Parameter(torch.zeros(1, 1, d))
            self.pos = nn.Parameter(torch.zeros(1, 197, d))
            self.blocks = nn.Sequential(*[Block(d) for _ in range(depth)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(self.norm(self.blocks(x))[:, 0])

    return HandViT()


def _bert(layers: int, hidden: int = 64) -> Callable[[], Any]:
    def build() -> Any:
        import transformers as tf

        return tf.BertModel(tf.BertConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=2, intermediate_size=hidden * 4))
    return build


def _gpt2(layers: int) -> Callable[[], Any]:
    def build() -> Any:
        import transformers as tf

        return tf.GPT2Model(tf.GPT2Config(vocab_size=64, n_embd=64, n_layer=layers, n_head=2, n_positions=64))
    return build


def demo_models() -> list[DemoModel]:
    """The models the demo logs (32): several members per family, so neighbours mean something."""
    m: list[DemoModel] = []
    for n in ("resnet18", "resnet26", "resnet34", "resnet50", "resnet101"):
        m.append(DemoModel(n, "resnet", "pytorch", _timm(n), 64))
    for n in ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2"):
        m.append(DemoModel(n, "efficientnet", "pytorch", _timm(n), 64))
    for n in ("mobilenetv3_small_100", "mobilenetv3_large_100"):
        m.append(DemoModel(n, "mobilenetv3", "pytorch", _timm(n), 64))
    for n in ("vit_tiny_patch16_224", "vit_small_patch16_224", "deit_tiny_patch16_224"):
        m.append(DemoModel(n, "vision_transformer", "pytorch", _timm(n), 224))
    for n in ("convnext_atto", "convnext_femto", "convnext_pico"):
        m.append(DemoModel(n, "convnext", "pytorch", _timm(n), 64))
    for n in ("regnetx_002", "regnetx_004", "regnety_002"):
        m.append(DemoModel(n, "regnet", "pytorch", _timm(n), 64))
    for n in ("resnet18", "mobilenet_v2", "squeezenet1_0", "vgg11"):
        fam = {"resnet18": "resnet", "mobilenet_v2": "mobilenetv2", "squeezenet1_0": "squeezenet", "vgg11": "vgg"}[n]
        m.append(DemoModel(f"torchvision-{n}", fam, "pytorch", _tv(n), 64))
    m.append(DemoModel("hand-mlp", "mlp", "pytorch", _hand_mlp, 32))
    m.append(DemoModel("hand-cnn", "vgg", "pytorch", _hand_cnn, 32))
    m.append(DemoModel("hand-vit", "vision_transformer", "pytorch", _hand_vit, 224))
    for layers in (2, 4):
        m.append(DemoModel(f"bert-{layers}l", "bert", "transformers", _bert(layers)))
    for layers in (2, 4):
        m.append(DemoModel(f"gpt2-{layers}l", "gpt2", "transformers", _gpt2(layers)))
    return m


def _tokenizer() -> Any:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _log(mlflow: Any, dm: DemoModel) -> Any:
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = dm.build().eval()
    tags = {"family": dm.family}
    if dm.flavor == "transformers":
        return mlflow.transformers.log_model({"model": model, "tokenizer": _tokenizer()}, name=dm.name,
                                             task="feature-extraction", pip_requirements=["transformers"], tags=tags)
    x = torch.randn(1, 3, dm.input_size, dm.input_size)
    return mlflow.pytorch.log_model(model, name=dm.name, input_example=x.numpy(), pip_requirements=["torch"],
                                    tags=tags)


#: loggers the demo quiets: MLflow's and transformers' chatter about model cards, licences and
#: shard writing is not what a newcomer came to read
_QUIET_LOGGERS = ("mlflow", "transformers", "torch._export", "torch.export")


@contextmanager
def demo_environment(nar_home: Path) -> Iterator[None]:
    """The demo's process settings, all restored on exit: ``os.environ`` (``NAR_HOME`` in the
    demo's folder, so your own index is never touched; quieter HF libraries), warning filters,
    the levels of :data:`_QUIET_LOGGERS`, MLflow's tracking URI and active experiment."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from mlflow.tracking import fluent

    env = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    # MLflow has no public "unset": read its globals, so that an unset URI / experiment is
    # restored as unset (MLflow's own _use_tracking_uri does the same)
    uri, experiment = tracking_utils._tracking_uri, fluent._active_experiment_id
    with warnings.catch_warnings():
        try:
            os.environ["NAR_HOME"] = str(nar_home)
            os.environ.setdefault("NAR_DEDUP", "warn")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
            warnings.filterwarnings("ignore", category=FutureWarning)
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
        finally:
            mlflow.set_tracking_uri(uri)  # sets or unsets MLFLOW_TRACKING_URI: env is restored next
            fluent._active_experiment_id = experiment
            for key in set(os.environ) - set(env):
                del os.environ[key]
            os.environ.update({k: v for k, v in env.items() if os.environ.get(k) != v})
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def _log_all(mlflow: Any, models: Sequence[DemoModel], result: dict[str, Any],
             echo: Callable[[str], None]) -> dict[str, tuple[str, str]]:
    """Log every model in a run of its own; returns name -> (run id, model id)."""
    runs: dict[str, tuple[str, str]] = {}
    t0 = time.time()
    for i, dm in enumerate(models, 1):
        t = time.time()
        with mlflow.start_run(run_name=dm.name) as run:
            info = _log(mlflow, dm)
        status = mlflow.MlflowClient().get_logged_model(info.model_id).tags.get("nar.status", "untagged")
        runs[dm.name] = (run.info.run_id, info.model_id)
        result["logged"].append({"name": dm.name, "family": dm.family, "run_id": run.info.run_id,
                                 "model_id": info.model_id, "status": status})
        echo(f"[{i:2d}/{len(models)}] logged {dm.name:<26} {dm.flavor:<12} nar.status={status}  ({time.time() - t:.1f} s)")
    echo(f"logged {len(models)} models in {time.time() - t0:.0f} s")
    return runs


def _seeded_resnet18(seed: int) -> Any:
    import timm
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return timm.create_model("resnet18").eval()


def _fine_tuned(model: Any, steps: int = 10) -> Any:
    """``model`` after a few SGD steps on random 64x64 images (a stand-in for a real fine-tune)."""
    import copy

    import torch

    child = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(child.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(8, 3, 64, 64, generator=g)
        loss = torch.nn.functional.cross_entropy(child(x), torch.randint(0, 1000, (8,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return child.eval()


def _register(mlflow: Any, runs: dict[str, tuple[str, str]], result: dict[str, Any],
              echo: Callable[[str], None]) -> None:
    """Register resnet18, then what a real registry sees: a retrain of it as version 2 (normal), an
    exact copy under another name (a duplicate: same weights) and a fine-tune of version 1 under
    its own name (tagged with its parent)."""
    from nar_plugin.errors import DuplicateModelWarning

    client = mlflow.MlflowClient()
    if "resnet18" in runs:
        mlflow.register_model(f"models:/{runs['resnet18'][1]}", "image-classifier")
        steps = (("retrained (new weights)", "image-classifier", lambda: _seeded_resnet18(1)),
                 ("exact copy, new name", "image-classifier-copy", lambda: _seeded_resnet18(0)),
                 ("fine-tuned from v1", "image-classifier-finetuned", lambda: _fine_tuned(_seeded_resnet18(0))))
        result["registry"] = []
        for what, reg_name, build in steps:
            model = build()  # built here: _log seeds its own builds with 0 (resnet18's weights above)
            with mlflow.start_run(run_name=f"resnet18 {what}"):
                info = _log(mlflow, DemoModel("resnet18", "resnet", "pytorch", lambda m=model: m, 64))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DuplicateModelWarning)
                v = mlflow.register_model(f"models:/{info.model_id}", reg_name)
            tags = {k: t for k, t in client.get_model_version(reg_name, v.version).tags.items()
                    if k in ("nar.duplicate_of", "nar.possible_duplicate_of", "nar.relation", "nar.parent",
                             "nar.relation_to_previous")}
            warned = any(issubclass(w.category, DuplicateModelWarning) for w in caught)
            result["registry"].append({"what": what, "version": f"{reg_name}/{v.version}", "tags": tags,
                                       "warned": warned})
            echo(f"registered {reg_name}/{v.version} (resnet18 {what}): "
                 + (", ".join(f"{k}={t}" for k, t in sorted(tags.items())) or "no nar relation tags")
                 + ("  [warned]" if warned else ""))
            if reg_name == "image-classifier-copy":
                result["planted_duplicate"] = {"version": f"{reg_name}/{v.version}",
                                               "duplicate_of": tags.get("nar.duplicate_of"), "warned": warned}
    for name, reg_name in (("vit_tiny_patch16_224", "vision-transformer"), ("bert-2l", "text-encoder")):
        if name in runs:
            mlflow.register_model(f"models:/{runs[name][1]}", reg_name)


def _neighbours(runs: dict[str, tuple[str, str]], result: dict[str, Any], echo: Callable[[str], None]) -> None:
    """``find_similar`` by run id for a few models, with relations and explanations."""
    from nar_plugin.search.api import find_similar

    for q in ("resnet18", "resnet34", "efficientnet_b0", "hand-vit", "bert-2l", "hand-cnn"):
        if q not in runs:
            continue
        matches = find_similar(runs[q][0], k=3)
        result["similar"][q] = [m.to_dict() for m in matches]
        echo(f"\nfind_similar(run of {q}):")
        for m in matches:
            meta = m.metadata
            echo(f"  {m.score:.3f}  {m.relation:<17} {meta.get('model_name') or m.key:<26} "
                 f"family={(meta.get('tags') or {}).get('family', '?'):<18} {m.why()}")


def _reports(uri: str, out_map: str | Path, result: dict[str, Any], echo: Callable[[str], None]) -> None:
    """The registry dedup report and the HTML map."""
    from nar_plugin.apps.map import write_map
    from nar_plugin.integrations.mlflow.registry import dedup_report

    clusters = dedup_report(tracking_uri=uri)
    result["dedup"] = [{"relation": c.relation, "members": c.members, "edges": c.edges} for c in clusters]
    echo("\nregistry dedup report:" if clusters else "\nregistry dedup report: no duplicates")
    for c in clusters:
        if c.edges:
            echo(f"  {c.relation}: {', '.join(f'{p} -> {ch}' for p, ch in c.edges)}")
        else:
            echo(f"  {c.relation}: {', '.join(c.members)}")
    n = write_map(out_map)
    result["map"] = str(Path(out_map).resolve())
    echo(f"\nwrote {out_map} ({n} models); open it in a browser")


def run_demo(workdir: str | Path = ".nar-demo", server: bool = False, out_map: str | Path = "nar-map.html",
             limit: int | None = None, echo: Callable[[str], None] = print,
             models: Sequence[DemoModel] | None = None) -> dict[str, Any]:
    """Run the demo; returns what it printed as data (used by tests and ``--json``).

    Everything it changes in this process (environment, warning filters, logger levels, MLflow's
    tracking URI and experiment) is restored when it returns (:func:`demo_environment`).

    Args:
        workdir: where the MLflow store, artifacts and the index live (created).
        server: start a local ``mlflow server`` instead of the embedded SQLite store.
        out_map: where to write the HTML map.
        limit: log only the first ``limit`` models.
        echo: where human-readable lines go.
        models: the models to log (default :func:`demo_models`).
    """
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    with demo_environment(wd / "nar"):
        import mlflow

        from nar_plugin.integrations.mlflow.hooks import is_autologging

        proc, uri = _start_server(wd) if server else (None, f"sqlite:///{wd / 'mlflow.db'}")
        try:
            mlflow.set_tracking_uri(uri)
            _use_experiment(mlflow, "nar-demo", wd / "artifacts")
            result: dict[str, Any] = {"tracking_uri": uri, "autologging": is_autologging(), "logged": [],
                                      "similar": {}}
            echo(f"MLflow tracking at {uri}; nar-plugin autologging {'on' if result['autologging'] else 'OFF'}")
            runs = _log_all(mlflow, list(models if models is not None else demo_models())[: limit or None],
                            result, echo)
            _register(mlflow, runs, result, echo)
            _neighbours(runs, result, echo)
            _reports(uri, out_map, result, echo)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    return result


def _use_experiment(mlflow: Any, name: str, artifacts: Path) -> None:
    """Make ``name`` the active experiment, its artifacts under ``artifacts``.

    A SQLite store's default artifact root is ``./mlruns`` of the current directory: without an
    explicit location every demo run would leave its models (tens of MB each) wherever it was
    started, not in its working directory. A server keeps its own ``--artifacts-destination``.
    """
    if mlflow.get_experiment_by_name(name) is None:
        from mlflow.utils.uri import is_http_uri

        location = None if is_http_uri(mlflow.get_tracking_uri()) else artifacts.as_uri()
        mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


def _start_server(wd: Path) -> tuple[Any, str]:
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(wd / "mlflow-server.log", "w") as log:  # the server keeps its own copy of the handle
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 f"sqlite:///{wd / 'server.db'}", "--artifacts-destination", str(wd / "artifacts"),
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NAR_AUTOLOG": "false"})
    uri = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"mlflow server did not start; see {wd / 'mlflow-server.log'}")

"""Corpus source ``transformers``: every model type that builds from its default config.

Round 1 tries the default config of every ``model_type`` in ``CONFIG_MAPPING`` (``AutoModel`` on
meta, then ``torch.export``). Round 2 adds scaled variants of every type whose default built, so
each family has several members: depth ``num_hidden_layers`` (and encoder/decoder layer counts)
in {2, 4, 6, 2x default capped at ``hf_max_layers``}; for hierarchical models with a ``depths``
list, every stage scaled by 1/2 and 2; width (``hidden_size`` and the FFN size) halved and doubled
at depth min(4, default) where the head count still divides it. Composite configs
(``text_config``/``vision_config``...) get the depth variants applied to every sub-config.

Family = ``model_type``, except that a ``<type>_text_model`` / ``<type>_vision_model`` /
``<type>_audio_model`` sub-model type joins ``<type>`` (the same architecture's towers).
Modality (for success rates) comes from the model class alone: ``text``, ``vision``, ``audio``,
``multimodal`` (text plus another input), ``time-series``, ``other``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from nar_plugin.corpus.options import CorpusOptions
from nar_plugin.corpus.pool import Task
from nar_plugin.graph import ArchGraph

__all__ = [
    "plan", "build_task", "warm_up", "hf_family", "model_class", "modality", "make_config",
    "variant_overrides", "corpus_dummy_inputs", "tensor_outputs", "build_model",
]

NAME = "transformers"
SEQ_LEN = 16
_SUB_MODEL = re.compile(r"^(?P<base>.+?)_(text|vision|audio|speech|video)(_model|_encoder|_decoder)?$")
_DEPTH_FIELDS = ("num_hidden_layers", "encoder_layers", "decoder_layers", "num_decoder_layers",
                 "num_encoder_layers", "n_layers", "num_layers")
_FFN_FIELDS = ("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "mlp_dim",
               "n_inner", "dim_feedforward")
# derived per-layer lists that must be recomputed when the depth changes
_PER_LAYER = ("layer_types", "mlp_only_layers", "sliding_window_pattern", "no_rope_layers")


def warm_up() -> None:
    import transformers  # noqa: F401

    from nar_plugin.extract import hf, torch_module  # noqa: F401

    _quiet()


def _quiet() -> None:
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _mapping_names() -> dict[str, Any]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return dict(CONFIG_MAPPING_NAMES)


def hf_family(model_type: str, known: set[str] | None = None) -> str:
    """``model_type``, with sub-model types (``clip_text_model``) folded into their parent type."""
    known = known if known is not None else set(_mapping_names())
    m = _SUB_MODEL.match(model_type)
    if m and m.group("base") in known:
        return m.group("base")
    return model_type


def model_class(model_type: str) -> Any | None:
    """The ``AutoModel`` class of a model type; else its ``<Name>Model`` class; else the first
    task-head class any ``AutoModelFor...`` mapping lists for it; ``None`` when there is none."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from transformers.models.auto import modeling_auto

    candidates: list[Any] = [MODEL_MAPPING_NAMES.get(model_type)]
    # sub-model types (``align_text_model``) have no AutoModel entry but a model class named
    # after their config class (AlignTextConfig -> AlignTextModel) or a task-head class
    cfg_name = _mapping_names().get(model_type, "")
    if cfg_name.endswith("Config"):
        candidates.append(cfg_name[: -len("Config")] + "Model")
    for attr in sorted(dir(modeling_auto)):
        table = getattr(modeling_auto, attr)
        if attr.startswith("MODEL_") and attr.endswith("_MAPPING_NAMES") and isinstance(table, Mapping):
            candidates.append(table.get(model_type))
    for name in candidates:
        if isinstance(name, (list, tuple)):
            name = name[0] if name else None
        if not name:
            continue
        try:
            cls = getattr(transformers, name)
        except (ImportError, AttributeError, RuntimeError):
            continue
        if hasattr(cls, "forward"):
            return cls
    return None


def build_model(cfg: Any, cls: Any) -> Any:
    """``AutoModel`` on meta; for types without an AutoModel entry, ``cls(cfg)`` on meta."""
    import torch
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from nar_plugin.errors import UnsupportedModelError
    from nar_plugin.extract.transformers import build_meta_model

    if getattr(cfg, "model_type", None) in MODEL_MAPPING_NAMES:
        return build_meta_model(cfg)
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = False
    try:
        with torch.device("meta"):
            model = cls(cfg)
    except Exception as e:  # noqa: BLE001 - same contract as build_meta_model
        raise UnsupportedModelError(f"transformers cannot build {cls.__name__}: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return model.eval()


def modality(cls: Any) -> str:
    """``text``, ``vision``, ``audio``, ``multimodal``, ``time-series`` or ``other`` of a model class."""
    if cls is None:
        return "unknown"
    try:
        params = set(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        params = set()
    main = getattr(cls, "main_input_name", "input_ids")
    vision = {"pixel_values", "pixel_values_videos"} & params or main in ("pixel_values", "pixel_values_videos")
    audio = {"input_features", "input_values", "audio_values", "input_audio_features"} & params or main in (
        "input_features", "input_values", "audio_mel")
    text = main == "input_ids" or ("input_ids" in params and main not in ("pixel_values", "input_values", "input_features"))
    if main == "past_values":
        return "time-series"
    if text and (vision or audio):
        return "multimodal"
    if text:
        return "text"
    if vision:
        return "vision"
    if audio:
        return "audio"
    return "other"


# ------------------------------------------------------------------ configs and variants
def make_config(model_type: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The default config of ``model_type`` with ``overrides`` passed to its constructor.

    Overrides use real field names; a nested mapping under a sub-config name (``text_config``)
    is merged into that sub-config's defaults (per-layer lists dropped so they are recomputed).
    """
    from transformers import AutoConfig

    overrides = dict(overrides or {})
    if not overrides:
        return AutoConfig.for_model(model_type)
    base = AutoConfig.for_model(model_type)
    kwargs: dict[str, Any] = {}
    for k, v in overrides.items():
        if isinstance(v, Mapping):
            sub = getattr(base, k, None)
            if sub is None:
                continue
            d = sub.to_dict() if hasattr(sub, "to_dict") else dict(sub)
            for f in _PER_LAYER:
                d.pop(f, None)
            d.update(v)
            kwargs[k] = d
        else:
            kwargs[k] = v
    return AutoConfig.for_model(model_type, **kwargs)


def _field(cfg: Any, name: str) -> str:
    return dict(getattr(cfg, "attribute_map", {}) or {}).get(name, name)


def _int_fields(cfg: Any, names: tuple[str, ...]) -> dict[str, int]:
    """Real (attribute-map resolved) field names among ``names`` holding positive ints."""
    out: dict[str, int] = {}
    for n in names:
        real = _field(cfg, n)
        v = getattr(cfg, real, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0 and real not in out:
            out[real] = v
    return out


def _depth_overrides(cfg: Any, depth: int) -> dict[str, Any]:
    """Set the main depth to ``depth`` and every other depth field proportionally."""
    if isinstance(getattr(cfg, "depths", None), (list, tuple)):
        return {}
    fields = _int_fields(cfg, _DEPTH_FIELDS)
    if not fields:
        return {}
    main = fields.get(_field(cfg, "num_hidden_layers"), next(iter(fields.values())))
    return {f: max(1, round(depth * v / main)) for f, v in fields.items()}


def _sub_configs(cfg: Any) -> dict[str, Any]:
    subs = getattr(cfg, "sub_configs", None) or {}
    return {k: getattr(cfg, k) for k in subs if getattr(cfg, k, None) is not None and hasattr(getattr(cfg, k), "to_dict")}


def variant_overrides(cfg: Any, max_layers: int = 24) -> list[tuple[str, dict[str, Any]]]:
    """``(suffix, overrides)`` of the scaled variants of a default config (see module doc)."""
    out: list[tuple[str, dict[str, Any]]] = []
    subs = _sub_configs(cfg)
    fields = _int_fields(cfg, _DEPTH_FIELDS)
    depths = getattr(cfg, "depths", None)
    if subs and not fields:
        # composite: scale every sub-config that has a depth
        sub_fields = {k: _int_fields(s, _DEPTH_FIELDS) for k, s in subs.items()}
        sub_fields = {k: v for k, v in sub_fields.items() if v and not isinstance(getattr(subs[k], "depths", None), list)}
        if not sub_fields:
            return out
        default = max(max(v.values()) for v in sub_fields.values())
        for d in sorted({2, 4, 6, min(2 * default, max_layers)} - {default}):
            ov = {k: _depth_overrides(subs[k], max(1, round(d * max(f.values()) / default)))
                  for k, f in sub_fields.items()}
            out.append((f"L{d}", ov))
        return out
    if isinstance(depths, (list, tuple)) and depths and all(isinstance(x, int) for x in depths):
        for f, tag in ((0.5, "D0.5"), (2.0, "D2")):
            new = [max(1, round(x * f)) for x in depths]
            if new != list(depths):
                out.append((tag, {"depths": new}))
        wf = "hidden_sizes" if isinstance(getattr(cfg, "hidden_sizes", None), list) else (
            "embed_dim" if isinstance(getattr(cfg, "embed_dim", None), int) else None)
        for f, tag in ((0.5, "W0.5"), (2.0, "W2")):
            if wf == "hidden_sizes":
                out.append((tag, {"hidden_sizes": [max(8, int(x * f)) for x in cfg.hidden_sizes]}))
            elif wf == "embed_dim":
                out.append((tag, {"embed_dim": max(8, int(cfg.embed_dim * f))}))
        return out
    if not fields:
        return out
    main_field = _field(cfg, "num_hidden_layers")
    default = fields.get(main_field, next(iter(fields.values())))
    for d in sorted({2, 4, 6, min(2 * default, max_layers)} - {default}):
        out.append((f"L{d}", _depth_overrides(cfg, d)))
    hidden_f = _field(cfg, "hidden_size")
    hidden = getattr(cfg, hidden_f, None)
    heads = getattr(cfg, _field(cfg, "num_attention_heads"), None)
    if isinstance(hidden, int) and hidden > 0:
        shallow = _depth_overrides(cfg, min(4, default))
        for f, tag in ((0.5, "W0.5"), (2.0, "W2")):
            h = int(hidden * f)
            if isinstance(heads, int) and heads > 0 and (h % heads or h < heads):
                continue
            ov: dict[str, Any] = {**shallow, hidden_f: h}
            for ff, v in _int_fields(cfg, _FFN_FIELDS).items():
                ov[ff] = max(1, int(v * f))
            out.append((f"{tag}L{min(4, default)}", ov))
    return out


# ------------------------------------------------------------------ inputs
def _size_of(cfg: Any) -> tuple[int, int]:
    from nar_plugin.extract.transformers import _get

    size = _get(cfg, "image_size", default=224)
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    if isinstance(size, dict):
        return int(size.get("height", 224)), int(size.get("width", 224))
    return int(size), int(size)


def corpus_dummy_inputs(model: Any, seq_len: int = SEQ_LEN, all_modalities: bool = False) -> dict[str, Any]:
    """Keyword inputs for ``model.forward`` on meta: ``extract.hf.dummy_inputs`` plus fixes.

    Differences from ``nar_plugin.extract.transformers.dummy_inputs`` (to be merged there):

    * ``all_modalities``: also feed the secondary modalities the forward accepts
      (``pixel_values`` of a CLIP-style dual encoder, ``input_ids`` of a vision-text model), as
      a second attempt when the main-input-only call fails;
    * video models (``pixel_values_videos`` / ``num_frames``) get a ``(1, T, C, H, W)`` clip;
    * inputs the forward *requires* (no default) that we know how to make are always added;
    * spectrogram transformers (``num_mel_bins`` + ``max_length``, e.g. AST) get
      ``input_values`` of shape ``(1, max_length, num_mel_bins)``.
    """
    import torch

    from nar_plugin.extract.transformers import _get, dummy_inputs

    kw = dummy_inputs(model, seq_len)
    cfg = model.config
    try:
        sig = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        sig = {}
    required = {n for n, p in sig.items() if p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"}
    want = set(sig) if all_modalities else required
    dev = "meta"
    h, w = _size_of(cfg)
    c = int(_get(cfg, "num_channels", default=3))
    frames = int(_get(cfg, "num_frames", default=8))
    if "pixel_values_videos" in sig and ("pixel_values_videos" in want or getattr(model, "main_input_name", "") == "pixel_values_videos"):
        kw.pop("pixel_values", None)
        kw["pixel_values_videos"] = torch.zeros((1, frames, c, h, w), device=dev)
    if getattr(model, "main_input_name", "") == "pixel_values" and "num_frames" in dir(cfg) and "pixel_values" in kw:
        if int(getattr(cfg, "num_frames", 0) or 0) > 1:  # video classifiers (VideoMAE, TimeSformer, ViViT)
            kw["pixel_values"] = torch.zeros((1, frames, c, h, w), device=dev)
    if "pixel_values" in want and "pixel_values" in sig and "pixel_values" not in kw and "pixel_values_videos" not in kw:
        kw["pixel_values"] = torch.zeros((1, c, h, w), device=dev)
    if "input_ids" in want and "input_ids" in sig and "input_ids" not in kw:
        kw["input_ids"] = torch.zeros((1, seq_len), dtype=torch.long, device=dev)
        if "attention_mask" in sig:
            kw["attention_mask"] = torch.ones((1, seq_len), dtype=torch.long, device=dev)
    if "decoder_input_ids" in want and "decoder_input_ids" in sig and "decoder_input_ids" not in kw:
        kw["decoder_input_ids"] = torch.zeros((1, seq_len), dtype=torch.long, device=dev)
    mel, max_len = getattr(cfg, "num_mel_bins", None), getattr(cfg, "max_length", None)
    if "input_values" in kw and isinstance(mel, int) and isinstance(max_len, int) and max_len > 0:
        kw["input_values"] = torch.zeros((1, max_len, mel), device=dev)  # spectrogram models (AST)
    if "use_cache" in sig:
        kw["use_cache"] = False
    return kw


# ------------------------------------------------------------------ plan and build
def plan(records: Mapping[str, Mapping[str, Any]], options: CorpusOptions) -> list[Task]:
    """Round 1: every default config; later rounds: variants of the types whose default built."""
    names = _mapping_names()
    known = set(names)
    types = options.select(NAME, sorted(names))
    tasks = [Task(f"hf:{t}", NAME, t, hf_family(t, known), {"model_type": t, "variant": "default"})
             for t in types]
    if not options.hf_variants:
        return tasks
    for t in types:
        rec = records.get(f"hf:{t}")
        if rec is None or rec.get("status") != "ok":
            continue
        try:
            cfg = make_config(t)
            variants = variant_overrides(cfg, options.hf_max_layers)
        except Exception:  # noqa: BLE001 - a config that cannot be introspected just has no variants
            continue
        for suffix, ov in variants:
            tasks.append(Task(f"hf:{t}/{suffix}", NAME, f"{t}/{suffix}", hf_family(t, known),
                              {"model_type": t, "variant": suffix, "overrides": ov}))
    return tasks


def _tensor_leaves(x: Any) -> list[Any]:
    import torch

    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        return [t for v in x.values() for t in _tensor_leaves(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensor_leaves(v)]
    return []  # caches and other objects torch.export cannot return


def tensor_outputs(model: Any) -> Any:
    """``model`` wrapped so that its forward returns only the tensors of its output.

    Some models return a ``DynamicCache`` even with ``use_cache=False``, which torch.export
    refuses as an output ("not a known type ... register a pytree"). Dropping it changes no
    computation: the key/value projections still feed the attention.
    """
    import torch.nn as nn

    class TensorOutputs(nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **kwargs: Any) -> tuple[Any, ...]:
            return tuple(_tensor_leaves(self.inner(**kwargs)))

    return TensorOutputs(model).eval()


def build_task(task: Task) -> tuple[ArchGraph, dict[str, Any]]:
    """Build one config (default or variant) on meta and export it; see the module doc."""
    from nar_plugin.errors import UnsupportedModelError
    from nar_plugin.extract.torch_module import graph_from_module

    _quiet()
    mt = task.spec["model_type"]
    cls = model_class(mt)
    info: dict[str, Any] = {"modality": modality(cls), "variant": task.spec.get("variant", "default")}
    try:
        cfg = make_config(mt, task.spec.get("overrides"))
        info["encoder_decoder"] = bool(getattr(cfg, "is_encoder_decoder", False))
        if cls is None:
            raise UnsupportedModelError(f"no model class for model type {mt!r} (no AutoModel entry, "
                                        "no <Name>Model class, no AutoModelFor... entry)")
        model = build_model(cfg, cls)
        meta = {"name": task.name, "model_type": mt, "source_kind": "hf-config", "family": task.family}
        # later attempts: only tensor outputs (a returned cache breaks torch.export), then
        # every input the forward accepts (dual encoders such as CLIP need both towers' inputs)
        first: Exception | None = None
        for attempt, all_mod, wrap in (("main", False, False), ("tensor-outputs", False, True),
                                       ("all-modalities", True, True)):
            if attempt == "tensor-outputs" and "not a known type" not in str(first):
                continue
            kwargs = corpus_dummy_inputs(model, all_modalities=all_mod)
            target = tensor_outputs(model) if wrap else model
            try:
                g = graph_from_module(target, example_inputs=(), tracer="export", metadata=meta, example_kwargs=kwargs)
                info["inputs"] = attempt
                return g, info
            except Exception as e:  # noqa: BLE001 - try the next input set, report the first error
                first = first or e
        assert first is not None
        raise first
    except Exception as e:
        e.corpus_info = info  # type: ignore[attr-defined] # the failure record keeps the modality
        raise

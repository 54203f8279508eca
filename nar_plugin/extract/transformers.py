"""Hugging Face transformers: config -> model on meta -> torch.export -> ArchGraph.

transformers 5.x has no fx tracer, so these always take the torch.export path. The model is
built on the meta device from its config: no weights are created, loaded or downloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from nar_plugin.errors import CorruptArtifactError, NarError, UnsupportedModelError
from nar_plugin.extract.limits import bounded_call, check_config_sizes, check_deadline, read_json
from nar_plugin.graph import ArchGraph
from nar_plugin.utils.deps import require

logger = logging.getLogger(__name__)

__all__ = ["load_config", "build_meta_model", "dummy_inputs", "graph_from_hf_config", "is_hf_config"]

SEQ_LEN = 16


def _transformers() -> Any:
    return require("transformers", "hf")


def is_hf_config(obj: Any) -> bool:
    """True for a ``transformers.PretrainedConfig`` (checked without importing transformers)."""
    return any(c.__name__ in ("PretrainedConfig", "PreTrainedConfig") for c in type(obj).__mro__)


#: Keys of a ``config.json`` that make transformers fetch or run code from elsewhere; a config we
#: read is data only, so they are dropped before the config object is built.
_REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")


def load_config(source: Any) -> Any:
    """A ``PretrainedConfig`` from a config object, a ``config.json`` path/dir, a dict or a
    model type name (``"bert"``: the library's default config for that type).

    A file or dict may come from anyone. It is read within ``NAR_MAX_JSON_MB`` /
    ``NAR_MAX_JSON_DEPTH``, its sizes are checked (:func:`~nar_plugin.extract.limits.check_config_sizes`)
    before transformers is even imported, ``auto_map`` (custom code) is dropped, and the config
    object transformers builds from it is checked again (its defaults and aliases included).

    Raises:
        CorruptArtifactError: the config file does not parse or lacks ``model_type``.
        BudgetExceededError: the file or the model it describes is over a budget.
        UnsupportedModelError: unknown model type.
    """
    if is_hf_config(source):
        return source
    if isinstance(source, dict):
        data = dict(source)
        where = "config"
    elif isinstance(source, (str, Path)) and (Path(source).is_file() or Path(source).is_dir()):
        p = Path(source)
        if p.is_dir():
            p = p / "config.json"
        data = read_json(p, "config.json")
        where = str(p)
        if not isinstance(data, dict):
            raise CorruptArtifactError(f"{p} holds {type(data).__name__}, expected a JSON object", str(p))
    elif isinstance(source, str):
        tf = _transformers()
        try:
            return tf.AutoConfig.for_model(source)
        except (ValueError, KeyError) as e:
            raise UnsupportedModelError(f"{source!r} is not a transformers model type") from e
    else:
        raise UnsupportedModelError(f"expected a transformers config, found {type(source).__name__}")
    for key in _REMOTE_CODE_KEYS:
        if data.pop(key, None) is not None:
            logger.info("nar-plugin: ignoring %r in %s: configs are read as data, never as code", key, where)
    check_config_sizes(data, where)
    model_type = data.get("model_type")
    if not model_type:
        raise CorruptArtifactError(f"{where} has no 'model_type' (not a transformers config)")
    if not isinstance(model_type, str):
        raise CorruptArtifactError(f"{where}: model_type is a {type(model_type).__name__}, expected a string")
    tf = _transformers()
    try:
        cls = tf.AutoConfig.for_model(model_type).__class__
    except (ValueError, KeyError) as e:
        raise UnsupportedModelError(f"model_type {model_type!r} is not known to transformers {tf.__version__}") from e
    try:
        config = cls.from_dict(data)
        for key in _REMOTE_CODE_KEYS:
            if hasattr(config, key):
                delattr(config, key)
        check_config_sizes(config.to_dict(), where)
    except NarError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError, OverflowError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CorruptArtifactError(f"{where}: not a valid {model_type} config: {type(e).__name__}: {first}") from e
    return config


def build_meta_model(config: Any) -> Any:
    """Instantiate the base model (``AutoModel``) of ``config`` on the meta device, eval mode.

    Raises:
        UnsupportedModelError: transformers cannot build a model from this config.
    """
    import torch

    tf = _transformers()
    cfg = config
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = False
    for key in _REMOTE_CODE_KEYS:  # never custom code, never transformers' "run custom code?" prompt
        if hasattr(cfg, key):
            delattr(cfg, key)
    try:
        with torch.device("meta"):
            model = tf.AutoModel.from_config(cfg, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for unbuildable configs
        raise UnsupportedModelError(
            f"transformers cannot build {type(cfg).__name__} ({getattr(cfg, 'model_type', '?')}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    return model.eval()


def _get(cfg: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    for sub in ("vision_config", "encoder", "text_config", "audio_config"):
        sc = getattr(cfg, sub, None)
        if sc is not None:
            for n in names:
                v = getattr(sc, n, None)
                if v is not None:
                    return v
    return default


def dummy_inputs(model: Any, seq_len: int = SEQ_LEN) -> dict[str, Any]:
    """Valid keyword inputs for the model's forward, by modality, on the meta device."""
    import inspect

    import torch

    cfg = model.config
    params = set(inspect.signature(model.forward).parameters)
    main = getattr(model, "main_input_name", "input_ids")
    kw: dict[str, Any] = {}
    dev = "meta"
    if main == "pixel_values" or ("pixel_values" in params and "input_ids" not in params):
        size = _get(cfg, "image_size", default=224)
        if isinstance(size, (list, tuple)):
            h, w = int(size[0]), int(size[-1])
        elif isinstance(size, dict):
            h, w = int(size.get("height", 224)), int(size.get("width", 224))
        else:
            h = w = int(size)
        c = _get(cfg, "num_channels", default=3)
        kw["pixel_values"] = torch.zeros((1, int(c), h, w), device=dev)
    elif main == "input_features":
        n = _get(cfg, "num_mel_bins", "feature_size", "input_feat_per_channel", default=80)
        length = 3000 if getattr(cfg, "model_type", "") == "whisper" else 128
        if getattr(cfg, "model_type", "") == "whisper":
            length = 2 * int(getattr(cfg, "max_source_positions", 1500))
        kw["input_features"] = torch.zeros((1, int(n), length), device=dev)
        if getattr(cfg, "model_type", "") in ("speech_to_text",):
            kw["input_features"] = torch.zeros((1, length, int(n)), device=dev)
    elif main == "input_values":
        kw["input_values"] = torch.zeros((1, 16000), device=dev)
    else:
        kw["input_ids"] = torch.zeros((1, seq_len), dtype=torch.long, device=dev)
        if "attention_mask" in params:
            kw["attention_mask"] = torch.ones((1, seq_len), dtype=torch.long, device=dev)
    if getattr(cfg, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        kw["decoder_input_ids"] = torch.zeros((1, seq_len), dtype=torch.long, device=dev)
    if "use_cache" in params:
        kw["use_cache"] = False
    return kw


@bounded_call
def graph_from_hf_config(source: Any, metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Extract the graph of a transformers architecture from its config alone.

    Runs under the budgets for untrusted input: the config is checked by :func:`load_config`
    before a module is built, and the whole extraction shares one ``NAR_EXTRACT_TIMEOUT``
    deadline and the ``NAR_MAX_TRACE_NODES`` node budget.

    Raises:
        UnsupportedModelError: unknown type, or the model cannot be built from the config.
        GraphExtractionError: the model was built but could not be exported.
        BudgetExceededError: the config is over a budget (layers, experts, sizes).
        ExtractionTimeoutError, TraceTooLargeError: the extraction passed its time or node budget.
    """
    from nar_plugin.extract.torch_module import graph_from_module

    config = load_config(source)
    model = build_meta_model(config)
    check_deadline("building the model on meta")
    kwargs = dummy_inputs(model)
    meta = {"name": type(model).__name__, "model_type": getattr(config, "model_type", None),
            "source_kind": "hf-config", **(metadata or {})}
    return graph_from_module(model, example_inputs=(), tracer="export", metadata=meta, example_kwargs=kwargs)

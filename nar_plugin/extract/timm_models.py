"""timm model names -> model on meta -> ArchGraph (torch.fx when faithful, else export)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nar_plugin.errors import CorruptArtifactError, MissingDependencyError, UnsafeConfigError, UnsupportedModelError
from nar_plugin.extract.limits import bounded_call, check_config_sizes, check_deadline
from nar_plugin.graph import ArchGraph
from nar_plugin.utils.deps import require

__all__ = ["is_timm_name", "build_meta_timm", "graph_from_timm", "graph_from_timm_config", "safe_model_args",
           "timm_family", "TIMM_MODEL_ARGS"]

#: ``timm.create_model`` arguments that load or fetch something (a checkpoint, a pretrained config
#: file, a cache folder). ``build_meta_timm`` builds architectures on meta: it refuses them always.
_NEVER = frozenset({"pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir",
                    "pretrained_strict", "feature_cfg", "pretrained_filter_fn"})

#: ``model_args`` an untrusted config (a Hub ``config.json``) may pass to ``timm.create_model``:
#: architecture hyper-parameters only, with plain values (numbers, booleans, short names, lists).
TIMM_MODEL_ARGS = frozenset({
    "num_classes", "in_chans", "global_pool", "img_size", "patch_size", "embed_dim", "embed_dims", "depth",
    "depths", "num_heads", "mlp_ratio", "mlp_ratios", "qkv_bias", "qk_norm", "init_values", "class_token",
    "no_embed_class", "reg_tokens", "pos_embed", "dynamic_img_size", "dynamic_img_pad", "pre_norm", "fc_norm",
    "final_norm", "act_layer", "norm_layer", "drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
    "pos_drop_rate", "patch_drop_rate", "drop_block_rate", "layers", "channels", "widths", "dims", "stem_type",
    "stem_width", "stem_chs", "output_stride", "cardinality", "base_width", "channel_multiplier",
    "depth_multiplier", "window_size", "kernel_size", "kernel_sizes", "head_dim", "head_hidden_size",
    "num_features", "attn_layer", "layer_scale_init_value", "ls_init_value", "head_init_scale", "conv_mlp",
    "avg_down", "zero_init_last", "weight_init", "fix_init", "use_abs_pos_emb", "use_rel_pos_bias",
    "use_shared_rel_pos_bias", "block_type", "se_layer", "attn_type", "mlp_layer",
})
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{0,64}$")


def _timm() -> Any:
    return require("timm", "timm")


def is_timm_name(name: str) -> bool:
    """True when ``name`` is a registered timm architecture (pretrained tags allowed)."""
    try:
        timm = _timm()
    except MissingDependencyError:
        return False
    base = name.split(".")[0]
    return bool(timm.is_model(base))


def timm_family(name: str) -> str:
    """The timm module that registers the architecture (e.g. ``resnet``, ``vision_transformer``)."""
    timm = _timm()
    mod = timm.models.get_arch_name(name) if hasattr(timm.models, "get_arch_name") else name
    return str(timm.models.model_entrypoint(mod).__module__).rsplit(".", 1)[-1]


def build_meta_timm(name: str, **kwargs: Any) -> Any:
    """``timm.create_model(name, pretrained=False)`` on the meta device, in eval mode.

    Raises:
        UnsupportedModelError: unknown name or the model cannot be built.
    """
    import torch

    never = sorted(_NEVER & set(kwargs))
    if never:
        raise UnsafeConfigError(f"build_meta_timm builds architectures on meta and loads nothing; refusing {never}")
    timm = _timm()
    base = name.split(".")[0]
    if not timm.is_model(base):
        raise UnsupportedModelError(f"{name!r} is not a timm architecture (see timm.list_models())")
    try:
        with torch.device("meta"):
            model = timm.create_model(base, pretrained=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - timm raises many types for unbuildable configs
        raise UnsupportedModelError(f"timm cannot build {name!r}: {type(e).__name__}: {e}") from e
    return model.eval()


def graph_from_timm(name: str, example_inputs: Any = None, tracer: str = "auto",
                    metadata: dict[str, Any] | None = None) -> ArchGraph:
    """Extract the graph of a timm architecture by name; no weights are created or fetched."""
    from nar_plugin.extract.torch_module import graph_from_module

    model = build_meta_timm(name)
    meta = {"name": name, "source_kind": "timm", **(metadata or {})}
    return graph_from_module(model, example_inputs, tracer=tracer, metadata=meta)


def _plain(value: Any, key: str, where: str) -> None:
    """A JSON value made of numbers, booleans, None, short names and lists of them."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, str):
            if not _NAME.match(v):
                raise UnsafeConfigError(f"{where}: model_args.{key} holds {v[:80]!r}; only short names "
                                        "(letters, digits, '_', '-', '.') are accepted")
        elif not (v is None or isinstance(v, (bool, int, float))):
            raise UnsafeConfigError(f"{where}: model_args.{key} is a {type(v).__name__}; only numbers, booleans, "
                                    "names and lists of them are accepted")


def safe_model_args(model_args: Any, where: str = "config.json") -> dict[str, Any]:
    """Check the ``model_args`` of an untrusted timm config against :data:`TIMM_MODEL_ARGS`.

    Anything that could make timm load a file (``checkpoint_path``, ``pretrained_cfg_overlay``
    with a ``file``, ``cache_dir``), any key not on the list and any value that is not plain data
    is refused, and the sizes are checked like a transformers config's.

    Raises:
        UnsafeConfigError: a key outside the allow-list, or a value that is not plain data.
        CorruptArtifactError: ``model_args`` is not a mapping.
        BudgetExceededError: the architecture it asks for is over a budget.
    """
    if model_args is None:
        return {}
    if not isinstance(model_args, Mapping):
        raise CorruptArtifactError(f"{where}: model_args is a {type(model_args).__name__}, expected an object")
    bad = sorted(str(k) for k in model_args if k not in TIMM_MODEL_ARGS)
    if bad:
        raise UnsafeConfigError(f"{where}: model_args {bad} are not on the allow-list of timm architecture "
                                "arguments (nar_plugin.extract.timm_models.TIMM_MODEL_ARGS); refusing the config")
    for k, v in model_args.items():
        _plain(v, k, where)
    check_config_sizes(model_args, f"{where} model_args")
    return dict(model_args)


@bounded_call
def graph_from_timm_config(config: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> ArchGraph:
    """The graph of an untrusted timm ``config.json`` (``architecture``, ``num_classes``,
    ``model_args``), built on meta; ``pretrained_cfg`` and every other key are ignored.

    Raises:
        UnsupportedModelError: the architecture is not a timm model or cannot be built.
        UnsafeConfigError: ``model_args`` outside the allow-list (see :func:`safe_model_args`).
        CorruptArtifactError: ``architecture`` / ``num_classes`` of the wrong type.
        BudgetExceededError, ExtractionTimeoutError, TraceTooLargeError: over a budget.
    """
    from nar_plugin.extract.torch_module import graph_from_module

    arch = config.get("architecture")
    if not isinstance(arch, str) or not _NAME.match(arch):
        raise CorruptArtifactError(f"config.json: architecture {str(arch)[:80]!r} is not a timm model name")
    kwargs = safe_model_args(config.get("model_args"))
    num_classes = config.get("num_classes")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 0 <= num_classes <= 1 << 24:
            raise CorruptArtifactError(f"config.json: num_classes is {num_classes!r}, expected a count")
        kwargs.setdefault("num_classes", num_classes)
    model = build_meta_timm(arch, **kwargs)
    check_deadline("building the model on meta")
    return graph_from_module(model, None, metadata={"name": arch, "source_kind": "timm", **dict(metadata or {})})

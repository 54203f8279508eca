"""The benchmark's libraries: which models each contributes and how one is built on meta.

Libraries with a registry (timm, torchvision, pytorchcv, efficientnet_pytorch,
pretrainedmodels) are enumerated and mapped by :func:`~nar_plugin.corpus.crosslib.families.map_name`;
libraries whose models are classes with hyper-parameters (vit_pytorch, open_clip,
segmentation_models_pytorch, transformers) have an explicit table here: the configuration that
reproduces the named network (``vit_b_16`` = 768 wide, 12 deep, 12 heads, 3072 MLP, patch 16).

:func:`build_model` runs in the build's worker process with the third-party folder on
``sys.path``; nothing here downloads weights (``pretrained=False`` / ``None`` everywhere and
every module is created on the meta device).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from nar_plugin.corpus.crosslib.families import EXPLICIT, RULES, map_name, same_network

__all__ = ["LIBRARIES", "SKIPPED_NOTES", "TRAINING_LIBRARIES", "Candidate", "build_model", "candidates"]

#: Every library of the benchmark, in manifest order. timm, torchvision and transformers are the
#: libraries the shipped encoder was trained on; the others are code it never saw.
LIBRARIES: tuple[str, ...] = ("timm", "torchvision", "transformers", "pytorchcv", "efficientnet_pytorch",
                              "pretrainedmodels", "open_clip", "vit_pytorch", "smp", "torchaudio")
#: Libraries whose code is in the shipped encoder's training corpus (the others are unseen code).
TRAINING_LIBRARIES: frozenset[str] = frozenset({"timm", "torchvision", "transformers"})

#: Models deliberately left out, with the reason (documented in docs/cross-library.md).
SKIPPED_NOTES: dict[str, str] = {
    "pretrainedmodels": "alexnet, densenet*, inceptionv3, resnet18-152, squeezenet*, vgg* call torchvision's "
                        "builders (same code as torchvision, not a re-implementation)",
    "open_clip": "configs whose tower is a timm model (ConvNeXt, EVA, SigLIP...) are timm's code",
    "pytorchcv": "*_cifar100 / *_svhn / *_cub / other-dataset segmentation copies differ from a kept model "
                 "only in the classifier width",
    "timm": "resolution twins (*_384 next to *_224) have the same graph as the kept one",
}


@dataclass(frozen=True)
class Candidate:
    """One model of one library: what it is and how to build it.

    Attributes:
        library: a name in :data:`LIBRARIES`.
        name: the library's own name (timm/pytorchcv name, open_clip config, table key...).
        family: canonical family.
        fine: fine label (same network across libraries).
        spec: human-readable constructor (``pytorchcv:densenet121``,
            ``vit_pytorch:ViT(dim=768, depth=12, ...)``).
        build: JSON-able parameters :func:`build_model` reads.
    """

    library: str
    name: str
    family: str
    fine: str
    spec: str
    build: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.library}:{self.name}"


# ------------------------------------------------------------------ explicit tables
_VIT = {"image_size": 224, "patch_size": 16, "num_classes": 1000}
_MV_XXS = {"image_size": (256, 256), "dims": [64, 80, 96], "num_classes": 1000, "expansion": 2,
           "channels": [16, 16, 24, 24, 48, 48, 64, 64, 80, 80, 320]}
_MV_XS = {"image_size": (256, 256), "dims": [96, 120, 144], "num_classes": 1000,
          "channels": [16, 32, 48, 48, 64, 64, 80, 80, 96, 96, 384]}
_MV_S = {"image_size": (256, 256), "dims": [144, 192, 240], "num_classes": 1000,
         "channels": [16, 32, 64, 64, 96, 96, 128, 128, 160, 160, 640]}

#: vit_pytorch: name -> (family, fine, class path, kwargs, input side). A fine label ending in
#: ``_vitp`` marks a configuration that no other library has exactly (family relevance only).
VIT_PYTORCH: dict[str, tuple[str, str, str, dict[str, Any], int]] = {
    "vit_ti_16": ("vit", "vit_ti_16", "vit_pytorch.ViT", {**_VIT, "dim": 192, "depth": 12, "heads": 3, "mlp_dim": 768}, 224),
    "vit_s_16": ("vit", "vit_s_16", "vit_pytorch.ViT", {**_VIT, "dim": 384, "depth": 12, "heads": 6, "mlp_dim": 1536}, 224),
    "vit_b_16": ("vit", "vit_b_16", "vit_pytorch.ViT", {**_VIT, "dim": 768, "depth": 12, "heads": 12, "mlp_dim": 3072}, 224),
    "vit_b_32": ("vit", "vit_b_32", "vit_pytorch.ViT", {**_VIT, "patch_size": 32, "dim": 768, "depth": 12, "heads": 12,
                                                        "mlp_dim": 3072}, 224),
    "vit_l_16": ("vit", "vit_l_16", "vit_pytorch.ViT", {**_VIT, "dim": 1024, "depth": 24, "heads": 16, "mlp_dim": 4096}, 224),
    "simple_vit_s_16": ("vit", "simple_vit_s_16", "vit_pytorch.SimpleViT",
                        {**_VIT, "dim": 384, "depth": 12, "heads": 6, "mlp_dim": 1536}, 224),
    "simple_vit_b_16": ("vit", "simple_vit_b_16", "vit_pytorch.SimpleViT",
                        {**_VIT, "dim": 768, "depth": 12, "heads": 12, "mlp_dim": 3072}, 224),
    "deit_b_16_distilled": ("deit", "deit_b_16_distilled", "vit_pytorch.distill.DistillableViT",
                            {**_VIT, "dim": 768, "depth": 12, "heads": 12, "mlp_dim": 3072}, 224),
    "deit_s_16_distilled": ("deit", "deit_s_16_distilled", "vit_pytorch.distill.DistillableViT",
                            {**_VIT, "dim": 384, "depth": 12, "heads": 6, "mlp_dim": 1536}, 224),
    "cait_xxs24": ("cait", "cait_xxs24", "vit_pytorch.cait.CaiT",
                   {**_VIT, "dim": 192, "depth": 24, "cls_depth": 2, "heads": 4, "mlp_dim": 768, "dim_head": 48}, 224),
    "cait_xs24": ("cait", "cait_xs24", "vit_pytorch.cait.CaiT",
                  {**_VIT, "dim": 288, "depth": 24, "cls_depth": 2, "heads": 6, "mlp_dim": 1152, "dim_head": 48}, 224),
    "cait_s24": ("cait", "cait_s24", "vit_pytorch.cait.CaiT",
                 {**_VIT, "dim": 384, "depth": 24, "cls_depth": 2, "heads": 8, "mlp_dim": 1536, "dim_head": 48}, 224),
    "cvt_13": ("cvt", "cvt_13", "vit_pytorch.cvt.CvT", {"num_classes": 1000}, 224),
    "nest_tiny": ("nest", "nest_tiny", "vit_pytorch.nest.NesT",
                  {"image_size": 224, "patch_size": 4, "dim": 96, "heads": 3, "num_hierarchies": 3,
                   "block_repeats": (2, 2, 8), "num_classes": 1000}, 224),
    "mobilevit_xxs": ("mobilevit", "mobilevit_xxs", "vit_pytorch.mobile_vit.MobileViT", _MV_XXS, 256),
    "mobilevit_xs": ("mobilevit", "mobilevit_xs", "vit_pytorch.mobile_vit.MobileViT", _MV_XS, 256),
    "mobilevit_s": ("mobilevit", "mobilevit_s", "vit_pytorch.mobile_vit.MobileViT", _MV_S, 256),
    "maxvit_tiny": ("maxvit", "maxvit_tiny", "vit_pytorch.max_vit.MaxViT",
                    {"num_classes": 1000, "dim_conv_stem": 64, "dim": 64, "dim_head": 32, "depth": (2, 2, 5, 2),
                     "window_size": 7, "mbconv_expansion_rate": 4, "mbconv_shrinkage_rate": 0.25}, 224),
    "pit": ("pit", "pit_vitp", "vit_pytorch.pit.PiT",
            {"image_size": 224, "patch_size": 14, "dim": 256, "num_classes": 1000, "depth": (3, 3, 3), "heads": 16,
             "mlp_dim": 2048}, 224),
    "levit": ("levit", "levit_vitp", "vit_pytorch.levit.LeViT",
              {"image_size": 224, "num_classes": 1000, "stages": 3, "dim": (256, 384, 512), "depth": 4,
               "heads": (4, 6, 8), "mlp_mult": 2}, 224),
    "twins_svt": ("twins", "twins_svt_vitp", "vit_pytorch.twins_svt.TwinsSVT", {"num_classes": 1000}, 224),
    "xcit": ("xcit", "xcit_vitp", "vit_pytorch.xcit.XCiT",
             {**_VIT, "dim": 384, "depth": 12, "cls_depth": 2, "heads": 8, "mlp_dim": 1536}, 224),
    "crossvit": ("crossvit", "crossvit_vitp", "vit_pytorch.cross_vit.CrossViT",
                 {"image_size": 256, "num_classes": 1000, "depth": 4, "sm_dim": 192, "sm_patch_size": 16,
                  "sm_enc_depth": 2, "sm_enc_heads": 8, "sm_enc_mlp_dim": 2048, "lg_dim": 384, "lg_patch_size": 64,
                  "lg_enc_depth": 3, "lg_enc_heads": 8, "lg_enc_mlp_dim": 2048, "cross_attn_depth": 2,
                  "cross_attn_heads": 8}, 256),
}

#: open_clip: config name -> (family, fine). Only towers written by open_clip itself
#: (``VisionTransformer``, ``ModifiedResNet``); ``-quickgelu`` configs are the OpenAI originals.
OPEN_CLIP: dict[str, tuple[str, str]] = {
    **{f"ViT-{s}-{p}{q}": ("vit", f"clip_vit_{s.lower()}_{p}") for s, p in
       (("B", 32), ("B", 16), ("L", 14), ("H", 14)) for q in ("", "-quickgelu")},
    "ViT-L-16": ("vit", "clip_vit_l_16"), "ViT-S-32": ("vit", "clip_vit_s_32"), "ViT-S-16": ("vit", "clip_vit_s_16"),
    "ViT-M-32": ("vit", "clip_vit_m_32"), "ViT-M-16": ("vit", "clip_vit_m_16"),
    "ViT-B-16-plus": ("vit", "clip_vit_b_16_plus"), "ViT-g-14": ("vit", "clip_vit_g_14"),
    "ViT-bigG-14": ("vit", "clip_vit_bigg_14"),
    # (RN*-quickgelu only changes the text tower: the visual graph is RN*'s)
    **{f"RN{s}": ("resnet", f"clip_rn{s.lower()}") for s in ("50", "101", "50x4", "50x16", "50x64")},
}

#: segmentation_models_pytorch: name -> (family, fine, architecture class, encoder).
SMP: dict[str, tuple[str, str, str, str]] = {
    "Unet-resnet34": ("unet", "unet_resnet34", "Unet", "resnet34"),
    "Linknet-resnet18": ("linknet", "linknet_resnet18", "Linknet", "resnet18"),
    "PSPNet-resnet50": ("pspnet", "pspnet_resnet50", "PSPNet", "resnet50"),
    "DeepLabV3-resnet50": ("deeplabv3", "deeplabv3_resnet50", "DeepLabV3", "resnet50"),
    "DeepLabV3-resnet101": ("deeplabv3", "deeplabv3_resnet101", "DeepLabV3", "resnet101"),
}

#: torchaudio: builder name -> (family, fine). Speech encoders shared with transformers.
TORCHAUDIO: dict[str, tuple[str, str]] = {
    "wav2vec2_base": ("wav2vec2", "wav2vec2_base"), "wav2vec2_large": ("wav2vec2", "wav2vec2_large"),
    "wav2vec2_large_lv60k": ("wav2vec2", "wav2vec2_large_lv60k"),
    "wav2vec2_xlsr_300m": ("wav2vec2", "wav2vec2_xlsr_300m"),
    "hubert_base": ("hubert", "hubert_base"), "hubert_large": ("hubert", "hubert_large"),
    "hubert_xlarge": ("hubert", "hubert_xlarge"),
    "wavlm_base": ("wavlm", "wavlm_base"), "wavlm_large": ("wavlm", "wavlm_large"),
}
#: transformers overrides of the "large, stable layer norm" speech encoders (LV-60k recipe).
_SPEECH_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                 "feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}
_R18 = {"layer_type": "basic", "hidden_sizes": [64, 128, 256, 512]}
#: transformers: ``<model_type>/<variant>`` -> (family, fine, config overrides). ``default`` is
#: the config class's defaults (each documented as a published checkpoint's configuration).
TRANSFORMERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "vit/default": ("vit", "vit_b_16", {}),
    "vit/s16": ("vit", "vit_s_16", {"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536}),
    "vit/ti16": ("vit", "vit_ti_16", {"hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768}),
    "vit/l16": ("vit", "vit_l_16", {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                                    "intermediate_size": 4096}),
    "vit/b32": ("vit", "vit_b_32", {"patch_size": 32}),
    "clip_vision_model/default": ("vit", "clip_vit_b_32", {}),
    "clip_vision_model/b16": ("vit", "clip_vit_b_16", {"patch_size": 16}),
    "clip_vision_model/l14": ("vit", "clip_vit_l_14", {"hidden_size": 1024, "intermediate_size": 4096,
                                                       "num_hidden_layers": 24, "num_attention_heads": 16,
                                                       "patch_size": 14}),
    "deit/default": ("deit", "deit_b_16_distilled", {}),
    "deit/s16": ("deit", "deit_s_16_distilled", {"hidden_size": 384, "num_attention_heads": 6,
                                                 "intermediate_size": 1536}),
    "deit/ti16": ("deit", "deit_ti_16_distilled", {"hidden_size": 192, "num_attention_heads": 3,
                                                   "intermediate_size": 768}),
    "beit/default": ("beit", "beit_b_16", {}),
    "swin/default": ("swin", "swin_t", {}),
    "swin/s": ("swin", "swin_s", {"depths": [2, 2, 18, 2]}),
    "swin/b": ("swin", "swin_b", {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]}),
    "swinv2/t-w8": ("swinv2", "swinv2_t_w8", {"image_size": 256, "window_size": 8}),
    "swinv2/s-w8": ("swinv2", "swinv2_s_w8", {"image_size": 256, "window_size": 8, "depths": [2, 2, 18, 2]}),
    "convnext/default": ("convnext", "convnext_tiny", {}),
    "convnext/small": ("convnext", "convnext_small", {"depths": [3, 3, 27, 3]}),
    "convnext/base": ("convnext", "convnext_base", {"hidden_sizes": [128, 256, 512, 1024], "depths": [3, 3, 27, 3]}),
    "convnextv2/default": ("convnextv2", "convnextv2_tiny", {}),
    "convnextv2/atto": ("convnextv2", "convnextv2_atto", {"hidden_sizes": [40, 80, 160, 320], "depths": [2, 2, 6, 2]}),
    "convnextv2/nano": ("convnextv2", "convnextv2_nano", {"hidden_sizes": [80, 160, 320, 640], "depths": [2, 2, 8, 2]}),
    "resnet/default": ("resnet", "resnet50", {}),
    "resnet/18": ("resnet", "resnet18", {**_R18, "depths": [2, 2, 2, 2]}),
    "resnet/34": ("resnet", "resnet34", {**_R18, "depths": [3, 4, 6, 3]}),
    "resnet/101": ("resnet", "resnet101", {"depths": [3, 4, 23, 3]}),
    "resnet/152": ("resnet", "resnet152", {"depths": [3, 8, 36, 3]}),
    "regnet/default": ("regnet", "regnety_040", {}),
    "efficientnet/default": ("efficientnet", "efficientnet_b7", {}),
    "efficientnet/b0": ("efficientnet", "efficientnet_b0", {"width_coefficient": 1.0, "depth_coefficient": 1.0,
                                                            "image_size": 224, "hidden_dim": 1280}),
    "efficientnet/b3": ("efficientnet", "efficientnet_b3", {"width_coefficient": 1.2, "depth_coefficient": 1.4,
                                                            "image_size": 300, "hidden_dim": 1536}),
    "mobilenet_v1/default": ("mobilenet_v1", "mobilenet_v1_100", {}),
    "mobilenet_v1/075": ("mobilenet_v1", "mobilenet_v1_075", {"depth_multiplier": 0.75}),
    "mobilenet_v1/050": ("mobilenet_v1", "mobilenet_v1_050", {"depth_multiplier": 0.5}),
    "mobilenet_v2/default": ("mobilenet_v2", "mobilenet_v2_100", {}),
    "mobilenet_v2/140": ("mobilenet_v2", "mobilenet_v2_140", {"depth_multiplier": 1.4}),
    "mobilenet_v2/075": ("mobilenet_v2", "mobilenet_v2_075", {"depth_multiplier": 0.75}),
    "mobilenet_v2/050": ("mobilenet_v2", "mobilenet_v2_050", {"depth_multiplier": 0.5}),
    "mobilevit/default": ("mobilevit", "mobilevit_s", {}),
    "mobilevit/xs": ("mobilevit", "mobilevit_xs", {"hidden_sizes": [96, 120, 144],
                                                   "neck_hidden_sizes": [16, 32, 48, 64, 80, 96, 384]}),
    "mobilevit/xxs": ("mobilevit", "mobilevit_xxs", {"hidden_sizes": [64, 80, 96], "expand_ratio": 2.0,
                                                     "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320]}),
    "mobilevitv2/default": ("mobilevitv2", "mobilevitv2_100", {}),
    "mobilevitv2/050": ("mobilevitv2", "mobilevitv2_050", {"width_multiplier": 0.5}),
    "mobilevitv2/200": ("mobilevitv2", "mobilevitv2_200", {"width_multiplier": 2.0}),
    "levit/default": ("levit", "levit_128", {}),
    "levit/256": ("levit", "levit_256", {"hidden_sizes": [256, 384, 512], "num_attention_heads": [4, 6, 8],
                                         "key_dim": [32, 32, 32]}),
    "cvt/default": ("cvt", "cvt_13", {}),
    "poolformer/default": ("poolformer", "poolformer_s12", {}),
    "poolformer/s24": ("poolformer", "poolformer_s24", {"depths": [4, 4, 12, 4]}),
    "pvt_v2/default": ("pvt_v2", "pvt_v2_b0", {}),
    "pvt_v2/b1": ("pvt_v2", "pvt_v2_b1", {"hidden_sizes": [64, 128, 320, 512]}),
    "focalnet/default": ("focalnet", "focalnet_tiny_srf", {}),
    "focalnet/small": ("focalnet", "focalnet_small_srf", {"depths": [2, 2, 18, 2]}),
    "hiera/default": ("hiera", "hiera_base", {}),
    "hiera/tiny": ("hiera", "hiera_tiny", {"depths": [1, 2, 7, 2]}),
    "hiera/small": ("hiera", "hiera_small", {"depths": [1, 2, 11, 2]}),
    "bit/default": ("preresnet", "bit_50x1", {}),
    "wav2vec2/default": ("wav2vec2", "wav2vec2_base", {}),
    "wav2vec2/large-lv60": ("wav2vec2", "wav2vec2_large_lv60k", _SPEECH_LARGE),
    "hubert/default": ("hubert", "hubert_base", {}),
    "hubert/large": ("hubert", "hubert_large", _SPEECH_LARGE),
    "wavlm/default": ("wavlm", "wavlm_base", {}),
    "wavlm/large": ("wavlm", "wavlm_large", _SPEECH_LARGE),
}


# ------------------------------------------------------------------ enumeration
def _registry_names(library: str) -> list[str]:
    if library == "timm":
        import timm

        return sorted(timm.list_models())
    if library == "torchvision":
        import torchvision

        return sorted(torchvision.models.list_models())
    if library == "pytorchcv":
        from pytorchcv.model_provider import _models

        return sorted(_models)
    if library == "efficientnet_pytorch":
        from efficientnet_pytorch import VALID_MODELS

        return sorted(VALID_MODELS)
    if library == "pretrainedmodels":
        import pretrainedmodels

        return sorted(pretrainedmodels.model_names)
    raise ValueError(f"{library!r} has no registry")


def candidates(library: str) -> list[Candidate]:
    """Every model ``library`` contributes (before the two-libraries-per-family filter).

    Raises:
        ValueError: unknown library.
        ImportError: the library is not importable (install it and put it on the path).
    """
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}; expected one of {LIBRARIES}")
    out: list[Candidate] = []
    if library in ("timm", "torchvision", "pytorchcv", "efficientnet_pytorch", "pretrainedmodels"):
        for name in _registry_names(library):
            hit = map_name(library, name)
            if hit is not None:
                out.append(Candidate(library, name, hit[0], hit[1], f"{library}:{name}", {"name": name}))
    elif library == "vit_pytorch":
        for name, (fam, fine, cls, kwargs, side) in VIT_PYTORCH.items():
            args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            out.append(Candidate(library, name, fam, fine, f"vit_pytorch:{cls.rsplit('.', 1)[1]}({args})",
                                 {"cls": cls, "kwargs": kwargs, "side": side}))
    elif library == "open_clip":
        for name, (fam, fine) in OPEN_CLIP.items():
            out.append(Candidate(library, f"{name}/visual", fam, fine, f"open_clip:{name} (visual)", {"name": name}))
    elif library == "smp":
        for name, (fam, fine, arch, enc) in SMP.items():
            out.append(Candidate(library, name, fam, fine, f"smp:{arch}(encoder_name={enc!r}, encoder_weights=None)",
                                 {"arch": arch, "encoder": enc}))
    elif library == "torchaudio":
        for name, (fam, fine) in TORCHAUDIO.items():
            out.append(Candidate(library, name, fam, fine, f"torchaudio:models.{name}()", {"name": name}))
    elif library == "transformers":
        for name, (fam, fine, ov) in TRANSFORMERS.items():
            mt, variant = name.split("/")
            out.append(Candidate(library, name, fam, fine, f"transformers:{mt}/{variant}" + (f" {ov}" if ov else ""),
                                 {"model_type": mt, "overrides": ov}))
    # the tables name some models after their training recipe: label the network (same_network)
    return sorted((replace(c, family=f, fine=n) for c in out for f, n in [same_network(c.family, c.fine)]),
                  key=lambda c: c.name)


# ------------------------------------------------------------------ building (worker side)
@contextlib.contextmanager
def _meta_device() -> Iterator[None]:
    import torch

    with torch.device("meta"):
        yield


def _on_meta(build: Any) -> Any:
    """``build()`` under ``torch.device("meta")``; builders that compute with tensors while
    constructing (``.item()``, numpy) get their parameters moved to meta as they register."""
    from nar_plugin.corpus.torchvision_source import _params_on_meta

    try:
        with _meta_device():
            return build()
    except (NotImplementedError, RuntimeError) as e:
        if "meta" not in str(e):
            raise
    with _params_on_meta():
        return build()


def _image(side: int | tuple[int, int], channels: int = 3) -> tuple[Any, ...]:
    import torch

    h, w = (side, side) if isinstance(side, int) else side
    return (torch.zeros(1, channels, h, w, device="meta"),)


def build_model(library: str, build: Mapping[str, Any]) -> tuple[Any, tuple[Any, ...] | None, dict[str, Any] | None]:
    """``(module on meta in eval mode, example args or None, example kwargs or None)``.

    ``None`` args mean :func:`~nar_plugin.extract.torch_module.infer_example_inputs` decides
    (timm's ``pretrained_cfg``, the first layer's channels). Runs in a worker with the
    third-party folder on ``sys.path``.
    """
    import importlib

    if library == "timm":
        from nar_plugin.extract.timm_models import build_meta_timm

        return build_meta_timm(build["name"]), None, None
    if library == "torchvision":
        from nar_plugin.corpus.torchvision_source import build_meta

        return build_meta(build["name"]), None, None
    if library == "pytorchcv":
        from pytorchcv.model_provider import get_model

        m = _on_meta(lambda: get_model(build["name"], pretrained=False)).eval()
        side = getattr(m, "in_size", (224, 224))
        return m, _image(tuple(side), getattr(m, "in_channels", 3)), None
    if library == "efficientnet_pytorch":
        from efficientnet_pytorch import EfficientNet

        m = _on_meta(lambda: EfficientNet.from_name(build["name"])).eval()
        return m, _image(EfficientNet.get_image_size(build["name"])), None
    if library == "pretrainedmodels":
        import pretrainedmodels

        m = _on_meta(lambda: pretrainedmodels.__dict__[build["name"]](num_classes=1000, pretrained=None)).eval()
        # the input size lives in the pretrained settings (a model built without weights lacks it)
        settings = pretrainedmodels.pretrained_settings.get(build["name"], {})
        size = list(next(iter(settings.values()), {}).get("input_size", [3, 224, 224]))
        return m, _image((size[1], size[2]), size[0]), None
    if library == "open_clip":
        import open_clip

        m = _on_meta(lambda: open_clip.create_model(build["name"], pretrained=None, device="meta")).visual.eval()
        return m, _image(tuple(m.image_size) if isinstance(m.image_size, (tuple, list)) else m.image_size), None
    if library == "vit_pytorch":
        mod, cls = build["cls"].rsplit(".", 1)
        ctor = getattr(importlib.import_module(mod), cls)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in build["kwargs"].items()}
        m = _on_meta(lambda: ctor(**kwargs)).eval()
        return m, _image(int(build["side"])), None
    if library == "smp":
        import segmentation_models_pytorch as smp

        ctor = getattr(smp, build["arch"])
        m = _on_meta(lambda: ctor(encoder_name=build["encoder"], encoder_weights=None, classes=21)).eval()
        return m, _image(256), None
    if library == "torchaudio":
        import torch
        import torchaudio.models

        m = _on_meta(getattr(torchaudio.models, build["name"])).eval()
        return m, (torch.zeros(1, 16000, device="meta"),), None
    if library == "transformers":
        from nar_plugin.corpus.transformers_source import (
            _quiet,
            corpus_dummy_inputs,
            make_config,
            model_class,
        )
        from nar_plugin.corpus.transformers_source import (
            build_model as hf_build,
        )

        _quiet()
        mt = build["model_type"]
        cfg = make_config(mt, build.get("overrides"))
        m = hf_build(cfg, model_class(mt))
        return m, (), corpus_dummy_inputs(m)
    raise ValueError(f"unknown library {library!r}; expected one of {LIBRARIES}")


def explicit_counts() -> dict[str, int]:
    """Sizes of the hand-written tables (for the docs)."""
    return {"explicit": sum(len(v) for v in EXPLICIT.values()), "rules": sum(len(v) for v in RULES.values()),
            "vit_pytorch": len(VIT_PYTORCH), "open_clip": len(OPEN_CLIP), "smp": len(SMP),
            "transformers": len(TRANSFORMERS), "torchaudio": len(TORCHAUDIO)}

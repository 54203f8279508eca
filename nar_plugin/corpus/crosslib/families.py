"""Mapping rules: a library's model name -> (canonical family, fine label).

A **family** is one architecture design (``densenet``, ``resnet``, ``vit``, ``mobilenet_v2``...);
all its depths, widths and variants share it, whichever library implements them. A **fine
label** names one configuration (``densenet121``, ``vit_b_16``, ``mobilenet_v2_100``); two
models with the same fine label are meant to be *the same network* written by different people
(up to padding style, a classifier head's width and similar details the library chose).

Rules per library, tried in order: an explicit table for irregular names first, then regular
expressions whose fine label is a template of the match groups (``{1}``), optionally passed
through a normaliser (width suffixes ``w3d4`` -> ``075``, RegNet FLOP names -> timm's ``002``).
A name no rule matches is not in the benchmark. Fine labels follow timm's/torchvision's naming.
Names that only differ by input resolution or dataset head are dropped by
:func:`nar_plugin.corpus.crosslib.manifest.generate_manifest`, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["EXPLICIT", "PYTORCHCV_WIDTH", "REGNET_FLOPS", "RULES", "SAME_FAMILY", "SAME_NETWORK", "Rule", "map_name",
           "same_network"]


@dataclass(frozen=True)
class Rule:
    """``pattern`` (full match) -> ``family`` and ``fine`` (``str.format`` of the groups, 1-based)."""

    pattern: str
    family: str
    fine: str
    normalise: Callable[[str], str] | None = None

    def apply(self, name: str) -> tuple[str, str] | None:
        m = re.fullmatch(self.pattern, name)
        if m is None:
            return None
        fine = self.fine.format(None, *("" if g is None else g for g in m.groups()))
        return self.family, (self.normalise(fine) if self.normalise else fine)


#: pytorchcv width suffixes -> timm's percentage suffix.
PYTORCHCV_WIDTH: dict[str, str] = {"w1": "100", "w3d4": "075", "wd2": "050", "wd4": "025", "w5d4": "125",
                                   "w7d20": "035", "w3d2": "150", "w2": "200"}
#: torchvision / pytorchcv RegNet size names -> timm's three-digit code.
REGNET_FLOPS: dict[str, str] = {"200mf": "002", "400mf": "004", "600mf": "006", "800mf": "008",
                                "1_6gf": "016", "3_2gf": "032", "4gf": "040", "6_4gf": "064",
                                "8gf": "080", "12gf": "120", "16gf": "160", "32gf": "320", "128gf": "1280"}
_SIZE = {"tiny": "ti", "small": "s", "base": "b", "large": "l", "huge": "h", "giant": "g", "medium": "m"}


def _width(fine: str) -> str:
    for k, v in sorted(PYTORCHCV_WIDTH.items(), key=lambda kv: -len(kv[0])):
        if fine.endswith("_" + k):
            return fine[: -len(k)] + v
    return fine


def _size(fine: str) -> str:
    """``vit_base_16`` -> ``vit_b_16``; ``deit_tiny_16`` -> ``deit_ti_16`` (timm words -> letters)."""
    return "_".join(_SIZE.get(p, p) for p in fine.split("_"))


def _swin_size(fine: str) -> str:
    """``swin_tiny`` -> ``swin_t`` (torchvision's letters; its ``t`` is timm's ``tiny``)."""
    return "_".join({"tiny": "t"}.get(p, _SIZE.get(p, p)) for p in fine.split("_"))


_SHUFFLE = {"wd2": "x0_5", "w1": "x1_0", "w3d2": "x1_5", "w2": "x2_0"}
_TV_MNAS = {"0_5": "050", "0_75": "075", "1_0": "100", "1_3": "130"}

#: Irregular names: library -> name -> (family, fine).
EXPLICIT: dict[str, dict[str, tuple[str, str]]] = {
    "pytorchcv": {
        "alexnet": ("alexnet", "alexnet"), "alexnetb": ("alexnet", "alexnet"),
        "squeezenet_v1_0": ("squeezenet", "squeezenet1_0"), "squeezenet_v1_1": ("squeezenet", "squeezenet1_1"),
        "bninception": ("bninception", "bninception"),
        "inceptionv3": ("inception_v3", "inception_v3"), "inceptionv4": ("inception_v4", "inception_v4"),
        "inceptionresnetv1": ("inception_resnet", "inception_resnet_v1"),
        "inceptionresnetv2": ("inception_resnet", "inception_resnet_v2"),
        "xception": ("xception", "xception"),
        "nasnet_6a4032": ("nasnet", "nasnetalarge"), "nasnet_4a1056": ("nasnet", "nasnetamobile"),
        "pnasnet5large": ("pnasnet", "pnasnet5large"), "polynet": ("polynet", "polynet"),
        # MnasNet-B1 is the search result without SE (torchvision mnasnet1_0, timm mnasnet_100),
        # MnasNet-A1 the one with SE (timm semnasnet_100)
        "mnasnet_b1": ("mnasnet", "mnasnet_100"), "mnasnet_a1": ("mnasnet", "semnasnet_100"),
        "mnasnet_small": ("mnasnet", "mnasnet_small"),
        "spnasnet": ("spnasnet", "spnasnet_100"), "fbnet_cb": ("fbnet", "fbnetc_100"),
        "ghostnet": ("ghostnet", "ghostnet_100"),
        "efficientnet_edge_small_b": ("efficientnet", "efficientnet_es"),
        "efficientnet_edge_medium_b": ("efficientnet", "efficientnet_em"),
        "efficientnet_edge_large_b": ("efficientnet", "efficientnet_el"),
        "hrnet_w18_small_v1": ("hrnet", "hrnet_w18_small"), "hrnet_w18_small_v2": ("hrnet", "hrnet_w18_small_v2"),
        "wrn50_2": ("wide_resnet", "wide_resnet50_2"),
        "resnestabc14": ("resnest", "resnest14"), "resnestabc26": ("resnest", "resnest26"),
        # SKNet-50 of the paper is an SK-ResNeXt-50 (32 groups), timm's skresnext50_32x4d
        "sknet50": ("sknet", "skresnext50_32x4d"),
        "unet_cityscapes": ("unet", "unet"), "linknet_cityscapes": ("linknet", "linknet_resnet18"),
        "dla46c": ("dla", "dla46_c"), "dla46xc": ("dla", "dla46x_c"), "dla60xc": ("dla", "dla60x_c"),
        "darknet53": ("darknet", "darknet53"), "darknet19": ("darknet", "darknet19"),
        "darknet_ref": ("darknet", "darknet_ref"), "darknet_tiny": ("darknet", "darknet_tiny"),
    },
    "timm": {
        "legacy_xception": ("xception", "xception"),
        "senet154": ("senet", "senet154"), "legacy_senet154": ("senet", "senet154"),
        "inception_v3": ("inception_v3", "inception_v3"), "inception_v4": ("inception_v4", "inception_v4"),
        "inception_resnet_v2": ("inception_resnet", "inception_resnet_v2"),
        "nasnetalarge": ("nasnet", "nasnetalarge"), "pnasnet5large": ("pnasnet", "pnasnet5large"),
        "spnasnet_100": ("spnasnet", "spnasnet_100"), "fbnetc_100": ("fbnet", "fbnetc_100"),
        "skresnext50_32x4d": ("sknet", "skresnext50_32x4d"),
        "vovnet39a": ("vovnet", "vovnet39"), "vovnet57a": ("vovnet", "vovnet57"),
        "darknet53": ("darknet", "darknet53"), "darknet17": ("darknet", "darknet17"),
        "darknet21": ("darknet", "darknet21"),
        "mobilenetv2_110d": ("mobilenet_v2", "mobilenet_v2_110d"),
        "mobilenetv2_120d": ("mobilenet_v2", "mobilenet_v2_120d"),
        "resnext50d_32x4d": ("resnext", "resnext50d_32x4d"),
        "resnest50d_4s2x40d": ("resnest", "resnest50_4s2x40d"),
        "resnest50d_1s4x24d": ("resnest", "resnest50_1s4x24d"),
        # timm's torchvision-compatible RegNets (other group widths than pycls')
        "regnetx_004_tv": ("regnet", "regnetx_004_tv"), "regnety_008_tv": ("regnet", "regnety_008_tv"),
        "regnety_080_tv": ("regnet", "regnety_080_tv"),
        "resnet50_clip": ("resnet", "clip_rn50"), "resnet101_clip": ("resnet", "clip_rn101"),
        "resnet50x4_clip": ("resnet", "clip_rn50x4"), "resnet50x16_clip": ("resnet", "clip_rn50x16"),
        "resnet50x64_clip": ("resnet", "clip_rn50x64"),
    },
    "torchvision": {
        "alexnet": ("alexnet", "alexnet"), "inception_v3": ("inception_v3", "inception_v3"),
        "squeezenet1_0": ("squeezenet", "squeezenet1_0"), "squeezenet1_1": ("squeezenet", "squeezenet1_1"),
        "mobilenet_v2": ("mobilenet_v2", "mobilenet_v2_100"),
        "mobilenet_v3_large": ("mobilenet_v3", "mobilenet_v3_large_100"),
        "mobilenet_v3_small": ("mobilenet_v3", "mobilenet_v3_small_100"),
        "maxvit_t": ("maxvit", "maxvit_tiny"),
        # torchvision follows the "torchvision" RegNet widths where timm has a *_tv twin
        "regnet_x_400mf": ("regnet", "regnetx_004_tv"), "regnet_y_800mf": ("regnet", "regnety_008_tv"),
        "regnet_y_8gf": ("regnet", "regnety_080_tv"),
    },
    "pretrainedmodels": {
        "fbresnet152": ("resnet", "resnet152"), "cafferesnet101": ("resnet", "resnet101"),
        "bninception": ("bninception", "bninception"), "inceptionv4": ("inception_v4", "inception_v4"),
        "inceptionresnetv2": ("inception_resnet", "inception_resnet_v2"), "xception": ("xception", "xception"),
        "nasnetalarge": ("nasnet", "nasnetalarge"), "nasnetamobile": ("nasnet", "nasnetamobile"),
        "pnasnet5large": ("pnasnet", "pnasnet5large"), "polynet": ("polynet", "polynet"),
        "senet154": ("senet", "senet154"),
        "resnext101_32x4d": ("resnext", "resnext101_32x4d"), "resnext101_64x4d": ("resnext", "resnext101_64x4d"),
    },
    "efficientnet_pytorch": {"efficientnet-l2": ("efficientnet", "efficientnet_l2")},
}

_RESNET_ROOTS = "resnet|preresnet|seresnet"
#: Regular rules per library (after :data:`EXPLICIT`).
# One table per library: the rows are alike in shape on purpose (data, not logic; see
# docs/architecture.md, "Layout decisions").
RULES: dict[str, Sequence[Rule]] = {
    "pytorchcv": (
        Rule(r"resnet(\d+)b?", "resnet", "resnet{1}"),
        Rule(r"resnet(\d+)(bn)?_cifar10", "resnet", "resnet{1}{2}_cifar"),
        Rule(r"resnet18_(w3d4|wd2|wd4)", "resnet", "resnet18_{1}", _width),
        Rule(r"resneta(\d+)b?", "resnet", "resneta{1}"),
        Rule(r"resnetbc(\d+)b", "resnet", "resnetbc{1}"),
        Rule(r"preresnet(\d+)b?", "preresnet", "preresnet{1}"),
        Rule(r"preresnet(\d+)(bn)?_cifar10", "preresnet", "preresnet{1}{2}_cifar"),
        Rule(r"preresnet18_(w3d4|wd2|wd4)", "preresnet", "preresnet18_{1}", _width),
        Rule(r"preresnetbc(\d+)b", "preresnet", "preresnetbc{1}"),
        Rule(r"resnext(\d+)_(\d+x\d+d)", "resnext", "resnext{1}_{2}"),
        Rule(r"resnext(\d+)_(\d+x\d+d)_cifar10", "resnext", "resnext{1}_{2}_cifar"),
        Rule(r"seresnet(\d+)b?", "seresnet", "seresnet{1}"),
        Rule(r"seresnet(\d+)(bn)?_cifar10", "seresnet", "seresnet{1}{2}_cifar"),
        Rule(r"seresnetbc(\d+)b", "seresnet", "seresnetbc{1}"),
        Rule(r"seresnext(\d+)_(\d+x\d+d)", "seresnext", "seresnext{1}_{2}"),
        Rule(r"senet(\d+)", "senet", "senet{1}"),
        Rule(r"wrn(\d+)_(\d+)_cifar10", "wide_resnet", "wrn{1}_{2}_cifar"),
        Rule(r"resnesta(\d+)", "resnest", "resnest{1}"),
        Rule(r"sknet(\d+)", "sknet", "sknet{1}"),
        Rule(r"densenet(\d+)", "densenet", "densenet{1}"),
        Rule(r"densenet(\d+)_k(\d+)(_bc)?_cifar10", "densenet", "densenet{1}_k{2}{3}_cifar"),
        Rule(r"vgg(\d+)", "vgg", "vgg{1}"),
        Rule(r"bn_vgg(\d+)b?", "vgg", "vgg{1}_bn"),
        Rule(r"dpn(\d+b?)", "dpn", "dpn{1}"),
        Rule(r"mobilenet_(w1|w3d4|wd2|wd4)", "mobilenet_v1", "mobilenet_v1_{1}", _width),
        Rule(r"mobilenetb_(w1|w3d4|wd2|wd4)", "mobilenet_v1", "mobilenet_v1b_{1}", _width),
        Rule(r"mobilenetv2_(w1|w3d4|wd2|wd4)", "mobilenet_v2", "mobilenet_v2_{1}", _width),
        Rule(r"mobilenetv2b_(w1|w3d4|wd2|wd4)", "mobilenet_v2", "mobilenet_v2b_{1}", _width),
        Rule(r"mobilenetv3_(large|small)_(w1|w3d4|wd2|w5d4|w7d20)", "mobilenet_v3", "mobilenet_v3_{1}_{2}", _width),
        Rule(r"shufflenetv2_(wd2|w1|w3d2|w2)", "shufflenet_v2", "shufflenet_v2_{1}",
             lambda f: "shufflenet_v2_" + _SHUFFLE[f.rsplit("_", 1)[1]]),
        Rule(r"shufflenetv2b_(wd2|w1|w3d2|w2)", "shufflenet_v2", "shufflenet_v2b_{1}",
             lambda f: "shufflenet_v2b_" + _SHUFFLE[f.rsplit("_", 1)[1]]),
        Rule(r"efficientnet_b(\d)[bc]?", "efficientnet", "efficientnet_b{1}"),
        Rule(r"mixnet_([sml])", "mixnet", "mixnet_{1}"),
        Rule(r"regnet([xy])(\d{3})", "regnet", "regnet{1}_{2}"),
        Rule(r"dla(\d+x?\d?)", "dla", "dla{1}"),
        Rule(r"hrnetv2_w(\d+)", "hrnet", "hrnet_w{1}"),
        Rule(r"selecsls(\d+b?)", "selecsls", "selecsls{1}"),
        Rule(r"vovnet(\d+s?)", "vovnet", "vovnet{1}"),
        Rule(r"tresnet_(m|l|xl)", "tresnet", "tresnet_{1}"),
        Rule(r"deeplabv3_resnetd(\d+)b_voc", "deeplabv3", "deeplabv3_resnet{1}"),
        Rule(r"fcn8sd_resnetd(\d+)b_voc", "fcn", "fcn8s_resnet{1}"),
        Rule(r"pspnet_resnetd(\d+)b_voc", "pspnet", "pspnet_resnet{1}"),
    ),
    "timm": (
        Rule(r"resnet(\d+)", "resnet", "resnet{1}"),
        Rule(r"resnet(\d+)([cdst])", "resnet", "resnet{1}{2}"),
        Rule(r"resnetv2_(\d+)(d?)", "preresnet", "preresnet{1}{2}"),
        Rule(r"resnetv2_(\d+)x(\d+)_bit", "preresnet", "bit_{1}x{2}"),
        Rule(r"resnext(\d+)_(\d+x\d+d)", "resnext", "resnext{1}_{2}"),
        Rule(r"wide_resnet(\d+)_2", "wide_resnet", "wide_resnet{1}_2"),
        Rule(r"(?:legacy_)?seresnet(\d+)", "seresnet", "seresnet{1}"),
        Rule(r"seresnet(\d+)d", "seresnet", "seresnet{1}d"),
        Rule(r"(?:legacy_)?seresnext(\d+)_(\d+x\d+d)", "seresnext", "seresnext{1}_{2}"),
        Rule(r"seresnext(\d+)([dt])_(\d+x\d+d)", "seresnext", "seresnext{1}{2}_{3}"),
        Rule(r"resnest(\d+)[de]", "resnest", "resnest{1}"),
        Rule(r"skresnet(\d+d?)", "sknet", "skresnet{1}"),
        Rule(r"densenet(\d+d?)", "densenet", "densenet{1}"),
        Rule(r"vgg(\d+)(_bn)?", "vgg", "vgg{1}{2}"),
        Rule(r"xception(\d+p?)", "xception", "xception{1}"),
        Rule(r"dpn(\d+b?)", "dpn", "dpn{1}"),
        Rule(r"mobilenetv1_(\d+h?)", "mobilenet_v1", "mobilenet_v1_{1}"),
        Rule(r"mobilenetv2_(\d+)", "mobilenet_v2", "mobilenet_v2_{1}"),
        Rule(r"mobilenetv3_(large|small)_(\d+)", "mobilenet_v3", "mobilenet_v3_{1}_{2}"),
        Rule(r"mnasnet_(\d+|small)", "mnasnet", "mnasnet_{1}"),
        Rule(r"semnasnet_(\d+)", "mnasnet", "semnasnet_{1}"),
        Rule(r"(?:tf_)?efficientnet_(b\d|es|em|el|l2|lite\d)", "efficientnet", "efficientnet_{1}"),
        Rule(r"(?:tf_)?efficientnetv2_(s|m|l|xl)", "efficientnet_v2", "efficientnet_v2_{1}"),
        Rule(r"(?:tf_)?mixnet_(s|m|l|xl)", "mixnet", "mixnet_{1}"),
        Rule(r"ghostnet_(\d+)", "ghostnet", "ghostnet_{1}"),
        Rule(r"regnet([xy])_(\d{3})", "regnet", "regnet{1}_{2}"),
        Rule(r"dla(\d+)", "dla", "dla{1}"),
        Rule(r"dla(\d+)(x\d?)(_c)?", "dla", "dla{1}{2}{3}"),
        Rule(r"dla(\d+)_c", "dla", "dla{1}_c"),
        Rule(r"hrnet_w(\d+)(_small(?:_v2)?)?", "hrnet", "hrnet_w{1}{2}"),
        Rule(r"selecsls(\d+b?)", "selecsls", "selecsls{1}"),
        Rule(r"ese_vovnet(\d+b(?:_dw)?)", "vovnet", "ese_vovnet{1}"),
        Rule(r"tresnet_(m|l|xl)", "tresnet", "tresnet_{1}"),
        Rule(r"vit_(tiny|small|base|large|huge)_patch(\d+)_(\d+)", "vit", "vit_{1}_{2}", _size),
        Rule(r"vit_(base|large|huge)_patch(\d+)_clip_(\d+)", "vit", "clip_vit_{1}_{2}", _size),
        Rule(r"deit_(tiny|small|base)_patch16_\d+", "deit", "deit_{1}_16", _size),
        Rule(r"deit_(tiny|small|base)_distilled_patch16_\d+", "deit", "deit_{1}_16_distilled", _size),
        Rule(r"deit3_(small|medium|base|large|huge)_patch(\d+)_\d+", "deit", "deit3_{1}_{2}", _size),
        Rule(r"beit_(base|large)_patch16_\d+", "beit", "beit_{1}_16", _size),
        Rule(r"beitv2_(base|large)_patch16_\d+", "beit", "beitv2_{1}_16", _size),
        Rule(r"swin_(tiny|small|base|large)_patch4_window\d+_\d+", "swin", "swin_{1}", _swin_size),
        Rule(r"swinv2_(tiny|small|base)_window(8|16)_256", "swinv2", "swinv2_{1}_w{2}", _swin_size),
        Rule(r"convnext_(atto|femto|pico|nano|tiny|small|base|large|xlarge|xxlarge)", "convnext", "convnext_{1}"),
        Rule(r"convnextv2_(atto|femto|pico|nano|tiny|small|base|large|huge)", "convnextv2", "convnextv2_{1}"),
        Rule(r"levit_(128s|128|192|256|384)", "levit", "levit_{1}"),
        Rule(r"mobilevit_(xxs|xs|s)", "mobilevit", "mobilevit_{1}"),
        Rule(r"mobilevitv2_(\d+)", "mobilevitv2", "mobilevitv2_{1}"),
        Rule(r"cait_(xxs24|xxs36|xs24|s24|s36|m36|m48)_\d+", "cait", "cait_{1}"),
        Rule(r"crossvit_(\w+?)_(?:240|408)", "crossvit", "crossvit_{1}"),
        Rule(r"pit_(ti|xs|s|b)(_distilled)?_224", "pit", "pit_{1}{2}"),
        Rule(r"xcit_(nano|tiny|small|medium|large)_(12|24)_p(8|16)_\d+", "xcit", "xcit_{1}_{2}_p{3}"),
        Rule(r"nest_(tiny|small|base)", "nest", "nest_{1}"),
        Rule(r"twins_(svt|pcpvt)_(small|base|large)", "twins", "twins_{1}_{2}"),
        Rule(r"maxvit_(tiny|small|base|large|xlarge)_tf_\d+", "maxvit", "maxvit_{1}"),
        Rule(r"poolformer_(s12|s24|s36|m36|m48)", "poolformer", "poolformer_{1}"),
        Rule(r"pvt_v2_b(\d)(_li)?", "pvt_v2", "pvt_v2_b{1}{2}"),
        Rule(r"focalnet_(tiny|small|base)_(srf|lrf)", "focalnet", "focalnet_{1}_{2}"),
        Rule(r"hiera_(tiny|small|base|base_plus|large|huge)_224", "hiera", "hiera_{1}"),
    ),
    "torchvision": (
        Rule(r"resnet(\d+)", "resnet", "resnet{1}"),
        Rule(r"resnext(\d+)_(\d+x\d+d)", "resnext", "resnext{1}_{2}"),
        Rule(r"wide_resnet(\d+)_2", "wide_resnet", "wide_resnet{1}_2"),
        Rule(r"densenet(\d+)", "densenet", "densenet{1}"),
        Rule(r"vgg(\d+)(_bn)?", "vgg", "vgg{1}{2}"),
        Rule(r"shufflenet_v2_(x\d_\d)", "shufflenet_v2", "shufflenet_v2_{1}"),
        Rule(r"mnasnet(\d_\d+)", "mnasnet", "mnasnet_{1}", lambda f: "mnasnet_" + _TV_MNAS[f.split("_", 1)[1]]),
        Rule(r"efficientnet_(b\d)", "efficientnet", "efficientnet_{1}"),
        Rule(r"efficientnet_v2_(s|m|l)", "efficientnet_v2", "efficientnet_v2_{1}"),
        Rule(r"regnet_([xy])_(\w+)", "regnet", "{1} {2}",
             lambda f: f"regnet{f.split()[0]}_{REGNET_FLOPS[f.split()[1]]}"),
        Rule(r"vit_([blh])_(\d+)", "vit", "vit_{1}_{2}"),
        Rule(r"swin_([tsb])", "swin", "swin_{1}"),
        Rule(r"swin_v2_([tsb])", "swinv2", "swinv2_{1}_w8"),
        Rule(r"convnext_(tiny|small|base|large)", "convnext", "convnext_{1}"),
        Rule(r"deeplabv3_(resnet50|resnet101|mobilenet_v3_large)", "deeplabv3", "deeplabv3_{1}"),
        Rule(r"fcn_(resnet50|resnet101)", "fcn", "fcn_{1}"),
    ),
    "pretrainedmodels": (
        Rule(r"dpn(\d+b?)", "dpn", "dpn{1}"),
        Rule(r"se_resnet(\d+)", "seresnet", "seresnet{1}"),
        Rule(r"se_resnext(\d+)_(\d+x\d+d)", "seresnext", "seresnext{1}_{2}"),
    ),
    "efficientnet_pytorch": (
        Rule(r"efficientnet-(b\d)", "efficientnet", "efficientnet_{1}"),
    ),
}

#: Labels named after a training recipe whose network is another label's, unchanged (the
#: papers say so, and the libraries build both with one constructor and the same arguments:
#: equal graph hash and parameter count in the benchmark). A fine label names a network, so these
#: are that network: fine label -> (family, fine label of the network).
#:
#: * DeiT (Touvron et al. 2021, Table 1): DeiT-Ti/S/B are ViT-Ti/S/B; timm builds
#:   ``deit_base_patch16_224`` and ``vit_base_patch16_224`` with the same ``VisionTransformer``
#:   arguments. The *distilled* DeiTs add a token and a head and stay ``deit``.
#: * HuBERT (Hsu et al. 2021, Sec. IV-C) uses the wav2vec 2.0 BASE and LARGE (LV-60k, layer norm
#:   first) networks; torchaudio's ``hubert_base`` / ``hubert_large`` call its ``wav2vec2_model``
#:   with their arguments. X-LARGE has no wav2vec 2.0 twin: it keeps its name, in the wav2vec2
#:   family (:data:`SAME_FAMILY`).
#: * XLS-R 300M (Babu et al. 2021) is the wav2vec 2.0 LARGE (LV-60k) network.
#: * BEiT v2 (Peng et al. 2022) keeps BEiT's ViT backbone; timm builds both with ``Beit``.
SAME_NETWORK: dict[str, tuple[str, str]] = {
    "deit_ti_16": ("vit", "vit_ti_16"), "deit_s_16": ("vit", "vit_s_16"), "deit_b_16": ("vit", "vit_b_16"),
    "hubert_base": ("wav2vec2", "wav2vec2_base"), "hubert_large": ("wav2vec2", "wav2vec2_large_lv60k"),
    "wav2vec2_xlsr_300m": ("wav2vec2", "wav2vec2_large_lv60k"),
    "beitv2_b_16": ("beit", "beit_b_16"), "beitv2_l_16": ("beit", "beit_l_16"),
}
#: Families that are another family's design (HuBERT is wav2vec 2.0 trained another way).
SAME_FAMILY: dict[str, str] = {"hubert": "wav2vec2"}


def same_network(family: str, fine: str) -> tuple[str, str]:
    """``(family, fine)`` of the network a label names (:data:`SAME_NETWORK`, :data:`SAME_FAMILY`).

    Example:
        >>> same_network("hubert", "hubert_base"), same_network("hubert", "hubert_xlarge")
        (('wav2vec2', 'wav2vec2_base'), ('wav2vec2', 'hubert_xlarge'))
    """
    if fine in SAME_NETWORK:
        return SAME_NETWORK[fine]
    return SAME_FAMILY.get(family, family), fine


def map_name(library: str, name: str, explicit: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
             rules: Mapping[str, Sequence[Rule]] | None = None) -> tuple[str, str] | None:
    """``(family, fine)`` of ``name`` in ``library``, or ``None`` when it is not in the benchmark.

    Example:
        >>> map_name("pytorchcv", "mobilenetv2_w3d4")
        ('mobilenet_v2', 'mobilenet_v2_075')
        >>> map_name("torchvision", "regnet_y_1_6gf")
        ('regnet', 'regnety_016')
    """
    table = (explicit if explicit is not None else EXPLICIT).get(library, {})
    if name in table:
        return same_network(*table[name])
    for rule in (rules if rules is not None else RULES).get(library, ()):
        hit = rule.apply(name)
        if hit is not None:
            return same_network(*hit)
    return None

"""Corpus source ``torchvision``: ``torchvision.models.list_models()`` built with ``weights=None``.

Family = the module under ``torchvision.models`` that defines the builder: ``resnet``, ``vgg``,
``efficientnet``, ``segmentation.fcn``, ``video.resnet``, ``detection.retinanet``... (Faster,
Mask and Keypoint R-CNN are merged into ``detection.rcnn``, see :func:`detection_trunk`;
``inception``, ``mnasnet`` and ``mobilenetv2`` take the timm module name of the identical timm
architecture, see :data:`TIMM_ALIASES`). Plain
classification families use the same names as timm's modules where the architecture is the same
(``resnet``, ``vgg``, ``convnext``, ``vision_transformer``, ``swin_transformer``...), so they
join those families. ``quantization.*`` builders are recorded as skipped: with
``quantize=False`` they are the float architectures again plus quant stubs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from nar_plugin.corpus.options import CorpusOptions
from nar_plugin.corpus.pool import SkipItem, Task
from nar_plugin.graph import ArchGraph

__all__ = ["plan", "build_task", "warm_up", "torchvision_family"]

NAME = "torchvision"


def warm_up() -> None:
    import torchvision  # noqa: F401

    from nar_plugin.extract import torch_module  # noqa: F401


#: Faster/Mask/Keypoint R-CNN share backbone, FPN and RPN head, which is all that is extracted of
#: a detector (see :func:`detection_trunk`), so they form one family.
RCNN_FAMILY = "detection.rcnn"
_RCNN = frozenset({"detection.faster_rcnn", "detection.mask_rcnn", "detection.keypoint_rcnn"})
#: torchvision modules whose models are graph-identical to timm models registered in another
#: timm module: they take timm's module name, so one architecture never carries two labels
#: (timm ``inception_v3`` == torchvision ``inception_v3``; timm builds MNASNet and MobileNetV2 in
#: ``efficientnet``: ``mnasnet_100`` == ``mnasnet1_0``, ``mobilenetv2_100`` == ``mobilenet_v2``).
TIMM_ALIASES: dict[str, str] = {"inception": "inception_v3", "mnasnet": "efficientnet",
                                "mobilenetv2": "efficientnet"}


def torchvision_family(name: str) -> str:
    """``torchvision.models.segmentation.fcn`` -> ``segmentation.fcn``; ``...models.vgg`` -> ``vgg``."""
    import torchvision

    mod = torchvision.models.get_model_builder(name).__module__.removeprefix("torchvision.models.")
    return RCNN_FAMILY if mod in _RCNN else TIMM_ALIASES.get(mod, mod)


def plan(records: Mapping[str, Mapping[str, Any]], options: CorpusOptions) -> list[Task]:
    import torchvision

    return [Task(f"tv:{n}", NAME, n, torchvision_family(n), {"name": n})
            for n in options.select(NAME, sorted(torchvision.models.list_models()))]


@contextlib.contextmanager
def _params_on_meta() -> Iterator[None]:
    """Move every parameter/buffer to meta as it is registered.

    For builders that compute with tensors while constructing (``regnet``'s block widths use
    ``.item()``), which ``with torch.device("meta")`` breaks. Each tensor exists on the CPU only
    until its module registers it, so no model's weights are held at once. Scoped to this
    context and to the corpus worker process.
    """
    import torch.nn as nn

    reg_p, reg_b = nn.Module.register_parameter, nn.Module.register_buffer

    def register_parameter(self: Any, name: str, param: Any) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        reg_p(self, name, param)

    def register_buffer(self: Any, name: str, tensor: Any, persistent: bool = True) -> None:
        if tensor is not None and not tensor.is_meta:
            tensor = tensor.to("meta")
        reg_b(self, name, tensor, persistent=persistent)

    nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = reg_p  # type: ignore[method-assign]
        nn.Module.register_buffer = reg_b  # type: ignore[method-assign]


def build_meta(name: str) -> Any:
    """The model on meta with ``weights=None`` (and no backbone weights), eval mode."""
    import torch
    import torchvision

    fam = torchvision_family(name)
    kwargs: dict[str, Any] = {"weights": None}
    if fam.split(".")[0] in ("detection", "segmentation"):
        kwargs["weights_backbone"] = None  # else the builder downloads ImageNet backbone weights
    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, **kwargs)
    except NotImplementedError as e:
        if "meta" not in str(e):
            raise
        with _params_on_meta():
            model = torchvision.models.get_model(name, **kwargs)
    return model.eval()


def example_inputs(name: str, family: str) -> tuple[Any, ...] | None:
    """Inputs where :func:`~nar_plugin.extract.torch_module.infer_example_inputs` cannot guess."""
    import torch

    top = family.split(".")[0]
    if top == "optical_flow":  # RAFT: two frames, sides divisible by 8
        return (torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 128, 128))
    if top == "video":  # clips of 16 frames at 224 (MViT's positional embedding needs exactly this)
        return (torch.zeros(1, 3, 16, 224, 224),)
    if top == "detection":  # the trunk (see detection_trunk) takes a normalised batch
        return (torch.zeros(1, 3, 320, 320),)
    return None


def detection_trunk(model: Any) -> Any:
    """Backbone (+FPN) and dense heads of a torchvision detector, as one module.

    A detector's full forward cannot run on meta tensors in either tracer: anchor matching,
    NMS and the RoI heads' level assignment are data-dependent (``nonzero``). Everything before
    that -- the backbone, the FPN and the dense heads (RPN head of the R-CNNs, the class/box
    heads of RetinaNet, FCOS, SSD) -- is static and is what this module runs. The R-CNNs' RoI
    heads are therefore not in the graph; ``info["extracted"]`` records it.
    """
    import torch.nn as nn

    class DetectionTrunk(nn.Module):
        def __init__(self, det: Any) -> None:
            super().__init__()
            self.backbone = det.backbone
            self.head = det.rpn.head if hasattr(det, "rpn") else det.head

        def forward(self, x: Any) -> Any:
            feats = self.backbone(x)
            feats = list(feats.values()) if isinstance(feats, dict) else [feats]
            return self.head(feats)

    return DetectionTrunk(model).eval()


def build_task(task: Task) -> tuple[ArchGraph, dict[str, Any]]:
    from nar_plugin.extract.torch_module import graph_from_module

    name = task.spec["name"]
    if task.family.startswith("quantization."):
        raise SkipItem(f"quantizable copy of torchvision.models.{task.family.split('.', 1)[1]}")
    model = build_meta(name)
    info: dict[str, Any] = {}
    if task.family.startswith("detection."):
        model = detection_trunk(model)
        info["extracted"] = "backbone + dense heads (RoI heads / postprocessing are data-dependent)"
    g = graph_from_module(model, example_inputs(name, task.family),
                          metadata={"name": name, "source_kind": "torchvision", "family": task.family})
    return g, {"tracer": g.metadata.get("tracer", "export"), **info}

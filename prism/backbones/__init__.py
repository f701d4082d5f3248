"""prism's backbones, one file per family: ``small_cnn`` (trained from scratch on small images) and ``bninception``
(the PRISM authors' ImageNet network) live here; torchvision's resnets, ``efficientnet_lite0`` (offline ImageNet
weights) and any timm model (``timm:NAME``) come from ``noisekit.backbones``, which Small Cluster's features share.

Each maps (n, 3, H, W) normalised float images to (n, dim) pooled features and says the normalisation (mean, std)
and input size its weights were trained with (:class:`noisekit.backbones.Trunk`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from noisekit.errors import NoisekitError

if TYPE_CHECKING:  # noisekit.backbones imports torch; the config checks must stay light
    from noisekit.backbones import Trunk

OWN = ("small_cnn", "bninception")
SHARED = ("resnet18", "resnet50", "efficientnet_lite0")
ARCHS = ("auto", *OWN, *SHARED, "timm:NAME")
DEFAULT_SIZE = 224  # the ImageNet side of the resnets and BN-Inception


def check_arch(arch: str) -> str:
    """``arch`` if prism can build it, else a one-line error; a timm name is looked up in the installed timm."""
    if arch in ARCHS[:-1]:
        return arch
    if arch.startswith("timm:") and len(arch) > len("timm:"):
        import timm

        name = arch.removeprefix("timm:")
        if not timm.is_model(name):
            raise NoisekitError(f"--arch {arch}: timm {timm.__version__} has no model {name!r} (timm.list_models())")
        return arch
    raise NoisekitError(f"--arch must be one of {', '.join(ARCHS)}, got {arch!r}")


def input_size(arch: str) -> int:
    """The image side ``arch``'s pretrained weights were trained at (timm's data config for timm models)."""
    if arch == "efficientnet_lite0" or arch.startswith("timm:"):
        from noisekit.backbones import timm_config

        cfg = timm_config(arch)  # check_arch has refused a name timm does not know
        return cfg.input_size[-1] if cfg and cfg.input_size else DEFAULT_SIZE
    return DEFAULT_SIZE


def build_trunk(arch: str, weights: str, pooling: str = "avg") -> Trunk:
    """The backbone ``arch`` with ``weights`` (imagenet, random or a state-dict FILE) and its normalisation; the
    caller seeds the random state."""
    from noisekit.backbones import Trunk, trunk  # noqa: F811 (the runtime import of the name typed above)
    from noisekit.backbones.weights import IMAGENET_MEAN, IMAGENET_STD

    if arch == "small_cnn":
        from prism.backbones.small_cnn import SmallCNN

        module = SmallCNN(pooling=pooling)
        return Trunk(module, module.out_dim, IMAGENET_MEAN, IMAGENET_STD, 28)
    if arch == "bninception":
        from prism.backbones.bninception import bninception_trunk

        module = bninception_trunk(weights, pooling)
        return Trunk(module, module.out_dim, IMAGENET_MEAN, IMAGENET_STD, DEFAULT_SIZE)
    return trunk(arch, weights, pooling=pooling)

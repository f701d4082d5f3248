"""Any timm model as a backbone (``timm:NAME``): created without its classifier (``num_classes=0``) and with the
requested global pooling, so it maps images to pooled features.

``--weights imagenet`` takes the model's default pretrained tag (ImageNet for most; e.g. DINO for
``vit_small_patch16_224.dino``) from the usual Hugging Face cache, downloaded into it when online. Offline
(NOISEKIT_OFFLINE=1 or HF_HUB_OFFLINE=1) a model whose weights are not cached is a one-line error naming the model
and the cache folder.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from noisekit.backbones.weights import load_state_dict_file, offline
from noisekit.errors import NoisekitError


def timm_model(name: str, weights: str, *, pooling: str = "avg") -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise NoisekitError(f"--arch timm:{name}: timm {timm.__version__} has no model of that name (timm.list_models)")
    pool = {"avg": "avg", "max": "max"}[pooling]
    if weights != "imagenet":
        model = timm.create_model(name, pretrained=False, num_classes=0, global_pool=pool)
        if weights != "random":
            state = load_state_dict_file(Path(weights))
            try:
                model.load_state_dict({k: v for k, v in state.items() if not k.startswith(_head(model))}, strict=True)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0][:120]
                raise NoisekitError(f"--weights {weights}: not a {name} state dict ({first})") from None
        return model
    return _pretrained(name, pool)


def _head(model: nn.Module) -> str:
    """The classifier's key prefix, which a checkpoint of the full model holds and the headless model does not."""
    return f"{model.default_cfg.get('classifier', 'classifier')}."


def _pretrained(name: str, pool: str) -> nn.Module:
    import timm
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    where = f"timm:{name} --weights imagenet"
    with _hub_offline(offline()):
        try:
            return timm.create_model(name, pretrained=True, num_classes=0, global_pool=pool)
        except Exception as exc:  # huggingface_hub, requests and timm raise many types for a missing file
            why = "downloads are off (NOISEKIT_OFFLINE or HF_HUB_OFFLINE)" if offline() else type(exc).__name__
            raise NoisekitError(
                f"{where}: the pretrained weights are not in the Hugging Face cache {cache} and could not be "
                f"fetched ({why}); run once online, or pass --weights FILE or --weights random"
            ) from None


@contextlib.contextmanager
def _hub_offline(on: bool) -> Any:
    """huggingface_hub reads HF_HUB_OFFLINE when imported; set its constant too so a late switch takes effect."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")
    if on:
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before[0]
        if before[1] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before[1]

"""Where pretrained weights come from: the torch cache (downloaded into it when online), a state-dict FILE, and the
offline switch (NOISEKIT_OFFLINE=1 or HF_HUB_OFFLINE=1) that forbids every download."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision import models

from noisekit.errors import NoisekitError
from noisekit.progress import on_terminal

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def offline() -> bool:
    """True when the user asked for no downloads (NOISEKIT_OFFLINE=1, or the Hugging Face HF_HUB_OFFLINE=1)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("NOISEKIT_OFFLINE", "HF_HUB_OFFLINE"))


def imagenet_state_dict(arch: str = "resnet18") -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights of ``arch`` from the torch cache, downloaded into it when absent."""
    url = models.get_model_weights(arch).IMAGENET1K_V1.url
    return cached_state_dict(url, what=f"ImageNet {arch}", hash_prefix=url.rsplit("-", 1)[1].split(".")[0])


def cached_state_dict(
    url: str, *, what: str, hash_prefix: str | None, also: tuple[Path, ...] = ()
) -> dict[str, torch.Tensor]:
    """The state dict at ``url`` from the torch cache (or one of the ``also`` files), downloaded into the cache when
    absent; offline or failing, a one-line error names the file and where to put it."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    found = next((p for p in (path, *also) if p.is_file()), None)
    if found is None:
        if offline():
            raise NoisekitError(
                f"{what} weights are not in the torch cache and downloads are off (NOISEKIT_OFFLINE); "
                f"place {path.name} from {url} in {path.parent} (or pass --weights FILE)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=on_terminal())
        except Exception as exc:  # urllib raises URLError, OSError, RuntimeError (hash) among others
            raise NoisekitError(
                f"{what} weights are not in the torch cache and could not be downloaded from {url} "
                f"({type(exc).__name__}); place {path.name} in {path.parent} (or pass --weights FILE)"
            ) from None
        found = path
    return load_state_dict_file(found)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise NoisekitError(f"--weights: {path} is not 'imagenet', 'random' or an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for a bad file
        raise NoisekitError(f"--weights {path}: not a loadable state dict ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NoisekitError(f"--weights {path}: expected a state dict (name -> tensor)")
    return state

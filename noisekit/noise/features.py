"""L2-normalised ResNet-18 embeddings of a manifest's images, computed in batches and cached on disk.

Weights: ``imagenet`` (torchvision's IMAGENET1K_V1, taken from the torch cache and downloaded there when missing),
``random`` (initialised with the fixed seed 0, for tests and ablations, so the noise seed never changes features)
or a FILE holding a ResNet-18 state dict. The cache is
``$NOISEKIT_HOME/NAME/features/resnet18-<weights>-<size>.npz`` (model, weights and size in the name) and holds the
image ids and a key of the images' content (:func:`content_key`) it was computed for, so a
second run at another rate reuses it and a rebuilt dataset does not.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, atomic_path
from noisekit.paths import data_home
from noisekit.progress import on_terminal, progress

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FEATURE_DIM = 512


class ManifestImages(Dataset):
    """Images of manifest rows as tensors; an unreadable image is an error naming its file."""

    def __init__(self, files: Sequence[Path], transform: transforms.Compose) -> None:
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise NoisekitError(f"{path}: cannot read image ({exc})") from None


def eval_transform(image_size: int) -> transforms.Compose:
    """Resize the short side to 8/7 of the crop, centre-crop, normalise (the ImageNet evaluation recipe)."""
    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 8 / 7)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


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


RANDOM_WEIGHTS_SEED = 0


def resnet18_trunk(weights: str) -> torch.nn.Module:
    """ResNet-18 up to global pooling (512-d output) with the requested weights, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = models.resnet18(weights=None)
    if weights != "random":
        state = imagenet_state_dict() if weights == "imagenet" else load_state_dict_file(Path(weights))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise NoisekitError(f"--weights {weights}: not a ResNet-18 state dict ({first[:160]})") from None
    model.fc = torch.nn.Identity()
    return model.eval()


def weights_key(weights: str) -> str:
    if weights in ("imagenet", "random"):
        return weights
    path = Path(weights)
    if not path.is_file():
        raise NoisekitError(f"--weights: {path} is not 'imagenet', 'random' or an existing file")
    return "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def content_key(files: Sequence[Path]) -> str:
    """sha256 over each file's location, size and modification time (nanoseconds): a rebuilt dataset whose images
    changed, moved to another root or were replaced gets new features, without hashing every image's bytes."""
    h = hashlib.sha256()
    for path in files:
        try:
            st = path.stat()
        except OSError as exc:
            raise NoisekitError(f"{path}: cannot read image ({exc.strerror or exc})") from None
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureOptions:
    weights: str = "imagenet"
    image_size: int = 224
    batch_size: int = 64
    workers: int = 2
    device: str = "cpu"


@torch.inference_mode()
def embed(files: Sequence[Path], options: FeatureOptions) -> np.ndarray:
    """(n, 512) float32 L2-normalised features of ``files``."""
    device = torch.device(options.device)
    model = resnet18_trunk(options.weights).to(device)
    loader = DataLoader(
        ManifestImages(files, eval_transform(options.image_size)),
        batch_size=options.batch_size,
        num_workers=options.workers,
        pin_memory=device.type == "cuda",
    )
    out = np.empty((len(files), FEATURE_DIM), dtype=np.float32)
    start = 0
    for batch in progress(loader, desc="features", unit="batch", leave=False):
        feats = torch.nn.functional.normalize(model(batch.to(device, non_blocking=True)).float(), dim=1)
        out[start : start + len(feats)] = feats.cpu().numpy()
        start += len(feats)
    return out


def train_features(manifest: Manifest, options: FeatureOptions) -> tuple[np.ndarray, dict[str, object], str]:
    """Features of the training rows (in manifest order), from the cache when it matches; plus provenance.

    The provenance (model and weights) is deterministic and goes into the manifest; whether the cache was used and
    how long it took are returned separately for the user.
    """
    train = manifest.split("train")
    key = f"resnet18-{weights_key(options.weights)}-{options.image_size}"
    cache = data_home() / manifest.meta.dataset / "features" / f"{key}.npz"
    ids = train["image_id"].to_numpy(dtype=str)
    files = [manifest.resolve(p) for p in train["path"]]
    content = content_key(files)
    info: dict[str, object] = {"feature_model": "resnet18", "weights": key, "image_size": options.image_size}
    if cache.is_file():
        with np.load(cache) as data:
            same = "content" in data and str(data["content"]) == content and np.array_equal(data["image_id"], ids)
            if same:
                return data["features"], info, f"features: {len(ids):,} from cache {cache}"
    start = time.perf_counter()
    feats = embed(files, options)
    with atomic_path(cache) as tmp:
        with tmp.open("wb") as fh:
            np.savez(fh, image_id=ids, content=np.array(content), features=feats)
    seconds = time.perf_counter() - start
    return feats, info, f"features: {len(ids):,} computed in {seconds:.1f}s ({len(ids) / seconds:.0f} img/s) -> {cache}"

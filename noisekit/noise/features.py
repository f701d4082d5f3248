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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import models, transforms

from noisekit.backbones.weights import IMAGENET_MEAN, IMAGENET_STD, imagenet_state_dict, load_state_dict_file
from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, atomic_path
from noisekit.paths import data_home
from noisekit.progress import progress

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

"""L2-normalised embeddings of a manifest's images by a pretrained backbone, computed in batches and cached on disk.

Backbones (:func:`noisekit.backbones.trunk`): ``resnet18`` (the paper's, the default), ``resnet50``,
``efficientnet_lite0`` (ImageNet weights offline) or ``timm:NAME``; each image is normalised with the mean and std
its weights were trained with and cropped to ``image_size`` (default: the backbone's own input size, 224 for all
three named ones). Weights: ``imagenet``, ``random`` (initialised with the fixed seed 0, for tests and ablations, so
the noise seed never changes features) or a state-dict FILE of that backbone. The cache is
``$NOISEKIT_HOME/NAME/features/<backbone>-<weights>-<size>.npz`` (``timm:`` written ``timm-``) and holds the image
ids and a key of the images' content (:func:`content_key`) it was computed for, so a second run at another rate
reuses it, and another backbone, weights, size or a rebuilt dataset does not.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from noisekit.backbones import TORCHVISION, Trunk, check_name, timm_config, trunk
from noisekit.backbones.weights import IMAGENET_MEAN, IMAGENET_STD
from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, atomic_path
from noisekit.paths import data_home
from noisekit.progress import progress


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


def eval_transform(
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> transforms.Compose:
    """Resize the short side to 8/7 of the crop, centre-crop, normalise with the weights' own statistics (the
    ImageNet evaluation recipe)."""
    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 8 / 7)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


RANDOM_WEIGHTS_SEED = 0


def feature_trunk(backbone: str, weights: str) -> Trunk:
    """The backbone up to global pooling with the requested weights, in eval mode; random weights always come from
    RANDOM_WEIGHTS_SEED, so the noise seed and the caller's RNG state never change the features."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = trunk(backbone, weights)
    model.module.eval()
    return model


def input_size(backbone: str, requested: int | None = None) -> int:
    """``requested``, or the side ``backbone``'s pretrained weights were trained at, read without building the model
    (no download); a ``timm:`` name timm does not know, or a size a fixed-size model (a ViT) cannot take, is an
    error here, before any feature is computed."""
    check_name(backbone)
    if backbone in TORCHVISION:
        return requested or 224
    import timm

    cfg = timm_config(backbone)
    if cfg is False:
        raise NoisekitError(f"--backbone {backbone}: timm {timm.__version__} has no model of that name "
                            "(timm.list_models)")  # fmt: skip
    native = int(cfg.input_size[-1]) if cfg is not None else 224
    if requested and requested != native and cfg is not None and cfg.fixed_input_size:
        raise NoisekitError(f"--image-size {requested}: {backbone} takes only {native} px images")
    return requested or native


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
    image_size: int | None = None  # None: the backbone's own input size (:func:`input_size`)
    batch_size: int = 64
    workers: int = 2
    device: str = "cpu"
    backbone: str = "resnet18"

    def resolved(self) -> FeatureOptions:
        """These options with the backbone checked and the image size filled in."""
        return replace(self, image_size=input_size(self.backbone, self.image_size))


@torch.inference_mode()
def embed(files: Sequence[Path], options: FeatureOptions) -> np.ndarray:
    """(n, dim) float32 L2-normalised features of ``files``; dim is the backbone's (512 for resnet18, 1,280 for
    efficientnet_lite0)."""
    options = options.resolved()
    device = torch.device(options.device)
    model = feature_trunk(options.backbone, options.weights)
    net = model.module.to(device)
    loader = DataLoader(
        ManifestImages(files, eval_transform(options.image_size, model.mean, model.std)),
        batch_size=options.batch_size,
        num_workers=options.workers,
        pin_memory=device.type == "cuda",
    )
    out = np.empty((len(files), model.dim), dtype=np.float32)
    start = 0
    for batch in progress(loader, desc="features", unit="batch", leave=False):
        feats = torch.nn.functional.normalize(net(batch.to(device, non_blocking=True)).float(), dim=1)
        out[start : start + len(feats)] = feats.cpu().numpy()
        start += len(feats)
    return out


def cache_key(options: FeatureOptions) -> str:
    """``<backbone>-<weights>-<size>``, a file name: features of another backbone, weights or size never match."""
    options = options.resolved()
    return f"{options.backbone.replace(':', '-')}-{weights_key(options.weights)}-{options.image_size}"


def train_features(manifest: Manifest, options: FeatureOptions) -> tuple[np.ndarray, dict[str, object], str]:
    """Features of the training rows (in manifest order), from the cache when it matches; plus provenance.

    The provenance (backbone, weights, input size and feature dimension) is deterministic and goes into the
    manifest; whether the cache was used and how long it took are returned separately for the user.
    """
    options = options.resolved()
    train = manifest.split("train")
    cache = data_home() / manifest.meta.dataset / "features" / f"{cache_key(options)}.npz"
    ids = train["image_id"].to_numpy(dtype=str)
    files = [manifest.resolve(p) for p in train["path"]]
    content = content_key(files)
    weights = weights_key(options.weights)
    what = f"{len(ids):,} {options.backbone} ({weights}, {options.image_size} px)"
    feats = _cached(cache, ids, content)
    if feats is not None:
        note = f"features: {what} from cache {cache}"
    else:
        start = time.perf_counter()
        feats = embed(files, options)
        with atomic_path(cache) as tmp:
            with tmp.open("wb") as fh:
                np.savez(fh, image_id=ids, content=np.array(content), features=feats)
        seconds = time.perf_counter() - start
        note = f"features: {what} computed in {seconds:.1f}s ({len(ids) / seconds:.0f} img/s) -> {cache}"
    info: dict[str, object] = {
        "feature_model": options.backbone,
        "weights": weights,
        "image_size": options.image_size,
        "feature_dim": int(feats.shape[1]),
    }
    return feats, info, note


def _cached(cache: Path, ids: np.ndarray, content: str) -> np.ndarray | None:
    """The cached features when they were computed for exactly these image ids and this content."""
    if not cache.is_file():
        return None
    with np.load(cache) as data:
        same = "content" in data and str(data["content"]) == content and np.array_equal(data["image_id"], ids)
        return data["features"] if same else None

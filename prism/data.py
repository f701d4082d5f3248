"""Manifest -> training, validation and test sets; the P x K batch sampler; transforms.

The P x K batch of iteration i is a pure function of (seed, i), so a resumed run draws exactly the batches the
uninterrupted run would, and a sample's augmentation is seeded by (seed, i, slot), whatever worker decodes it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, read_manifest
from noisekit.paths import resolve_manifest
from prism.config import SMALL_IMAGE, DataShape

MIN_VAL_CLASSES = 10  # with fewer training classes the validation split is carved by image instead


@dataclass
class Split:
    """Rows of one split: absolute image files, training labels, clean labels (-1 unknown), manifest row ids."""

    files: list[Path]
    labels: np.ndarray
    clean: np.ndarray
    noisy: np.ndarray  # 1 noisy, 0 clean, -1 unknown
    image_ids: np.ndarray


@dataclass
class TrainingData:
    manifest: Manifest
    train: Split
    val: Split | None
    test: Split
    num_classes: int  # size of the training label space
    side: int  # the larger side of the first training image, in pixels
    val_by: str
    # evaluation sets by split, built once per run: small images are decoded and resized when the set is built
    eval_sets: dict[str, Images] = field(default_factory=dict, repr=False)

    @property
    def small(self) -> bool:
        """Images of at most SMALL_IMAGE px: decoded once, resized once to the run's size, fed without augmentation."""
        return self.side <= SMALL_IMAGE

    @property
    def shape(self) -> DataShape:
        return DataShape(self.side, int((np.bincount(self.train.labels) >= 2).sum()), len(self.train.files))


def load_manifest(ref: str, *, root: str | None = None) -> Manifest:
    """``NAME``, ``NAME/VARIANT``, a manifest path, ``hub:OWNER/REPO:CONFIG`` or a published folder (``DIR`` or
    ``DIR/CONFIG``); published data is materialised once into the data home (images + manifest). ``root``: the local
    copy of the images of data published ``--labels-only``."""
    from noisekit.hub.materialise import published_manifest

    published = published_manifest(ref, root=root)
    return published if published is not None else read_manifest(resolve_manifest(ref))


def _split(manifest: Manifest, rows: pd.DataFrame, *, test: bool = False) -> Split:
    noisy = rows["is_noisy"].astype("float").fillna(-1).to_numpy().astype(np.int64)
    labels = rows["clean_label" if test else "label"].to_numpy().astype(np.int64)
    return Split(
        files=[manifest.resolve(p) for p in rows["path"]],
        labels=labels,
        clean=rows["clean_label"].to_numpy().astype(np.int64),
        noisy=noisy,
        image_ids=rows["image_id"].to_numpy(dtype=str),
    )


def carve_validation(train: pd.DataFrame, *, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Hold out ``fraction`` of the training classes (seeded) as validation; with fewer than MIN_VAL_CLASSES classes,
    hold out ``fraction`` of each class's images instead. The test split is never used for model selection."""
    if fraction == 0:
        return train, train.iloc[:0], "none"
    rng = np.random.default_rng([seed, 1])
    classes = np.unique(train["label"].to_numpy())
    if len(classes) >= MIN_VAL_CLASSES:
        n_val = max(2, round(fraction * len(classes)))
        val_classes = rng.choice(classes, size=n_val, replace=False)
        is_val = train["label"].isin(val_classes).to_numpy()
        return train[~is_val], train[is_val], "class"
    is_val = np.zeros(len(train), dtype=bool)
    labels = train["label"].to_numpy()
    for c in classes:
        members = np.flatnonzero(labels == c)
        is_val[rng.choice(members, size=int(round(fraction * len(members))), replace=False)] = True
    return train[~is_val], train[is_val], "image"


def prepare(ref: str, *, val_fraction: float, seed: int, root: str | None = None) -> TrainingData:
    manifest = load_manifest(ref, root=root)
    frame = manifest.frame
    train_rows, test_rows = manifest.split("train"), manifest.split("test")
    if len(test_rows) == 0:
        raise NoisekitError(f"{ref}: has no test split")
    if train_rows["label"].nunique() < 2:
        raise NoisekitError(
            f"{ref}: the training split has {train_rows['label'].nunique()} class(es); "
            "metric learning needs at least two"
        )
    train_rows, val_rows, val_by = carve_validation(train_rows, fraction=val_fraction, seed=seed)
    if "val" in set(frame["split"]):  # a user-carved validation split wins
        val_rows, val_by = manifest.split("val"), "manifest"
    first = manifest.resolve(train_rows["path"].iloc[0])
    try:
        with Image.open(first) as image:
            side = max(image.size)
    except OSError as exc:
        raise NoisekitError(f"{first}: cannot read image ({exc})") from None
    return TrainingData(
        manifest=manifest,
        train=_split(manifest, train_rows),
        val=_split(manifest, val_rows) if len(val_rows) else None,
        test=_split(manifest, test_rows, test=True),
        num_classes=int(train_rows["label"].max()) + 1,
        side=side,
        val_by=val_by,
    )


# RandomResizedCrop's default scale range (the smallest crop keeps 16% of the image's area; --crop-scale sets the
# lower end, the authors' 0.2) and aspect ratios
CROP_SCALE = (0.16, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JPEG_MAGIC = b"\xff\xd8\xff"


class CropFlip:
    """RandomResizedCrop to ``size`` and a horizontal flip with probability 1/2, on uint8 CHW tensors.

    The draws depend only on the image's height and width and the torch random state (:meth:`draw`), so a worker
    that only reads a JPEG's header draws exactly the crop that :meth:`__call__` would draw on the decoded image.
    """

    def __init__(self, size: int, min_scale: float = CROP_SCALE[0]) -> None:
        self.size, self.scale = size, [min_scale, 1.0]

    def draw(self, height: int, width: int) -> tuple[tuple[int, int, int, int], bool]:
        shape_only = torch.zeros(()).expand(1, height, width)  # get_params reads the shape only
        box = transforms.RandomResizedCrop.get_params(shape_only, self.scale, list(CROP_RATIO))
        return tuple(box), bool(torch.rand(1) < 0.5)

    def apply(self, image: torch.Tensor, box: tuple[int, int, int, int], flip: bool) -> torch.Tensor:
        out = tvf.resized_crop(image, *box, [self.size, self.size], antialias=True)
        return tvf.horizontal_flip(out) if flip else out

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.apply(image, *self.draw(*image.shape[-2:]))


def train_transform(small: bool, size: int, min_scale: float = CROP_SCALE[0]) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 CHW in and out: the model converts and normalises on its device (4x less to move than float32).
    Small images (digits, Omniglot; resized once when loaded) are fed without augmentation, for training and
    evaluation alike."""
    return v2.Identity() if small else CropFlip(size, min_scale)


def eval_transform(small: bool, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Resize the short side to 8/7 of the crop, centre-crop (the ImageNet evaluation recipe); uint8 CHW."""
    if small:
        return v2.Identity()
    return v2.Compose([v2.Resize(round(size * 8 / 7), antialias=True), v2.CenterCrop(size)])


def fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """``image`` resized (antialiased) to size x size, unless it is that size already."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return tvf.resize(image, [size, size], antialias=True)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NoisekitError(f"{path}: cannot read image ({exc})") from None


def decode_image(data: bytes, path: Path) -> torch.Tensor:
    """(3, height, width) uint8 RGB from a file's bytes. JPEGs are decoded by torchvision's libjpeg-turbo decoder
    (with the tensor transforms about 1.7x the rate of PIL + ToTensor, bench/pipeline.py); other formats and the
    JPEGs it refuses by PIL. ``path`` names the file in errors."""
    if data.startswith(JPEG_MAGIC):
        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # PIL decodes what it can and names the problem otherwise
    try:
        with Image.open(io.BytesIO(data)) as image:
            return tvf.pil_to_tensor(image.convert("RGB"))
    except OSError as exc:
        raise NoisekitError(f"{path}: cannot read image ({exc})") from None


def read_image(path: Path) -> torch.Tensor:
    """:func:`decode_image` of the file at ``path``."""
    return decode_image(read_bytes(path), path)


@contextmanager
def seeded(aug: int) -> Iterator[None]:
    """The torch random state seeded with ``aug`` inside, the caller's state untouched outside."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(aug)  # torch.manual_seed also queues accelerator seeding: 1 ms a call
        yield


class Images(Dataset):
    """Index -> (uint8 image tensor, training label, row). Keys may be a row or (row, augmentation seed).

    ``preload``: every image is decoded once, resized to ``preload`` x ``preload`` pixels (if it is not that size)
    and kept in memory (small images).
    """

    def __init__(
        self, split: Split, transform: Callable[[torch.Tensor], torch.Tensor], *, preload: int | None = None
    ) -> None:
        self.split, self.transform = split, transform
        self.cache = [fit(read_image(path), preload) for path in split.files] if preload else None

    def __len__(self) -> int:
        return len(self.split.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        row, aug = key if isinstance(key, tuple) else (key, None)
        image = self.cache[row] if self.cache is not None else read_image(self.split.files[row])
        if aug is None:
            return self.transform(image), int(self.split.labels[row]), row
        with seeded(aug):
            return self.transform(image), int(self.split.labels[row]), row


class PreloadedBatches:
    """The batches of ``sampler`` from preloaded small images, indexed straight out of one stacked tensor: what a
    DataLoader over ``images`` yields (small images are not augmented), without its per-sample Python work."""

    def __init__(self, images: Images, sampler: Sampler) -> None:
        assert images.cache is not None, "PreloadedBatches needs Images(..., preload=size)"
        self.stack, self.labels, self.sampler = torch.stack(images.cache), torch.as_tensor(images.split.labels), sampler

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch in self.sampler:
            rows = torch.tensor([row for row, _ in batch])
            yield self.stack[rows], self.labels[rows], rows

    def __len__(self) -> int:
        return len(self.sampler)


@dataclass
class Encoded:
    """A batch whose JPEGs the training device decodes: file bytes, crop boxes and flips drawn by the workers.

    ``data[i]`` is a JPEG's bytes (1-D uint8) where ``jpeg[i]``, else the finished (3, size, size) uint8 crop that a
    worker made on the CPU (PNG, CMYK JPEG, ...). ``boxes`` rows are (top, left, height, width).
    """

    data: list[torch.Tensor]
    jpeg: list[bool]
    boxes: torch.Tensor
    flips: torch.Tensor


class EncodedImages(Dataset):
    """Training images for decoding on the device (``--decode device``): a worker reads the file and its header and
    draws the crop and flip that :class:`CropFlip` draws under the same seed; the device decodes the batch (nvJPEG
    on CUDA) and crops, resizes and flips there (:func:`decode_batch`). Keys are (row, augmentation seed)."""

    def __init__(self, split: Split, size: int, min_scale: float = CROP_SCALE[0]) -> None:
        self.split, self.crop = split, CropFlip(size, min_scale)

    def __len__(self) -> int:
        return len(self.split.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, bool, tuple[int, ...], bool, int, int]:
        row, aug = key
        path = self.split.files[row]
        data = read_bytes(path)  # read once: the header is parsed and the fallback decoded from these bytes
        try:
            with Image.open(io.BytesIO(data)) as image:  # parses the header only
                jpeg = image.format == "JPEG" and image.mode in ("RGB", "L")
                width, height = image.size
        except OSError as exc:
            raise NoisekitError(f"{path}: cannot read image ({exc})") from None
        with seeded(aug):
            if jpeg:
                box, flip = self.crop.draw(height, width)
                payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            else:
                payload, box, flip = self.crop(decode_image(data, path)), (0, 0, 0, 0), False
        return payload, jpeg, box, flip, int(self.split.labels[row]), row


def collate_encoded(items: list[tuple]) -> tuple[Encoded, torch.Tensor, torch.Tensor]:
    data, jpeg, boxes, flips, labels, rows = zip(*items, strict=True)
    encoded = Encoded(list(data), list(jpeg), torch.tensor(boxes), torch.tensor(flips))
    return encoded, torch.tensor(labels), torch.tensor(rows)


def decode_batch(batch: Encoded, size: int, device: torch.device) -> torch.Tensor:
    """(n, 3, size, size) uint8 on ``device``: decode the batch's JPEGs there (nvJPEG on CUDA, one batched call), then
    crop, resize and flip each with the worker's draws. On the CPU this equals the workers path exactly."""
    crop = CropFlip(size)
    out = torch.empty((len(batch.data), 3, size, size), dtype=torch.uint8, device=device)
    jpegs = [i for i, is_jpeg in enumerate(batch.jpeg) if is_jpeg]
    decoded = decode_jpeg([batch.data[i] for i in jpegs], mode=ImageReadMode.RGB, device=device) if jpegs else []
    for i, image in zip(jpegs, decoded, strict=True):
        box, flip = tuple(batch.boxes[i].tolist()), bool(batch.flips[i])
        out[i] = crop.apply(image, box, flip)
    for i, is_jpeg in enumerate(batch.jpeg):
        if not is_jpeg:  # finished on the CPU
            out[i] = batch.data[i].to(device, non_blocking=True)
    return out

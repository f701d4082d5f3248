"""Manifest -> training, validation and test sets; the P x K batch sampler; transforms.

The P x K batch of iteration i is a pure function of (seed, i), so a resumed run draws exactly the batches the
uninterrupted run would, and a sample's augmentation is seeded by (seed, i, slot), whatever worker decodes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms

from noisekit.errors import NoisekitError
from noisekit.features import IMAGENET_MEAN, IMAGENET_STD
from noisekit.manifest import Manifest, read_manifest
from noisekit.paths import resolve_manifest

SMALL_IMAGE = 32  # images at most this size are preloaded and fed to the small CNN as they are
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
    small: bool  # images of at most SMALL_IMAGE px
    val_by: str


def load_manifest(ref: str) -> Manifest:
    """``NAME``, ``NAME/VARIANT``, a manifest path, ``hub:OWNER/REPO:CONFIG`` or a published folder (``DIR`` or
    ``DIR/CONFIG``); published data is materialised once into the data home (images + manifest)."""
    from noisekit.hub import published_manifest

    published = published_manifest(ref)
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


def prepare(ref: str, *, val_fraction: float, seed: int) -> TrainingData:
    manifest = load_manifest(ref)
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
            small = max(image.size) <= SMALL_IMAGE
    except OSError as exc:
        raise NoisekitError(f"{first}: cannot read image ({exc})") from None
    return TrainingData(
        manifest=manifest,
        train=_split(manifest, train_rows),
        val=_split(manifest, val_rows) if len(val_rows) else None,
        test=_split(manifest, test_rows, test=True),
        num_classes=int(train_rows["label"].max()) + 1,
        small=small,
        val_by=val_by,
    )


class PKBatches(Sampler[list[tuple[int, int]]]):
    """P classes x K samples per batch; batch i depends only on (seed, i). Yields (row, augmentation seed) pairs.

    Classes with fewer than K images are drawn with replacement; only classes with at least two images are drawn.
    With ``world_size`` > 1, rank r takes the slots [r * B / W, (r + 1) * B / W) of each global batch.
    """

    def __init__(
        self,
        labels: np.ndarray,
        *,
        p: int,
        k: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        classes, counts = np.unique(labels, return_counts=True)
        eligible = classes[counts >= 2]
        if len(eligible) < p:
            raise NoisekitError(
                f"P x K = {p} x {k} is larger than the data: {len(eligible)} training classes have two or more "
                f"images; lower --classes-per-batch"
            )
        if (p * k) % world_size:
            raise NoisekitError(f"the batch of {p} x {k} does not split evenly over {world_size} processes")
        self.members = {int(c): np.flatnonzero(labels == c) for c in eligible}
        self.eligible, self.p, self.k, self.seed = eligible, p, k, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, iteration])
        rows: list[int] = []
        for c in rng.choice(self.eligible, size=self.p, replace=False):
            members = self.members[int(c)]
            rows.extend(rng.choice(members, size=self.k, replace=len(members) < self.k).tolist())
        aug = rng.integers(0, 2**31, size=len(rows))
        share = len(rows) // self.world_size
        lo = self.rank * share
        return [(rows[i], int(aug[i])) for i in range(lo, lo + share)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start, self.stop):
            yield self.batch(iteration)

    def __len__(self) -> int:
        return self.stop - self.start


def small_transform() -> transforms.Compose:
    """Small images (digits) are fed as they are, without augmentation, for training and evaluation alike."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(small: bool, size: int) -> transforms.Compose:
    if small:
        return small_transform()
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.16, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(small: bool, size: int) -> transforms.Compose:
    if small:
        return small_transform()
    from noisekit.features import eval_transform as imagenet_eval

    return imagenet_eval(size)


class Images(Dataset):
    """Index -> (image tensor, training label, row). Keys may be a row or (row, augmentation seed).

    Small images are decoded once and kept in memory.
    """

    def __init__(self, split: Split, transform: transforms.Compose, *, preload: bool = False) -> None:
        self.split, self.transform = split, transform
        self.cache = [self._open(i) for i in range(len(split.files))] if preload else None

    def _open(self, row: int) -> Image.Image:
        path = self.split.files[row]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as exc:
            raise NoisekitError(f"{path}: cannot read image ({exc})") from None

    def __len__(self) -> int:
        return len(self.split.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        row, aug = key if isinstance(key, tuple) else (key, None)
        image = self.cache[row] if self.cache is not None else self._open(row)
        if aug is None:
            tensor = self.transform(image)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(aug)
                tensor = self.transform(image)
        return tensor, int(self.split.labels[row]), row

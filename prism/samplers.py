"""Batch samplers: which training rows form each batch, and each sample's augmentation seed.

- :class:`PKBatches` (``--sampler uniform``): P classes drawn uniformly, K images each; batch i is a pure function of
  (seed, i), so a resumed run draws exactly the batches the uninterrupted run would.
- :class:`ChunkBatches` (``--sampler authors``): the PRISM authors' sampler, XBM's RandomIdentitySampler
  (research-xbm ret_benchmark/data/samplers/random_identity_sampler.py, which the authors' data/build.py imports):
  each pass pads every class with repeats of its own images to a multiple of K, shuffles and cuts it into chunks of
  K; a batch takes the next chunk of P classes drawn without replacement in proportion to their remaining chunks;
  a new pass starts when fewer than P classes have chunks left (those are dropped). Every class takes part, a
  one-image class as a chunk of K copies. A batch depends on the ones before it, so starting at iteration s replays
  the first s draws (index work only, no images read).

Both yield lists of (row, augmentation seed); with ``world_size`` > 1, rank r takes the slots
[r * B / W, (r + 1) * B / W) of each global batch.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from noisekit.errors import NoisekitError

SAMPLERS = ("uniform", "authors")


def _check(p: int, k: int, classes: int, world_size: int, what: str) -> None:
    if classes < p:
        raise NoisekitError(
            f"P x K = {p} x {k} is larger than the data: {classes} training classes {what}; lower --classes-per-batch"
        )
    if (p * k) % world_size:
        raise NoisekitError(f"the batch of {p} x {k} does not split evenly over {world_size} processes")


def _share(rows: list[int], aug: np.ndarray, rank: int, world_size: int) -> list[tuple[int, int]]:
    share = len(rows) // world_size
    lo = rank * share
    return [(rows[i], int(aug[i])) for i in range(lo, lo + share)]


class _Batches(Sampler[list[tuple[int, int]]], abc.ABC):
    """What both samplers share: the batch shape, the seed, iterations [start, stop) and the rank's share."""

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
        self.p, self.k, self.seed = p, k, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self.setup(np.asarray(labels))

    @abc.abstractmethod
    def setup(self, labels: np.ndarray) -> None:
        """Index the classes this sampler draws from (each sampler its own way); check P x K fits."""

    def __len__(self) -> int:
        return self.stop - self.start


class PKBatches(_Batches):
    """P classes x K samples per batch; batch i depends only on (seed, i). Yields (row, augmentation seed) pairs.

    Classes with fewer than K images are drawn with replacement; only classes with at least two images are drawn.
    With ``world_size`` > 1, rank r takes the slots [r * B / W, (r + 1) * B / W) of each global batch.
    """

    def setup(self, labels: np.ndarray) -> None:
        classes, counts = np.unique(labels, return_counts=True)
        self.eligible = classes[counts >= 2]
        _check(self.p, self.k, len(self.eligible), self.world_size, "have two or more images")
        self.members = {int(c): np.flatnonzero(labels == c) for c in self.eligible}

    def batch(self, iteration: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, iteration])
        rows: list[int] = []
        for c in rng.choice(self.eligible, size=self.p, replace=False):
            members = self.members[int(c)]
            rows.extend(rng.choice(members, size=self.k, replace=len(members) < self.k).tolist())
        aug = rng.integers(0, 2**31, size=len(rows))
        return _share(rows, aug, self.rank, self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start, self.stop):
            yield self.batch(iteration)


class ChunkBatches(_Batches):
    """The authors' sampler (see the module docstring), seeded; yields (row, augmentation seed) pairs."""

    def setup(self, labels: np.ndarray) -> None:
        classes = np.unique(labels)
        _check(self.p, self.k, len(classes), self.world_size, "exist")
        self.members = [np.flatnonzero(labels == c) for c in classes]

    def _chunks(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """One pass: each class's rows padded with its own rows (drawn with replacement) to a multiple of K,
        shuffled, cut into chunks of K."""
        out = []
        for rows in self.members:
            short = -len(rows) % self.k
            padded = np.concatenate([rows, rng.choice(rows, size=short, replace=True)]) if short else rows.copy()
            rng.shuffle(padded)
            out.append(list(padded.reshape(-1, self.k)))
        return out

    def _batches(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, 2])
        while True:
            chunks = self._chunks(rng)
            left = np.array([len(c) for c in chunks], dtype=np.float64)
            while (left > 0).sum() >= self.p:
                picked = rng.choice(len(chunks), size=self.p, replace=False, p=left / left.sum())
                rows: list[int] = []
                for c in picked:
                    rows.extend(chunks[c].pop().tolist())
                    left[c] -= 1
                yield rows

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration, rows in enumerate(self._batches()):
            if iteration >= self.stop:
                return
            if iteration >= self.start:
                aug = np.random.default_rng([self.seed, iteration, 1]).integers(0, 2**31, size=len(rows))
                yield _share(rows, aug, self.rank, self.world_size)


def make_sampler(kind: str, labels: np.ndarray, **options: int) -> Sampler[list[tuple[int, int]]]:
    """The batch sampler named by ``--sampler``."""
    return (ChunkBatches if kind == "authors" else PKBatches)(labels, **options)

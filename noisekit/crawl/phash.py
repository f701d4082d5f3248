"""Perceptual hashes for finding near-duplicate images: 64-bit pHash, and Hamming-distance matching.

pHash (as the ``imagehash`` library computes it): grey levels, resized to 32x32 with Lanczos, 2-D DCT-II, the
8x8 lowest frequencies, one bit per coefficient: above their median or not. Resizing, re-encoding, greyscale,
mild brightness or contrast changes and small crops move few bits; unrelated pictures differ in about 32 of 64.
JPEG files are decoded through PIL's ``draft`` (DCT-domain downscaling to at least 64 px) first: about five times
faster on full-size photos, and it changes the 32x32 thumbnail by far less than a re-encode does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.fft
from PIL import Image

from noisekit.errors import NoisekitError
from noisekit.progress import progress

HASH_SIZE = 8
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def phash(image: Image.Image) -> int:
    """The 64-bit pHash of an image, bits in row-major order, most significant first (imagehash's hex order)."""
    size = HASH_SIZE * 4
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    low = scipy.fft.dct(scipy.fft.dct(grey, axis=0), axis=1)[:HASH_SIZE, :HASH_SIZE]
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


def phash_file(path: Path) -> int:
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("L", (HASH_SIZE * 8, HASH_SIZE * 8))
            return phash(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise NoisekitError(f"{path}: cannot be read as an image ({exc})") from None


def hash_files(paths: Sequence[Path], *, desc: str, workers: int | None = None) -> np.ndarray:
    """pHashes of ``paths`` as uint64, shape (n,); decoding runs in threads (PIL releases the GIL)."""
    workers = workers or min(8, os.cpu_count() or 2)
    with ThreadPoolExecutor(workers) as pool:
        hashes = list(progress(pool.map(phash_file, paths, chunksize=16), total=len(paths), desc=desc, leave=False))
    return np.array(hashes, dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between uint64 hashes ``a`` (n,) and ``b`` (m,), shape (n, m)."""
    xor = a[:, None] ^ b[None, :]
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(xor).astype(np.int64)
    return _POPCOUNT8[xor.view(np.uint8).reshape(*xor.shape, 8)].sum(axis=-1, dtype=np.int64)


def nearest(query: np.ndarray, reference: np.ndarray, *, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For every query hash the index of the closest reference hash and their distance, shapes (n,), (n,)."""
    if len(reference) == 0:
        return np.full(len(query), -1, dtype=np.int64), np.full(len(query), HASH_SIZE * HASH_SIZE + 1)
    index = np.empty(len(query), dtype=np.int64)
    distance = np.empty(len(query), dtype=np.int64)
    for start in range(0, len(query), chunk):
        block = hamming(query[start : start + chunk], reference)
        index[start : start + chunk] = block.argmin(axis=1)
        distance[start : start + chunk] = block.min(axis=1)
    return index, distance

"""pHash against reference values of the imagehash library, and exact Hamming matching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from noisekit.crawl.phash import hamming, nearest, phash, phash_file
from noisekit.errors import NoisekitError

# imagehash 4.3.2's str(imagehash.phash(image)) for scikit-learn's bundled china.jpg and flower.jpg, computed once
# in a scratch environment (imagehash is not a dependency).
IMAGEHASH = ("9db8c2c7445dbb24", "9b64386633cdc96c")


def test_phash_equals_imagehash() -> None:
    images = [Image.fromarray(a) for a in load_sample_images().images]
    assert tuple(f"{phash(image):016x}" for image in images) == IMAGEHASH


def test_hamming_and_nearest_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, 37, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 37, dtype=np.uint64)
    b = rng.integers(0, 2**63, 23, dtype=np.uint64) * np.uint64(2)
    brute = np.array([[bin(int(x) ^ int(y)).count("1") for y in b] for x in a])
    assert (hamming(a, b) == brute).all()
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy < 2: the byte lookup table
    assert (hamming(a, b) == brute).all()
    index, distance = nearest(a, b, chunk=5)
    assert (distance == brute.min(axis=1)).all() and (brute[np.arange(len(a)), index] == distance).all()
    _, none = nearest(a, b[:0])
    assert (none == 65).all()


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(NoisekitError, match=r"x\.jpg: cannot be read as an image"):
        phash_file(tmp_path / "x.jpg")

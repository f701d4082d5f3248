"""digits, the embedded default: scikit-learn's bundled 1,797 handwritten 8x8 digits, real and offline.

The images are written as 8-bit greyscale PNGs (intensity 0-16 scaled to 0-255). DML split: digits 0-4 train,
digits 5-9 test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from noisekit.manifest import atomic_path
from noisekit.sources.common import BuildResult, assemble

CLASS_NAMES = tuple(str(d) for d in range(10))


def write_images(root: Path) -> list[tuple[str, str, str, int]]:
    """Write every digit as ``images/<digit>/<index>.png`` under ``root`` (skipping ones already identical)."""
    data = load_digits()
    pixels = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)
    rows = []
    for index, (image, target) in enumerate(zip(pixels, data.target, strict=True)):
        rel = f"images/{target}/{index:04d}.png"
        dest = root / rel
        if not dest.is_file():
            with atomic_path(dest) as tmp:
                Image.fromarray(image, mode="L").save(tmp, format="PNG")
        rows.append((f"digits/{index:04d}", rel, "train" if target < 5 else "test", int(target)))
    return rows


def build(root: Path, *, strict: bool = False) -> BuildResult:
    rows = write_images(root)
    return assemble(
        dataset="digits",
        root=root,
        rows=rows,
        class_names=CLASS_NAMES,
        strict=strict,
        source={"name": "scikit-learn load_digits", "split": "digits 0-4 train, 5-9 test"},
    )

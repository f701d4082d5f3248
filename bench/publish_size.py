"""Benchmark of ``noisekit publish`` at CUB-200-2011 size, run by hand (not by CI).

Writes a fake CUB_200_2011 tree (200 classes; 5,864 train + 5,924 test 500x375 JPEGs whose mean size, about 90 KB,
is close to the real images': 1.1 GB for 11,788), builds it, makes symmetric-0.5, then publishes clean +
symmetric-0.5 into one folder and prints the size on disk, the wall time, the time per image, and ratios against
named peers measured in the same run:

- size: published bytes / raw JPEG bytes (the train split is stored once per configuration, the test split once);
- time: publish / a plain copy of the same JPEG files (shutil.copyfile), the I/O floor of writing that many bytes.

It also times a second publish of the same variants (content hashing only: nothing is written), the labels-only
publish, and ``datasets.load_dataset`` of one configuration from the folder.

    .venv/bin/python bench/publish_size.py [--workdir DIR] [--workers N] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_SIZES = [59] * 64 + [58] * 36  # classes 1-100: 5,864 images
TEST_SIZES = [60] * 24 + [59] * 76  # classes 101-200: 5,924 images


def jpeg(seed: int) -> bytes:
    """A 500x375 photo-like JPEG: smooth colour fields plus fine texture, so it compresses like a photograph."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
    pixels = np.asarray(base, dtype=np.float32) + rng.normal(0, 16, (375, 500, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_one(args: tuple[Path, int]) -> int:
    path, seed = args
    data = jpeg(seed)
    path.write_bytes(data)
    return len(data)


def fake_cub(root: Path, workers: int) -> tuple[int, int]:
    """The CUB_200_2011 layout; returns (images, bytes)."""
    classes = [f"{k:03d}.Bird_{k}" for k in range(1, 201)]
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate(classes, 1)))
    jobs, images, labels = [], [], []
    for k, (cls, n) in enumerate(zip(classes, TRAIN_SIZES + TEST_SIZES, strict=True), 1):
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rel = f"{cls}/{cls.split('.')[1]}_{i:04d}.jpg"
            jobs.append((root / "images" / rel, len(jobs)))
            images.append(f"{len(jobs)} {rel}\n")
            labels.append(f"{len(jobs)} {k}\n")
    (root / "images.txt").write_text("".join(images))
    (root / "image_class_labels.txt").write_text("".join(labels))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        sizes = list(pool.map(write_one, jobs, chunksize=64))
    return len(sizes), sum(sizes)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="Where to write (default: a temporary folder)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Processes writing the JPEGs")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="publish-bench-", dir=args.workdir))
    os.environ["NOISEKIT_HOME"] = str(work / "home")
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf-datasets"))
    try:
        run(work, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, workers: int) -> None:
    import datasets

    datasets.disable_progress_bars()
    from noisekit.hub.publish import PublishOptions, publish
    from noisekit.noise.common import save_variant
    from noisekit.noise.symmetric import symmetric
    from noisekit.sources.build import BuildOptions, build

    start = time.perf_counter()
    n_images, raw_bytes = fake_cub(work / "CUB_200_2011", workers)
    print(
        f"fake CUB: {n_images:,} JPEGs, {raw_bytes / 1e6:,.1f} MB ({raw_bytes / n_images / 1e3:.1f} KB mean) "
        f"written in {time.perf_counter() - start:.1f}s"
    )
    _, result = build("cub", BuildOptions(root=work / "CUB_200_2011"))
    save_variant(symmetric(result.manifest, rate=0.5, seed=0))
    manifest = result.manifest
    n_train, n_test = len(manifest.split("train")), len(manifest.split("test"))

    files = [manifest.resolve(p) for p in manifest.frame["path"]]
    copy_to = work / "copy"
    copy_to.mkdir()
    start = time.perf_counter()
    for i, path in enumerate(files):
        shutil.copyfile(path, copy_to / f"{i:05d}.jpg")
    copy_s = time.perf_counter() - start
    shutil.rmtree(copy_to)

    out = work / "published" / "cub-noisy"
    options = PublishOptions(variants=("clean", "symmetric-0.5"))
    start = time.perf_counter()
    published = publish("cub", out, options)
    publish_s = time.perf_counter() - start
    size = folder_size(out)
    rows = 2 * n_train + n_test  # train rows stored once per configuration, the shared test split once
    start = time.perf_counter()
    again = publish("cub", out, options)
    noop_s = time.perf_counter() - start
    assert not again.changed
    start = time.perf_counter()
    publish("cub", work / "published" / "cub-labels", PublishOptions(variants=options.variants, labels_only=True))
    labels_s = time.perf_counter() - start
    labels_size = folder_size(work / "published" / "cub-labels")
    start = time.perf_counter()
    loaded = datasets.load_dataset(str(out), name="symmetric-0.5")
    load_s = time.perf_counter() - start

    print(
        f"published {', '.join(published.configs)}: {published.files} files, {size / 1e6:,.1f} MB on disk "
        f"({size / raw_bytes:.2f}x the raw JPEG bytes; {rows:,} rows = 2 x {n_train:,} train + {n_test:,} shared test)"
    )
    print(
        f"publish: {publish_s:.1f}s = {publish_s / n_images * 1e3:.2f} ms per image "
        f"({publish_s / rows * 1e3:.2f} ms per row written)"
    )
    print(f"peer, plain copy of the {n_images:,} JPEGs: {copy_s:.1f}s; publish / copy = {publish_s / copy_s:.1f}")
    print(f"re-publish, same content (hash only, nothing written): {noop_s:.1f}s")
    print(f"labels-only publish: {labels_s:.1f}s, {labels_size / 1e3:,.1f} KB")
    print(
        f"datasets.load_dataset(folder, name='symmetric-0.5'): {load_s:.1f}s "
        f"({loaded['train'].num_rows:,} + {loaded['test'].num_rows:,} rows)"
    )


if __name__ == "__main__":
    main()

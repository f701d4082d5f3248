"""Benchmark of the Small Cluster pipeline, run by hand (not by CI).

1. Feature extraction: images/s of the full pipeline (JPEG decode, resize, crop, normalise in DataLoader workers,
   the --backbone's forward, ResNet-18 by default) against the model-only forward on the same batch size; the ratio
   says how much the input pipeline costs on top of the model (1.0 = free).
2. k-means: the wall time of all k-means calls of a CUB-sized Small Cluster run (100 classes of ~59 images, 512-d
   features) at rate 0.5.

    .venv/bin/python bench/noise_features.py [--images 256] [--device cpu] [--workers 2]
        [--backbone resnet18|efficientnet_lite0|timm:NAME]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from noisekit.manifest import Manifest, ManifestMeta, make_frame
from noisekit.noise.features import FeatureOptions, ManifestImages, embed, eval_transform, feature_trunk
from noisekit.noise.small_cluster import apply, plan


def fake_jpegs(folder: Path, n: int, rng: np.random.Generator) -> list[Path]:
    """CUB-like JPEGs (500x375, smooth content so they compress like photos)."""
    files = []
    for i in range(n):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((500, 375), Image.BILINEAR)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        files.append(path)
    return files


@torch.inference_mode()
def model_only(n: int, options: FeatureOptions) -> float:
    device = torch.device(options.device)
    model = feature_trunk(options.backbone, options.weights).module.to(device)
    batch = torch.randn(options.batch_size, 3, options.image_size, options.image_size, device=device)
    model(batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, done = time.perf_counter(), 0
    while done < n:
        model(batch)
        done += options.batch_size
    if device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def kmeans_cub(seed: int) -> tuple[float, int, int, int]:
    rng = np.random.default_rng(seed)
    sizes = np.full(100, 58)
    sizes[:64] += 1  # 5,864 images, as CUB's 100 training classes hold
    labels = np.repeat(np.arange(100), sizes)
    n = len(labels)
    frame = make_frame([f"i{k}" for k in range(n)], [f"i{k}.jpg" for k in range(n)], ["train"] * n, labels)
    meta = ManifestMeta(dataset="cub-like", root="/", class_names=tuple(f"c{k}" for k in range(100)))
    manifest = Manifest(frame, meta)
    centres = rng.normal(size=(100, 512))
    feats = (centres[labels] + rng.normal(scale=2.0, size=(n, 512))).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    the_plan = plan(manifest, rate=0.5, seed=seed)
    start = time.perf_counter()
    _, figures = apply(manifest, feats, the_plan)
    return time.perf_counter() - start, int(figures["clusters"]), n, len(the_plan.order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet18", help="resnet18, resnet50, efficientnet_lite0 or timm:NAME")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options = FeatureOptions("random", args.image_size, args.batch_size, args.workers, args.device, args.backbone)
    trunk = feature_trunk(args.backbone, "random")
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = fake_jpegs(Path(tmp), args.images, np.random.default_rng(args.seed))
        embed(files[: args.batch_size], options)  # warm-up: worker start, allocator
        start = time.perf_counter()
        embed(files, options)
        pipeline = len(files) / (time.perf_counter() - start)
        # decode + transform alone, to show where the pipeline's time goes
        loader = DataLoader(
            ManifestImages(files, eval_transform(args.image_size, trunk.mean, trunk.std)),
            batch_size=args.batch_size,
            num_workers=args.workers,
        )
        start = time.perf_counter()
        for _ in loader:
            pass
        decode = len(files) / (time.perf_counter() - start)
    model = model_only(args.images, options)
    seconds, clusters, n, dissolved = kmeans_cub(args.seed)
    print(
        f"\ndevice: {name}; {args.backbone} ({trunk.dim}-d) at {args.image_size}px, batch {args.batch_size}, "
        f"{args.workers} workers"
    )
    print(f"feature pipeline (decode+resize+model): {pipeline:8.1f} img/s")
    print(f"model-only forward:                     {model:8.1f} img/s")
    print(f"decode+resize only:                     {decode:8.1f} img/s")
    print(f"ratio pipeline / model-only: {pipeline / model:.3f}")
    print(
        f"k-means, CUB-sized Small Cluster at rate 0.5: {seconds:.2f}s for {clusters} clusters "
        f"({dissolved} classes dissolved, {n} images, 512-d)"
    )


if __name__ == "__main__":
    main()

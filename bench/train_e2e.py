"""A real ``prism train`` run on a fake SOP-sized dataset of JPEGs, against the model-only step, run by hand.

Writes 59,551 training JPEGs in 11,318 classes (SOP's training split; 375-500 px photos-like content) and a small
test split, then trains ResNet-50 at 224 px with MCL + PRISM (bank of 59,551 x 128) for ``--iterations`` with each
``--decode`` mode. Peer: the model-only PRISM step (bench/prism_cost.py's, on a batch already on the device).
Prints end-to-end images/s (log steps after the first, so worker start-up is not counted), the ratio to the
model-only rate, GPU utilisation (NVML samples over the whole call, start-up and the final test pass included)
and peak GPU memory. ``--precision-check`` trains digits with bf16 and with fp32 for 3 seeds each and prints P@1.

    python bench/train_e2e.py --device cuda [--iterations 300] [--workers 15] [--decode workers device]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from noisekit.manifest import Manifest, ManifestMeta, make_frame, write_manifest
from prism.config import TrainConfig
from prism.train import load_checkpoint, train


def write_jpeg(job: tuple[str, int]) -> None:
    path, seed = job
    rng = np.random.default_rng(seed)
    size = (500, 375) if seed % 2 else (375, 500)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize(size, Image.BILINEAR).save(buf, format="JPEG", quality=90)
    Path(path).write_bytes(buf.getvalue())


def fake_sop(root: Path, train_images: int, classes: int, test_images: int) -> Path:
    rng = np.random.default_rng(0)
    train_labels = np.sort(np.concatenate([np.arange(classes), rng.integers(0, classes, train_images - classes)]))
    test_labels = classes + np.arange(test_images) // 4  # test classes of 4 images, disjoint from training
    labels = np.concatenate([train_labels, test_labels])
    split = ["train"] * train_images + ["test"] * test_images
    paths = [f"images/{i // 1000:03d}/{i:06d}.jpg" for i in range(len(labels))]
    for folder in {p.rsplit("/", 1)[0] for p in paths}:
        (root / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(write_jpeg, [(str(root / p), i) for i, p in enumerate(paths)], chunksize=256)
    print(f"wrote {len(paths):,} JPEGs in {time.perf_counter() - start:.1f} s", flush=True)
    names = tuple(f"class_{c}" for c in range(int(labels.max()) + 1))
    frame = make_frame([p[:-4] for p in paths], paths, split, labels)
    return write_manifest(Manifest(frame, ManifestMeta("sop-fake", str(root), names)), root / "clean.parquet")


class UtilisationSampler(threading.Thread):
    def __init__(self, device: torch.device) -> None:
        super().__init__(daemon=True)
        self.device, self.samples, self.done = device, [], threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.25):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception:  # no NVML
                return


def one_run(args: argparse.Namespace, manifest: Path, decode: str, out: Path) -> dict[str, float]:
    device = torch.device(args.device)
    config = TrainConfig(
        dataset=str(manifest),
        arch=args.arch,
        weights="random",
        device=args.device,
        iterations=args.iterations,
        eval_every=args.iterations,
        log_every=10,
        val_fraction=0.0,
        select="last",
        workers=args.workers,
        decode=decode,
        precision=args.precision,
        compile=args.compile,
        out=str(out),
    )
    sampler = UtilisationSampler(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        sampler.start()
    start = time.perf_counter()
    summary = train(config, progress=False)
    wall = time.perf_counter() - start
    sampler.done.set()
    steps = json.loads(load_checkpoint(out / "last.pt")["steps"])
    first, last = steps[0], steps[-1]
    rate = (last["iteration"] - first["iteration"]) * config.batch_size / (last["seconds"] - first["seconds"])
    return {
        "images_per_s": rate,
        "wall_s": wall,
        "gpu_util_mean": float(np.mean(sampler.samples)) if sampler.samples else float("nan"),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "test_p1": summary["test"]["precision_at_1"],
    }


def model_only(args: argparse.Namespace) -> float:
    """The PRISM training step on a batch already on the device, as bench/prism_cost.py times it."""
    from prism.filters.prism import PrismSelector
    from prism.memory import FeatureBank
    from prism.methods.mcl import MemoryContrastiveLoss
    from prism.models import build_model

    device, gpu = torch.device(args.device), args.device.startswith("cuda")
    model = build_model(args.arch, embed_dim=128, weights="random", seed=0).to(device)
    memory_format = torch.channels_last if gpu else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    if args.compile:
        model.backbone.compile()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    bank = FeatureBank(args.train_images, 128, num_classes=args.classes, device=device)
    selector = PrismSelector(args.classes, 128, rate=0.5, window=30, mode="centre", device=device)
    loss_fn = MemoryContrastiveLoss()
    images = torch.randint(0, 256, (64, 3, 224, 224), dtype=torch.uint8).to(device, memory_format=memory_format)
    labels = torch.randint(0, args.classes, (16,)).repeat_interleave(4).to(device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and gpu)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            emb = model(images).float()
        keep = selector(emb, labels, bank).keep
        loss = loss_fn(emb, labels, keep, bank)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bank.enqueue(emb.detach(), labels, keep)
        selector.update(bank, labels, keep)

    for _ in range(min(10, args.model_steps)):
        step()
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.model_steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    return args.model_steps * 64 / (time.perf_counter() - start)


def precision_check(args: argparse.Namespace) -> None:
    from noisekit.noise.common import save_variant
    from noisekit.noise.symmetric import symmetric
    from noisekit.sources.build import build

    _, clean = build("digits")
    save_variant(symmetric(clean.manifest, rate=0.5, seed=0))
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            for seed in range(3):
                config = TrainConfig(
                    dataset="digits/symmetric-0.5",
                    classes_per_batch=5,
                    samples_per_class=12,
                    iterations=400,
                    select="last",
                    seed=seed,
                    device=args.device,
                    precision=precision,
                    out=f"{tmp}/{precision}-{seed}",
                )
                summary = train(config, progress=False)
                results.setdefault(precision, []).append(summary["test"]["precision_at_1"])
    for precision, values in results.items():
        print(
            f"digits/symmetric-0.5, MCL + PRISM, 400 it, {precision}: test P@1 {np.mean(values):.3f} +- "
            f"{np.std(values):.3f} (seeds 0-2: {', '.join(f'{v:.3f}' for v in values)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--decode", nargs="+", default=["workers", "device"])
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model-steps", type=int, default=100, help="timed model-only steps")
    parser.add_argument("--train-images", type=int, default=59551)
    parser.add_argument("--classes", type=int, default=11318)
    parser.add_argument("--test-images", type=int, default=400)
    parser.add_argument("--root", type=Path, help="where the JPEGs go (default: a temporary folder)")
    parser.add_argument("--precision-check", action="store_true")
    args = parser.parse_args()
    if args.precision_check:
        precision_check(args)
        return
    gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "sop-fake"
        manifest = root / "clean.parquet"
        if not manifest.is_file():
            manifest = fake_sop(root, args.train_images, args.classes, args.test_images)
        peer = model_only(args)
        print(
            f"device: {name}; {args.arch} at 224 px, MCL + PRISM, batch 64, {args.workers} workers, "
            f"{args.iterations} iterations, precision {args.precision}{', compiled' if args.compile else ''}"
        )
        print(f"model-only PRISM step: {peer:8.1f} img/s")
        for decode in args.decode:
            r = one_run(args, manifest, decode, Path(tmp) / f"run-{decode}")
            print(
                f"  --decode {decode:<8} {r['images_per_s']:8.1f} img/s end to end, ratio to model-only "
                f"{r['images_per_s'] / peer:.3f}; GPU utilisation {r['gpu_util_mean']:.0f}% (mean over the call), "
                f"peak {r['peak_gib']:.2f} GiB, call {r['wall_s']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()

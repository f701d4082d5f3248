"""The training input pipeline at 224 px against the model's training step, run by hand (not by CI).

Peer: the model-only training step (forward, backward, Adam; ResNet-50, batch 64, bf16 on GPU, fp32 on CPU) on a
batch already on the device. Each pipeline variant decodes and augments the same JPEGs (RandomResizedCrop 224,
horizontal flip) in DataLoader workers and delivers batches to the device:
  pil-float     PIL decode, crop, flip, ToTensor + Normalize in the workers (float32; prism before this bench)
  workers       prism's --decode workers: torchvision.io.decode_jpeg (libjpeg-turbo) and tensor transforms in the
                workers, uint8 batches that the model normalises on the device
  device        prism's --decode device: the workers read bytes and draw crops; the device decodes the batch
                (nvJPEG on CUDA) and crops, resizes and flips there
Images: CUB-like 500x375 and CARS-like 1280x960 fake JPEGs (smooth content, quality 90).

    .venv/bin/python bench/pipeline.py [--device cpu|cuda] [--workers 2] [--images 512]
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
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from noisekit.noise.features import IMAGENET_MEAN, IMAGENET_STD
from prism.data import (
    CROP_RATIO,
    CROP_SCALE,
    EncodedImages,
    Images,
    Split,
    collate_encoded,
    decode_batch,
    train_transform,
)
from prism.models import build_model


def fake_jpegs(folder: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.BILINEAR).save(buf, format="JPEG", quality=90)
        path = folder / f"{size[0]}-{i:05d}.jpg"
        path.write_bytes(buf.getvalue())
        files.append(path)
    return files


class PilFloat(Dataset):
    """prism's input pipeline before this benchmark: PIL and float32 tensors normalised in the workers."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files = files
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        row, aug = key
        torch.manual_seed(aug)
        with Image.open(self.files[row]) as image:
            return self.transform(image.convert("RGB")), 0, row


def rate(name: str, files: list[Path], args: argparse.Namespace, device: torch.device) -> float:
    split = Split(files, np.zeros(len(files), np.int64), np.zeros(len(files), np.int64), np.zeros(len(files)), None)
    collate = None
    if name == "pil-float":
        dataset = PilFloat(files, args.image_size)
    elif name == "workers":
        dataset = Images(split, train_transform(False, args.image_size))
    else:
        dataset, collate = EncodedImages(split, args.image_size), collate_encoded
    keys = [(i, 1000 + i) for i in range(len(files))]
    batches = [keys[i : i + args.batch_size] for i in range(0, len(keys), args.batch_size)]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=args.workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if args.workers else None,
        persistent_workers=False,
    )
    start, seen = None, 0
    for i, (images, _, _) in enumerate(loader):
        if name == "device":
            images = decode_batch(images, args.image_size, device)
        images = images.to(device, non_blocking=True)
        if i == 0:  # workers started and warm
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            continue
        seen += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def model_rate(args: argparse.Namespace, device: torch.device, steps: int) -> float:
    gpu = device.type == "cuda"
    model = build_model(args.arch, embed_dim=128, weights="random", seed=0).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8)
    images = images.to(device, memory_format=torch.channels_last if gpu else torch.contiguous_format)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            emb = model(images).float()
        loss = (emb @ emb.T).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize()
    return steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model-steps", type=int, default=0, help="default: 3 on CPU, 50 on GPU")
    parser.add_argument("--variants", nargs="+", default=["pil-float", "workers", "device"])
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    model = model_rate(args, device, args.model_steps or (50 if gpu else 3))
    print(f"device: {name}; {args.workers} workers, batch {args.batch_size}, {args.image_size} px")
    print(f"model-only training step ({args.arch}, {'bf16' if gpu else 'fp32'}): {model:8.1f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((500, 375), (1280, 960)):
            files = fake_jpegs(Path(tmp), args.images, size, seed=0)
            rates = {variant: rate(variant, files, args, device) for variant in args.variants}
            base = rates.get("pil-float")
            for variant, r in rates.items():
                versus = f"   / pil-float {r / base:5.2f}" if base else ""
                print(f"  {size[0]}x{size[1]} {variant:<10} {r:8.1f} img/s   / model-only {r / model:6.2f}{versus}")


if __name__ == "__main__":
    main()

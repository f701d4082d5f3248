"""The training input pipeline: torchvision JPEG decoding, uint8 batches normalised by the model, and --decode
device (the workers draw crops from the header, the device decodes) equal to the workers path on the CPU."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, ManifestMeta, make_frame, write_manifest
from noisekit.noise.features import IMAGENET_MEAN, IMAGENET_STD
from prism.config import TrainConfig
from prism.data import (
    EncodedImages,
    Images,
    Split,
    collate_encoded,
    decode_batch,
    eval_transform,
    read_image,
    train_transform,
)
from prism.models import build_model
from prism.train import train


def _photo(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)


def _images(folder: Path, n: int, *, png_every: int = 0, size: tuple[int, int] = (90, 70)) -> list[Path]:
    """JPEGs of several sizes (colour and greyscale); every ``png_every``-th image a PNG."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        image = _photo(rng, (size[0] + 7 * (i % 3), size[1] + 5 * (i % 4)))
        if i % 5 == 4:
            image = image.convert("L")
        png = png_every and i % png_every == png_every - 1
        path = folder / f"{i:03d}.{'png' if png else 'jpg'}"
        image.save(path, format="PNG" if png else "JPEG", quality=90)
        files.append(path)
    return files


def _split(files: list[Path]) -> Split:
    n = len(files)
    labels = np.arange(n) % 4
    return Split(files, labels, labels, np.zeros(n, np.int64), np.array([f.stem for f in files]))


def test_read_image_matches_pil_and_names_a_broken_file(tmp_path: Path) -> None:
    jpeg, png = _images(tmp_path / "ok", 2, png_every=2)
    with Image.open(jpeg) as image:
        reference = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)
    ours = read_image(jpeg)
    assert ours.dtype == torch.uint8 and ours.shape == reference.shape
    assert (ours.int() - reference.int()).abs().float().mean() < 1.0  # libjpeg-turbo in both; IDCT rounding only
    with Image.open(png) as image:
        assert torch.equal(read_image(png), torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg.read_bytes()[:40])
    with pytest.raises(NoisekitError, match="broken.jpg: cannot read image"):
        read_image(broken)
    with pytest.raises(NoisekitError, match="absent.jpg: cannot read image"):
        read_image(tmp_path / "absent.jpg")


def test_transforms_give_uint8_crops_of_the_requested_size(tmp_path: Path) -> None:
    files = _images(tmp_path, 6)
    images = Images(_split(files), train_transform(False, 48))
    first, second = images[(3, 123)][0], images[(3, 123)][0]
    assert first.dtype == torch.uint8 and first.shape == (3, 48, 48)
    assert torch.equal(first, second)  # the augmentation is a function of the seed
    assert not torch.equal(first, images[(3, 124)][0])
    evaluated = Images(_split(files), eval_transform(False, 48))[0][0]
    assert evaluated.shape == (3, 48, 48) and evaluated.dtype == torch.uint8


def test_device_decoding_equals_the_workers_path_on_cpu(tmp_path: Path) -> None:
    files = _images(tmp_path, 24, png_every=6)
    split = _split(files)
    keys = [(row, 1000 + row) for row in range(len(files))]
    workers = torch.stack([Images(split, train_transform(False, 40))[key][0] for key in keys])
    encoded, labels, rows = collate_encoded([EncodedImages(split, 40)[key] for key in keys])
    assert encoded.jpeg == [not f.name.endswith(".png") for f in files]
    on_device = decode_batch(encoded, 40, torch.device("cpu"))
    assert torch.equal(on_device, workers)
    assert torch.equal(labels, torch.as_tensor(split.labels)) and torch.equal(rows, torch.arange(len(files)))
    # through a DataLoader with worker processes, as prism train runs it
    loader = DataLoader(
        EncodedImages(split, 40), batch_sampler=[keys[:12], keys[12:]], collate_fn=collate_encoded, num_workers=2
    )
    batches = [decode_batch(batch, 40, torch.device("cpu")) for batch, _, _ in loader]
    assert torch.equal(torch.cat(batches), workers)


def test_model_normalises_uint8_images_as_to_tensor_and_normalize_do(tmp_path: Path) -> None:
    model = build_model("small_cnn", embed_dim=16, weights="random", seed=0).eval()
    images = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8)
    normalise = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    as_float = torch.stack([normalise(transforms.ToTensor()(img.permute(1, 2, 0).numpy())) for img in images])
    with torch.no_grad():
        assert torch.equal(model(images), model(as_float))


def test_decode_device_trains_exactly_as_decode_workers_on_cpu(home: Path, tmp_path: Path) -> None:
    files = _images(home / "tiny" / "images", 48, size=(60, 50))
    labels = np.arange(48) // 6  # 8 classes of 6: 0-3 train, 4-7 test
    split = np.where(labels < 4, "train", "test")
    frame = make_frame([f.stem for f in files], [f"images/{f.name}" for f in files], split, labels)
    meta = ManifestMeta("tiny", str(home / "tiny"), tuple(f"c{k}" for k in range(8)))
    manifest = write_manifest(Manifest(frame, meta), home / "tiny" / "clean.parquet")
    summaries = []
    for decode in ("workers", "device"):
        config = TrainConfig(
            dataset=str(manifest),
            arch="resnet18",
            weights="random",
            image_size=32,
            classes_per_batch=2,
            samples_per_class=3,
            iterations=3,
            eval_every=3,
            log_every=1,
            val_fraction=0,
            workers=0,
            decode=decode,
            out=str(tmp_path / decode),
        )
        summaries.append(train(config, progress=False))
    assert summaries[0]["test"] == summaries[1]["test"]
    first = torch.load(tmp_path / "workers" / "last.pt", weights_only=True)["model"]
    second = torch.load(tmp_path / "device" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_bad_decode_option_is_one_line() -> None:
    with pytest.raises(NoisekitError, match="--decode must be one of workers, device, got 'gpu'"):
        TrainConfig(decode="gpu")


def test_jpeg_bytes_round_trip_is_what_the_device_decodes(tmp_path: Path) -> None:
    """A worker ships the file's exact bytes; the crop box lies inside the image."""
    files = _images(tmp_path, 3)
    item = EncodedImages(_split(files), 32)[(1, 7)]
    data, jpeg, box, flip = item[:4]
    assert jpeg and bytes(data.numpy()) == files[1].read_bytes()
    with Image.open(io.BytesIO(files[1].read_bytes())) as image:
        width, height = image.size
    top, left, h, w = box
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    assert isinstance(flip, bool)

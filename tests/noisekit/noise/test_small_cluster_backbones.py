"""Small Cluster with other feature models (issue 21): efficientnet_lite0's offline ImageNet weights and a timm
backbone on the real digits, the record naming the model, and a feature cache keyed by backbone, size and content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import one_line_error

from noisekit.cli import app
from noisekit.hub.cards import commands
from noisekit.manifest import read_manifest
from noisekit.noise.features import FeatureOptions, ManifestImages, embed, eval_transform, feature_trunk
from noisekit.sources.build import build

FAST = ["--workers", "0", "--batch-size", "256"]
MAKE = ["make", "small-cluster", "--dataset", "digits", "--rate", "0.5", *FAST]


@pytest.fixture
def digits(home: Path) -> Path:
    return build("digits")[0]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No download can happen: an empty torch and Hugging Face cache, and both offline switches on."""
    monkeypatch.setenv("NOISEKIT_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def _train_files(digits: Path) -> list[Path]:
    manifest = read_manifest(digits)
    return [manifest.resolve(p) for p in manifest.split("train")["path"]]


def _features_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("features: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_efficientnet_lite0_imagenet_offline(runner, digits: Path, home: Path, offline: None) -> None:
    result = runner.invoke(app, [*MAKE, "--backbone", "efficientnet_lite0", "--image-size", "32"])
    assert result.exit_code == 0, result.output
    n = len(_train_files(digits))
    cache = home / "digits" / "features" / "efficientnet_lite0-imagenet-32.npz"
    assert _features_line(result.output).startswith(
        f"features: {n:,} efficientnet_lite0 (imagenet, 32 px) computed in "
    )
    assert _features_line(result.output).endswith(f" -> {cache}")
    record = {"feature_model": "efficientnet_lite0", "weights": "imagenet", "image_size": 32, "feature_dim": 1280}
    noise = read_manifest(home / "digits" / "small_cluster-0.5.parquet").meta.noise
    assert {k: noise[k] for k in record} == record
    report = json.loads((home / "digits" / "small_cluster-0.5.report.json").read_text())
    assert {k: report[k] for k in record} == record
    with np.load(cache) as data:
        cached = data["features"]
    assert cached.shape == (n, 1280)
    # the reference: timm's tf_efficientnet_lite0 statistics (mean = std = 0.5), not ImageNet's, fed to the trunk
    model = feature_trunk("efficientnet_lite0", "imagenet")
    images = ManifestImages(_train_files(digits)[:8], eval_transform(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(model.module(torch.stack(list(images))), dim=1).numpy()
    np.testing.assert_allclose(cached[:8], reference, atol=1e-5)


def test_feature_cache_keyed_by_backbone_size_and_content(runner, digits: Path, home: Path) -> None:
    folder = home / "digits" / "features"
    n = len(_train_files(digits))

    def make(backbone: str, size: int) -> str:
        args = [*MAKE, "--backbone", backbone, "--weights", "random", "--image-size", str(size), "--overwrite"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        line = _features_line(result.output)
        assert line.startswith(f"features: {n:,} {backbone} (random, {size} px) ")
        return line

    cache = folder / "resnet18-random-32.npz"
    assert " computed in " in make("resnet18", 32) and make("resnet18", 32).endswith(f" from cache {cache}")
    lite = folder / "efficientnet_lite0-random-32.npz"
    assert " computed in " in make("efficientnet_lite0", 32)  # not resnet18's features at the same size
    assert make("efficientnet_lite0", 32).endswith(f" from cache {lite}")
    assert " computed in " in make("efficientnet_lite0", 40)
    for image in _train_files(digits):  # same ids, other content: a rebuild from another copy
        image.write_bytes(image.read_bytes())
        os.utime(image, ns=(1, 1))
    assert " computed in " in make("efficientnet_lite0", 32)
    assert sorted(p.name for p in folder.iterdir()) == [
        "efficientnet_lite0-random-32.npz",
        "efficientnet_lite0-random-40.npz",
        "resnet18-random-32.npz",
    ]
    with np.load(cache) as small, np.load(lite) as large:
        assert small["features"].shape == (n, 512) and large["features"].shape == (n, 1280)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["resnet34"], ["--backbone 'resnet34': expected one of resnet18, resnet50, efficientnet_lite0, timm:NAME"]),
        (["timm:"], ["--backbone 'timm:': expected one of"]),
        (["timm:no_such_net"], ["--backbone timm:no_such_net: timm ", " has no model of that name"]),
        (["timm:resnet18.no_such_tag"], ["--backbone timm:resnet18.no_such_tag: timm ", " has no model"]),
        (
            ["timm:vit_tiny_patch16_224", "--image-size", "64"],
            ["--image-size 64: timm:vit_tiny_patch16_224 takes only 224"],
        ),
    ],
)
def test_invalid_backbone_is_one_line_error(runner, digits: Path, home: Path, args: list, needles: list) -> None:
    before = sorted(home.rglob("*"))
    one_line_error(runner.invoke(app, [*MAKE, "--weights", "random", "--backbone", *args]), *needles)
    assert sorted(home.rglob("*")) == before


def test_timm_backbone_random_weights_offline(runner, digits: Path, home: Path, offline: None) -> None:
    args = [*MAKE, "--backbone", "timm:resnet18", "--weights", "random", "--image-size", "32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert " computed in " in _features_line(result.output)
    assert (home / "digits" / "features" / "timm-resnet18-random-32.npz").is_file()
    noise = read_manifest(home / "digits" / "small_cluster-0.5.parquet").meta.noise
    assert (noise["feature_model"], noise["weights"], noise["image_size"], noise["feature_dim"]) == (
        "timm:resnet18",
        "random",
        32,
        512,
    )
    # random weights come from the fixed seed, whatever the caller's random state
    files, options = _train_files(digits)[:4], FeatureOptions("random", 32, 4, 0, backbone="timm:resnet18")
    torch.manual_seed(1)
    first = embed(files, options)
    torch.manual_seed(2)
    np.testing.assert_array_equal(first, embed(files, options))


def test_default_image_size_is_the_backbones_input_size() -> None:
    sizes = {b: FeatureOptions(backbone=b).resolved().image_size for b in ("resnet18", "efficientnet_lite0")}
    assert sizes == {"resnet18": 224, "efficientnet_lite0": 224}
    assert FeatureOptions(image_size=64, backbone="timm:resnet18").resolved().image_size == 64


def test_card_command_names_the_backbone() -> None:
    noise = {"model": "small_cluster", "requested_rate": 0.5, "seed": 0, "image_size": 64}
    new = {**noise, "feature_model": "efficientnet_lite0", "weights": "imagenet"}
    meta = {"dataset": "omniglot", "variant": "small_cluster-0.5"}
    assert commands({**meta, "noise": new})[1] == (
        "noisekit make small-cluster --dataset omniglot --rate 0.5 --seed 0 --backbone efficientnet_lite0 "
        "--weights imagenet --image-size 64"
    )
    old = {**noise, "feature_model": "resnet18", "weights": "resnet18-file-0123abcd-64"}  # a record before issue 21
    assert commands({**meta, "noise": old})[1:] == [
        "noisekit make small-cluster --dataset omniglot --rate 0.5 --seed 0 --backbone resnet18 --weights FILE "
        "--image-size 64",
        "# FILE: a resnet18 state dict whose sha256 starts with 0123abcd",
    ]

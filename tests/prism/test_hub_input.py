"""prism on published data: a published folder (``DIR/CONFIG``) becomes the same Manifest, images and all, and
trains; malformed ``hub:`` references and labels-only folders are clear errors."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from noisekit.errors import NoisekitError
from noisekit.hub.publish import PublishOptions, publish
from noisekit.manifest import Manifest, read_manifest
from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build
from prism.cli import app
from prism.config import TrainConfig
from prism.data import load_manifest
from prism.train import train

FAST = dict(classes_per_batch=5, samples_per_class=4, eval_every=6, log_every=3, val_fraction=0.2)
COLUMNS = ["image_id", "split", "clean_label", "label", "is_noisy"]


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """digits/symmetric-0.5 published with images, and digits/clean published --labels-only."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEKIT_HOME", str(home))
        _, result = build("digits")
        path, _ = save_variant(symmetric(result.manifest, rate=0.5, seed=0))
        out = home.parent / "published"
        publish("digits", out, PublishOptions(variants=("symmetric-0.5",)))
        publish("digits", home.parent / "labels", PublishOptions(variants=("clean",), labels_only=True))
    return out, read_manifest(path)


def test_a_published_folder_trains(published: tuple[Path, Manifest], home: Path, tmp_path: Path) -> None:
    out, original = published
    ref = str(out / "symmetric-0.5")
    manifest = load_manifest(ref)
    for split in ("train", "test"):  # the materialised manifest lists train, then test
        mine, theirs = manifest.split(split)[COLUMNS], original.split(split)[COLUMNS]
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs.reset_index(drop=True))
    assert manifest.meta.class_names == original.meta.class_names and manifest.meta.noise == original.meta.noise
    assert Path(manifest.meta.root).is_relative_to(home / "hub")
    by_id = dict(zip(original.frame["image_id"], original.frame["path"], strict=True))
    for image_id, rel in zip(manifest.frame["image_id"], manifest.frame["path"], strict=True):
        own = by_id[image_id]
        with Image.open(manifest.resolve(rel)) as a, Image.open(original.resolve(own)) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    cached = next((home / "hub").glob("*/symmetric-0.5/manifest.parquet"))
    written = cached.stat().st_mtime_ns
    assert load_manifest(str(out)).frame.equals(manifest.frame)  # the folder itself: its only configuration
    assert cached.stat().st_mtime_ns == written  # materialised once

    summary = train(TrainConfig(dataset=ref, iterations=6, out=str(tmp_path / "run"), **FAST), progress=False)
    assert 0 <= summary["test"]["precision_at_1"] <= 1
    assert summary["noise_detection"]["flagged_fraction"] is not None


def test_bad_published_references(
    published: tuple[Path, Manifest], home: Path, tmp_path: Path, runner: CliRunner
) -> None:
    with pytest.raises(NoisekitError, match=r"--dataset 'hub:bad': expected hub:OWNER/REPO:CONFIG"):
        load_manifest("hub:bad")
    with pytest.raises(NoisekitError, match="not a valid repository id"):
        load_manifest("hub:owner/bad--name:clean")
    result = runner.invoke(app, ["train", "--dataset", "hub:bad", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "error: --dataset 'hub:bad'" in result.output

    with pytest.raises(NoisekitError, match="published --labels-only and holds no images"):
        load_manifest(str(published[0].parent / "labels" / "clean"))

"""prism on published data: a published folder (``DIR/CONFIG``) becomes the same Manifest, images and all, and
trains; labels-only data trains joined with a local copy of its images (``--root``); malformed ``hub:`` references,
rows that lead out of their folder and missing images are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cli_checks import one_line_error
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

ESCAPE = "../../../../etc/passwd"
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

    with pytest.raises(NoisekitError, match=r"published --labels-only \(its rows name image files, not images\)"):
        load_manifest(str(published[0].parent / "labels" / "clean"))


def test_labels_only_trains_with_root(
    published: tuple[Path, Manifest], home: Path, tmp_path: Path, runner: CliRunner
) -> None:
    ref, raw = str(published[0].parent / "labels" / "clean"), tmp_path / "raw"
    clean = read_manifest(Path(published[1].meta.root).parent.parent / "digits" / "clean.parquet")
    shutil.copytree(clean.meta.root, raw)  # the user's own copy of the source's raw folder
    joined = load_manifest(ref, root=str(raw))
    for split in ("train", "test"):  # the round trip is exact
        mine, theirs = (m.split(split)[[*COLUMNS, "path"]].reset_index(drop=True) for m in (joined, clean))
        pd.testing.assert_frame_equal(mine, theirs)
    assert all(joined.resolve(p) == raw / p for p in joined.frame["path"])
    fast = ["--classes-per-batch", "5", "--samples-per-class", "4", "--eval-every", "5", "--val-fraction", "0.2"]
    run = tmp_path / "run"
    args = ["train", "--dataset", ref, "--root", str(raw), "--iterations", "5", "--out", str(run), *fast]
    trained = runner.invoke(app, args)
    assert trained.exit_code == 0, trained.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 5 and yaml.safe_load((run / "config.yaml").read_text())["root"] == str(raw)

    other = tmp_path / "other"
    one_line_error(
        runner.invoke(app, ["train", "--dataset", ref, "--out", str(other)]),
        f"{ref} was published --labels-only",
        "give --root RAW",
    )
    paths = list(clean.frame["path"])
    for rel in paths[3:6]:
        (raw / rel).unlink()
    missing = runner.invoke(app, ["train", "--dataset", ref, "--root", str(raw), "--out", str(other)])
    one_line_error(missing, f"--root {raw}: 3 of 1,797 image(s) of {ref} are not there (first: {paths[3]})")
    images = str(published[0] / "symmetric-0.5")
    one_line_error(
        runner.invoke(app, ["train", "--dataset", images, "--root", str(raw), "--out", str(other)]),
        f"--root {raw}: {images} holds its images; --root is for data published --labels-only",
    )
    assert not other.exists()


def _tamper(shard: Path, column: str, row: int, value: str) -> None:
    """Rewrite one cell of a published shard, its schema (and noisekit record) kept, as a hostile copy would."""
    table = pq.read_table(shard)
    cells = table.column(column).to_pylist()
    cells[row] = value
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, table.schema.field(column), pa.array(cells, pa.string())), shard)


def test_rows_that_lead_out_are_refused_before_any_image(
    published: tuple[Path, Manifest], home: Path, tmp_path: Path, runner: CliRunner
) -> None:
    labels = tmp_path / "labels"
    shutil.copytree(published[0].parent / "labels", labels)
    shard = labels / "clean" / "train-00000-of-00001.parquet"
    _tamper(shard, "path", 3, ESCAPE)
    run = tmp_path / "run"
    raw = published[1].meta.root  # the module's digits images: the rows before row 3 are there
    refused = runner.invoke(
        app, ["train", "--dataset", str(labels / "clean"), "--root", raw, "--iterations", "2", "--out", str(run)]
    )
    one_line_error(refused, f"{shard} row 3: path {ESCAPE!r} must be relative to --root and stay inside it")

    images = tmp_path / "images"
    shutil.copytree(published[0], images)
    shard = images / "symmetric-0.5" / "train-00000-of-00001.parquet"
    _tamper(shard, "image_id", 2, ESCAPE)
    refused = runner.invoke(app, ["train", "--dataset", str(images / "symmetric-0.5"), "--out", str(run)])
    one_line_error(refused, f"{shard} row 2: image_id {ESCAPE!r} would be written outside the folder")
    assert not list((home / "hub").rglob("*.png"))  # nothing was materialised
    assert not run.exists()

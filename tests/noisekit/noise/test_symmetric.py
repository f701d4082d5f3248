"""Symmetric noise on the real digits: exact per-class counts, no self-flips, reproducible bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisekit.build import build
from noisekit.cli import app
from noisekit.manifest import read_manifest


@pytest.fixture
def digits(home: Path) -> Path:
    return build("digits")[0]


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.37])
def test_exact_counts_per_class(runner, digits: Path, home: Path, rate: float) -> None:
    result = runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", str(rate), "--seed", "7"])
    assert result.exit_code == 0, result.output
    clean = read_manifest(digits)
    noisy = read_manifest(home / "digits" / f"symmetric-{rate:g}.parquet")
    train = noisy.split("train")
    expected_total = 0
    for c, n_c in clean.split("train")["clean_label"].value_counts().items():
        moved = train[(train["clean_label"] == c) & (train["label"] != c)]
        expected = int(np.floor(rate * n_c + 0.5))
        assert len(moved) == expected, (c, n_c)
        expected_total += expected
    flipped = train["label"] != train["clean_label"]
    assert (train["is_noisy"] == flipped).all()
    assert set(train["label"]) <= set(range(5))  # class count unchanged, labels stay among training classes
    assert noisy.meta.noise["realised_rate"] == pytest.approx(expected_total / len(train))
    assert abs(noisy.meta.noise["realised_rate"] - rate) < 0.5 / 170
    # the test split is untouched
    assert noisy.split("test").equals(clean.split("test"))


def test_same_seed_same_bytes_other_seed_differs(runner, digits: Path, home: Path) -> None:
    path = home / "digits" / "symmetric-0.4.parquet"
    args = ["make", "symmetric", "--dataset", "digits", "--rate", "0.4"]
    runner.invoke(app, [*args, "--seed", "1"])
    first = path.read_bytes()
    runner.invoke(app, [*args, "--seed", "1"])
    assert path.read_bytes() == first
    runner.invoke(app, [*args, "--seed", "2"])
    assert path.read_bytes() != first


def test_report_json_and_png(runner, digits: Path, home: Path) -> None:
    runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", "0.3", "--seed", "0"])
    report = json.loads((home / "digits" / "symmetric-0.3.report.json").read_text())
    noisy = read_manifest(home / "digits" / "symmetric-0.3.parquet").split("train")
    assert report["noisy"] == int(noisy["is_noisy"].sum()) == sum(report["noisy_per_class"].values())
    top = report["top_transitions"][0]
    pairs = noisy[noisy["is_noisy"].astype(bool)].groupby(["clean_label", "label"]).size()
    assert top["count"] == pairs.max() and top["clean"] != top["noisy"]
    with Image.open(home / "digits" / "symmetric-0.3.report.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    info = runner.invoke(app, ["info", "digits/symmetric-0.3", "--json"])
    noise = json.loads(info.output)["noise"]
    assert noise["model"] == "symmetric" and noise["requested_rate"] == 0.3 and noise["seed"] == 0


@pytest.mark.parametrize("rate", ["1.0", "-0.1", "1.5"])
def test_rate_out_of_range(runner, digits: Path, home: Path, rate: str) -> None:
    result = runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", rate])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --rate must be in [0, 1), got {float(rate)}"
    assert sorted(p.name for p in (home / "digits").glob("*.parquet")) == ["clean.parquet"]


def test_dataset_not_built(runner) -> None:
    result = runner.invoke(app, ["make", "symmetric", "--dataset", "cub", "--rate", "0.5"])
    assert result.exit_code == 2 and "dataset 'cub' is not built" in result.output

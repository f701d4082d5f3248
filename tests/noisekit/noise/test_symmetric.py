"""Symmetric noise: the exact total round(R * N), floor or ceil of R * n_c per class with the right expectation (real
digits and an SOP-shaped manifest of small classes), no self-flips, reproducible bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisekit.cli import app
from noisekit.manifest import Manifest, ManifestMeta, make_frame, read_manifest
from noisekit.noise.symmetric import flip_counts, symmetric
from noisekit.sources.build import build


@pytest.fixture
def digits(home: Path) -> Path:
    return build("digits")[0]


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.37])
def test_exact_total_floor_or_ceil_per_class(runner, digits: Path, home: Path, rate: float) -> None:
    result = runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", str(rate), "--seed", "7"])
    assert result.exit_code == 0, result.output
    clean = read_manifest(digits)
    noisy = read_manifest(home / "digits" / f"symmetric-{rate:g}.parquet")
    train = noisy.split("train")
    for c, n_c in clean.split("train")["clean_label"].value_counts().items():
        moved = int(((train["clean_label"] == c) & (train["label"] != c)).sum())
        assert moved in (np.floor(rate * n_c), np.ceil(rate * n_c)), (c, n_c, moved)
    flipped = train["label"] != train["clean_label"]
    assert int(flipped.sum()) == int(np.floor(rate * len(train) + 0.5))
    assert (train["is_noisy"] == flipped).all()
    assert set(train["label"]) <= set(range(5))  # class count unchanged, labels stay among training classes
    assert noisy.meta.noise["realised_rate"] == pytest.approx(int(flipped.sum()) / len(train))
    # the test split is untouched
    assert noisy.split("test").equals(clean.split("test"))


def sop_shaped(classes: int = 3000, seed: int = 0) -> Manifest:
    """A clean manifest with SOP's class sizes (2-12 images per class, most of them small) and no image files."""
    rng = np.random.default_rng(seed)
    sizes = np.minimum(rng.geometric(0.35, size=classes) + 1, 12)
    clean = np.repeat(np.arange(classes), sizes)
    n = len(clean)
    ids = [f"i{k}" for k in range(n)]
    frame = make_frame(ids, [f"{k}.jpg" for k in ids], ["train"] * n, clean)
    return Manifest(frame, ManifestMeta("sop", "/nowhere", tuple(f"c{k}" for k in range(classes))))


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5])
def test_sop_shaped_total_exact_and_unbiased(rate: float) -> None:
    clean = sop_shaped()
    sizes = clean.frame["clean_label"].value_counts().sort_index().to_numpy()
    noisy = symmetric(clean, rate=rate, seed=3)
    frame = noisy.frame
    moved = (frame["label"] != frame["clean_label"]).groupby(frame["clean_label"]).sum().sort_index().to_numpy()
    assert moved.sum() == int(np.floor(rate * sizes.sum() + 0.5))
    assert ((moved == np.floor(rate * sizes)) | (moved == np.ceil(rate * sizes))).all()
    # per class size the mean count is R * n_c (not round(R * n_c), which gives 1 of 2 at 50% and 0 of 2 at 10%)
    for n_c in (2, 3, 4):
        assert moved[sizes == n_c].mean() == pytest.approx(rate * n_c, abs=0.1)
    # the share of classes touched is its expectation: 1 - P(count = 0) summed over classes
    expected_touched = np.where(rate * sizes >= 1, 1.0, rate * sizes).mean()
    assert (moved > 0).mean() == pytest.approx(expected_touched, abs=0.03)
    assert noisy.meta.noise["classes_touched"] == int((moved > 0).sum())
    again = symmetric(clean, rate=rate, seed=3).frame
    assert again.equals(frame)
    assert not symmetric(clean, rate=rate, seed=4).frame.equals(frame)


def test_flip_counts_expectation_per_class() -> None:
    sizes = np.array([2, 3, 5, 7, 2, 2, 11, 4])
    rate = 0.25  # R * N = 9 exactly: the expectation is R * n_c with no rounding of the total
    mean = np.mean([flip_counts(sizes, rate, np.random.default_rng(s)) for s in range(4000)], axis=0)
    np.testing.assert_allclose(mean, rate * sizes, atol=0.03)


def test_same_seed_same_bytes_other_seed_differs(runner, digits: Path, home: Path) -> None:
    path = home / "digits" / "symmetric-0.4.parquet"
    args = ["make", "symmetric", "--dataset", "digits", "--rate", "0.4"]
    runner.invoke(app, [*args, "--seed", "1"])
    first = path.read_bytes()
    runner.invoke(app, [*args, "--seed", "1"])
    assert path.read_bytes() == first
    assert runner.invoke(app, [*args, "--seed", "2"]).exit_code == 2  # another seed replaces it only when told
    assert path.read_bytes() == first
    assert runner.invoke(app, [*args, "--seed", "2", "--overwrite"]).exit_code == 0
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


def test_dataset_option_takes_name_or_name_clean(runner, digits: Path, home: Path) -> None:
    ok = runner.invoke(app, ["make", "symmetric", "--dataset", "digits/clean", "--rate", "0.2", "--variant", "v"])
    assert ok.exit_code == 0, ok.output
    assert (home / "digits" / "v.parquet").is_file()
    bad = runner.invoke(app, ["make", "symmetric", "--dataset", "digits/v", "--rate", "0.2"])
    assert bad.exit_code == 2
    assert "--dataset takes NAME or NAME/clean (noise goes on the clean manifest), got 'digits/v'" in bad.output


def test_flip_counts_stay_floor_or_ceil_for_few_classes_and_extreme_rates() -> None:
    # a capped class used to be rescaled again past 1 and take two extras ([11, 8, 23, 1] at 0.995 gave the 1-image
    # class 2 flips); random small cases, the total and floor/ceil rule checked each time
    assert flip_counts(np.array([11, 8, 23, 1]), 0.995, np.random.default_rng(206)).tolist()[3] <= 1
    rng = np.random.default_rng(0)
    for case in range(400):
        sizes = rng.integers(1, 30, size=rng.integers(2, 11))
        rate = float(rng.choice([rng.random() * 0.999, 0.995, 0.74, 0.5]))
        counts = flip_counts(sizes, rate, np.random.default_rng(case))
        assert counts.sum() == int(np.floor(rate * sizes.sum() + 0.5 + 1e-9)), (sizes, rate)
        share = rate * sizes
        assert ((counts >= np.floor(share + 1e-9)) & (counts <= np.ceil(share - 1e-9))).all(), (sizes, rate, counts)


@pytest.mark.parametrize(
    ("rate", "realised", "noisy"),
    [("0.9999", "1.0000", 901), ("0.0001", "0.0000", 0), ("0.0006", "0.0011", 1), ("0.2", None, 180)],
)
def test_a_rate_that_rounding_changes_is_warned_about(
    runner, digits: Path, home: Path, rate: str, realised: str | None, noisy: int
) -> None:
    """digits has 901 training images: 0.9999 rounds to every label wrong, 0.0001 to none, 0.0006 to 1/901."""
    result = runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", rate])
    assert result.exit_code == 0, result.output
    assert f"({noisy:,} of 901 training labels noisy)" in result.stdout
    if realised is None:
        assert result.stderr == ""
    else:
        assert result.stderr == (
            f"warning: requested rate {rate} realised {realised}: round({rate} x 901 training images) = "
            f"{noisy} noisy label(s)\n"
        )

"""Cleaned variants from a real prism run on the real digits (50% symmetric noise): exact counts and scores computed by
hand from the run's noise report, untouched unjudged rows, relabelling, a publish / load round trip, training on
the result, and bad input through the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pandas as pd
import pytest
from cli_checks import one_line_error
from typer.testing import CliRunner

from noisekit.cli import app
from noisekit.manifest import Manifest, read_manifest
from noisekit.noise.common import save_variant
from noisekit.noise.run_report import is_flagged
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build
from prism.cli import app as prism_app
from prism.config import TrainConfig
from prism.train import train

NOISY = "digits/symmetric-0.5"
FAST = dict(classes_per_batch=5, samples_per_class=4, eval_every=12, log_every=6, val_fraction=0.2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A data home with digits and its symmetric-0.5 variant, and a finished 12-iteration PRISM run on the variant."""
    home = tmp_path_factory.mktemp("home")
    run = home.parent / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEKIT_HOME", str(home))
        _, result = build("digits")
        save_variant(symmetric(result.manifest, rate=0.5, seed=0))
        train(TrainConfig(dataset=NOISY, iterations=12, out=str(run), **FAST), progress=False)
    return home, run


@pytest.fixture
def run(trained: tuple[Path, Path], home: Path) -> Path:
    """This test's data home holds the module's manifests (their root is the module's images); yields the run."""
    (home / "digits").mkdir(parents=True)
    for path in (trained[0] / "digits").glob("*.parquet"):
        shutil.copyfile(path, home / "digits" / path.name)
    return trained[1]


def variant(home: Path, name: str) -> Manifest:
    return read_manifest(home / "digits" / f"{name}.parquet")


def by_hand(run: Path) -> tuple[pd.DataFrame, np.ndarray]:
    report = pd.read_parquet(run / "noise_report.parquet")
    return report, ((report["times_seen"] > 0) & (report["times_flagged"] * 2 > report["times_seen"])).to_numpy()


def copy_run(run: Path, dest: Path, *, report: Callable | None = None, summary: Callable | None = None) -> Path:
    """A copy of the run folder whose report and summary the given functions rewrite."""
    shutil.copytree(run, dest)
    if report is not None:
        report(pd.read_parquet(dest / "noise_report.parquet")).to_parquet(dest / "noise_report.parquet", index=False)
    if summary is not None:
        payload = json.loads((dest / "summary.json").read_text())
        (dest / "summary.json").write_text(json.dumps(summary(payload)))
    return dest


def with_likely(frame: pd.DataFrame) -> pd.DataFrame:
    """A likely_label column (prism writes one on main; older reports lack it): the clean class of every other
    flagged image, the next training class for the rest, -1 for images never drawn."""
    if "likely_label" in frame.columns:
        return frame
    wrong = (frame["clean_label"] + 1) % 5
    guess = np.where(np.arange(len(frame)) % 2 == 0, frame["clean_label"], wrong)
    frame["likely_label"] = np.where(frame["times_seen"] > 0, guess, -1).astype(np.int64)
    return frame


def test_removal_drops_exactly_the_flagged_images(run: Path, home: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["make", "cleaned", "--dataset", NOISY, "--from", str(run)])
    assert result.exit_code == 0, result.output
    report, flagged = by_hand(run)
    summary = json.loads((run / "summary.json").read_text())
    drawn = int((report["times_seen"] > 0).sum())
    assert 0 < flagged.sum() < drawn
    # the rule in noisekit is prism's: the same count and precision as the run's own summary
    assert flagged.sum() == round(summary["noise_detection"]["flagged_fraction"] * drawn)
    assert np.array_equal(is_flagged(report["times_seen"], report["times_flagged"]), flagged)

    parent, out = variant(home, "symmetric-0.5"), variant(home, "symmetric-0.5-cleaned")
    removed = set(report["image_id"][flagged])
    kept = parent.frame[~parent.frame["image_id"].isin(removed)].reset_index(drop=True)
    assert out.frame.equals(kept)  # every other row as it was: unjudged validation rows and the test split included
    train = parent.split("train")
    judged = set(report["image_id"])
    assert len(out.split("train")) == len(train) - len(removed)
    assert len(train) - len(judged) == 181  # digits' per-image validation carve-out: not judged, kept

    noisy = report["is_noisy"].to_numpy(dtype=bool)
    noise = out.meta.noise
    assert noise["model"] == "cleaned" and noise["action"] == "remove" and noise["from_variant"] == "symmetric-0.5"
    assert noise["from_noise"] == parent.meta.noise
    assert noise["run"] == str(run.resolve()) and (noise["filter"], noise["method"]) == ("prism", "mcl")
    assert (noise["seed"], noise["iterations"], noise["requested_rate"]) == (0, 12, None)
    assert noise["flagged"] == noise["removed"] == len(removed) and noise["relabelled"] == 0
    assert (noise["judged"], noise["not_judged"], noise["kept"]) == (len(judged), 181, len(train) - len(removed))
    assert noise["never_seen"] == int((report["times_seen"] == 0).sum())
    assert noise["precision"] == (flagged & noisy).sum() / flagged.sum() == summary["noise_detection"]["precision"]
    assert noise["recall"] == (flagged & noisy).sum() / noisy.sum()
    left = out.split("train")["is_noisy"].astype(bool)
    assert noise["realised_rate"] == left.mean() and noise["realised_rate_before"] == parent.meta.noise["realised_rate"]
    assert f"removed {len(removed)} training image(s) that prism flagged among the 720 the run judged" in result.output

    written = json.loads((home / "digits" / "symmetric-0.5-cleaned.report.json").read_text())
    assert written["noisy"] == int(left.sum()) and written["flagged"] == len(removed)
    first = (home / "digits" / "symmetric-0.5-cleaned.parquet").read_bytes()
    again = runner.invoke(app, ["make", "cleaned", "--dataset", NOISY, "--from", str(run)])
    assert again.exit_code == 0 and (home / "digits" / "symmetric-0.5-cleaned.parquet").read_bytes() == first


def test_relabel_sets_the_likely_label(run: Path, home: Path, runner: CliRunner, tmp_path: Path) -> None:
    likely_run = copy_run(run, tmp_path / "likely", report=with_likely)
    args = ["make", "cleaned", "--dataset", NOISY, "--from", str(likely_run), "--relabel"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report, flagged = by_hand(likely_run)
    parent, out = variant(home, "symmetric-0.5"), variant(home, "symmetric-0.5-relabelled")
    assert len(out) == len(parent)
    moved = out.frame.set_index("image_id").loc[report["image_id"][flagged]]
    assert (moved["label"].to_numpy() == report["likely_label"][flagged].to_numpy()).all()
    assert (moved["is_noisy"].to_numpy(dtype=bool) == (moved["label"] != moved["clean_label"]).to_numpy()).all()
    others = ~out.frame["image_id"].isin(report["image_id"][flagged])
    assert out.frame[others].reset_index(drop=True).equals(parent.frame[others].reset_index(drop=True))

    noise = out.meta.noise
    before = report["label"][flagged].to_numpy()
    assert noise["action"] == "relabel" and noise["relabelled"] == noise["flagged"] == int(flagged.sum())
    assert noise["removed"] == 0 and noise["kept"] == len(parent.split("train"))
    assert noise["labels_changed"] == int((report["likely_label"][flagged].to_numpy() != before).sum())
    right = report["likely_label"][flagged].to_numpy() == report["clean_label"][flagged].to_numpy()
    assert noise["relabel_accuracy"] == right.mean()
    assert noise["realised_rate"] == out.split("train")["is_noisy"].astype(bool).mean()
    assert "relabelled" in result.output


def test_publish_load_and_train_the_cleaned_variant(
    run: Path, home: Path, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["make", "cleaned", "--dataset", NOISY, "--from", str(run)]).exit_code == 0
    out = tmp_path / "published"
    published = runner.invoke(app, ["publish", "digits", "--variant", "symmetric-0.5-cleaned", "--out", str(out)])
    assert published.exit_code == 0, published.output
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = datasets.load_dataset(str(out), name="symmetric-0.5-cleaned")
    manifest = variant(home, "symmetric-0.5-cleaned")
    for split, part in loaded.items():
        rows = manifest.split(split)
        assert part["image_id"] == list(rows["image_id"]) and part["label"] == list(rows["label"])
        assert part["is_noisy"] == [bool(v) for v in rows["is_noisy"]]
    card = (out / "README.md").read_text()
    assert "noisekit make cleaned --dataset digits/symmetric-0.5 --from run\n" in card
    assert "noisekit make symmetric --dataset digits --rate 0.5 --seed 0" in card
    assert str(tmp_path) not in card and str(run.parent) not in card  # the run folder by its name only
    summary = runner.invoke(app, ["load", f"{out}/symmetric-0.5-cleaned"])
    assert summary.exit_code == 0, summary.output
    assert f"train noise rate {manifest.meta.noise['realised_rate']:.4f}" in summary.output

    args = ["train", "--dataset", "digits/symmetric-0.5-cleaned", "--iterations", "3", "--eval-every", "3"]
    trained = runner.invoke(prism_app, [*args, "-P", "5", "-K", "4", "--out", str(tmp_path / "again")])
    assert trained.exit_code == 0, trained.output
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["dataset"] == "digits/symmetric-0.5-cleaned" and 0 < again["test"]["precision_at_1"] <= 1


def _drop(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda frame: frame.drop(columns=[column])


def _unknown_likely(frame: pd.DataFrame) -> pd.DataFrame:
    frame = with_likely(frame)
    flagged = np.flatnonzero(is_flagged(frame["times_seen"], frame["times_flagged"]))
    frame.loc[flagged[:3], "likely_label"] = -1
    return frame


def _stranger(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[4, 9], "image_id"] = ["digits/nope", "digits/nope2"]
    return frame


def _test_image(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "image_id"] = "digits/0005"  # a 5: the test split
    return frame


def _other_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[2, "label"] = (frame.loc[2, "label"] + 1) % 5
    return frame


def _run_of(key: str, value: object) -> Callable[[dict], dict]:
    return lambda summary: summary | {key: value}


BAD = {
    "no report": (dict(), ["noise_report.parquet"], "no noise_report.parquet; a finished `prism train` run folder"),
    "no summary": (dict(), ["summary.json"], "no summary.json; a finished `prism train` run folder"),
    "other variant": (dict(summary=_run_of("dataset", "digits/symmetric-0.2")), [], "the run trained on 'digits/sy"),
    "filter none": (dict(summary=_run_of("filter", "none")), [], "the run trained with filter none, so it flagged"),
    "ids not in the variant": (dict(report=_stranger), [], "2 of 720 image_id(s) are not in digits/symmetric-0.5"),
    "a test image": (dict(report=_test_image), [], "1 image_id(s) are in digits/symmetric-0.5's test split"),
    "other labels": (dict(report=_other_label), [], "1 image(s) carry another label than in digits/symmetric-0.5"),
    "missing column": (dict(report=_drop("times_flagged")), [], "missing column(s) times_flagged"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_run_is_one_line_and_writes_nothing(
    run: Path, home: Path, runner: CliRunner, tmp_path: Path, case: str
) -> None:
    rewrite, remove, needle = BAD[case]
    bad = copy_run(run, tmp_path / "bad", **rewrite)
    for name in remove:
        (bad / name).unlink()
    result = runner.invoke(app, ["make", "cleaned", "--dataset", NOISY, "--from", str(bad)])
    one_line_error(result, needle)
    assert sorted(p.name for p in (home / "digits").iterdir()) == ["clean.parquet", "symmetric-0.5.parquet"]


def test_more_bad_input(run: Path, home: Path, runner: CliRunner, tmp_path: Path) -> None:
    def fails(args: list[str], *needles: str) -> None:
        one_line_error(runner.invoke(app, ["make", "cleaned", *args]), *needles)
        assert sorted(p.name for p in (home / "digits").iterdir()) == ["clean.parquet", "symmetric-0.5.parquet"]

    fails(["--dataset", NOISY, "--from", str(tmp_path / "nope")], "run folder", "nope", "does not exist")
    fails(["--dataset", "digits", "--from", str(run)], "trained on 'digits/symmetric-0.5', not on 'digits'")
    fails(["--dataset", NOISY, "--from", str(run), "--variant", "clean"], "--variant 'clean' is reserved")
    broken = copy_run(run, tmp_path / "broken")
    (broken / "noise_report.parquet").write_bytes(b"PAR1 not parquet")
    fails(["--dataset", NOISY, "--from", str(broken)], "noise_report.parquet: not a readable Parquet noise report")
    (broken / "summary.json").write_text("{not json")
    fails(["--dataset", NOISY, "--from", str(broken)], "summary.json: not valid JSON")
    old = copy_run(run, tmp_path / "old", report=lambda frame: frame.drop(columns=["likely_label"], errors="ignore"))
    fails(["--dataset", NOISY, "--from", str(old), "--relabel"], "no likely_label column, which --relabel needs")
    unknown = copy_run(run, tmp_path / "unknown", report=_unknown_likely)
    fails(["--dataset", NOISY, "--from", str(unknown), "--relabel"], "3 of ", "flagged image(s) have no likely_label")

"""prism train / eval end to end on the real digits: outputs, exact resume, every loss, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from cli_checks import one_line_error
from PIL import Image

from noisekit.manifest import Manifest, ManifestMeta, make_frame, write_manifest
from prism.cli import app
from prism.config import TrainConfig
from prism.train import load_checkpoint, train

FAST = dict(classes_per_batch=5, samples_per_class=4, eval_every=6, log_every=3, val_fraction=0.2)


def test_outputs_of_a_run(noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train(TrainConfig(dataset=noisy_digits, iterations=12, out=str(out), **FAST), progress=False)
    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoint.pt",
        "noise_report.parquet",
        "curves.png",
        "last.pt",
    }
    assert yaml.safe_load((out / "config.yaml").read_text())["iterations"] == 12
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [6, 12]
    assert 0 <= rows[-1]["clean_precision_at_1"] <= 1  # digits' clean labels are known: the diagnostic is there
    saved = json.loads((out / "summary.json").read_text())
    assert saved == summary
    assert set(saved["test"]) == {
        "precision_at_1",
        "mean_average_precision_at_r",
        "r_precision",
        "recall_at_1",
        "recall_at_2",
        "recall_at_4",
        "recall_at_8",
    }
    assert set(saved["noise_detection"]) == {"precision", "recall", "flagged_fraction"}
    report = pd.read_parquet(out / "noise_report.parquet")
    assert list(report.columns) == [
        "image_id",
        "label",
        "clean_label",
        "is_noisy",
        "times_seen",
        "times_flagged",
        "last_p_clean",
        "likely_label",
    ]
    assert report["times_seen"].sum() == 12 * 20  # every drawn sample counted once
    assert (report["times_flagged"] <= report["times_seen"]).all()
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG"
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["config"]["dataset"] == noisy_digits and ckpt["iteration"] == saved["best_iteration"]


def test_resume_gives_the_same_weights(noisy_digits: str, tmp_path: Path) -> None:
    config = TrainConfig(dataset=noisy_digits, iterations=14, **FAST)
    train(config.replace(out=str(tmp_path / "a")), progress=False)
    stopped = train(config.replace(out=str(tmp_path / "b"), stop_at=7), progress=False)
    assert stopped == {"stopped_at": 7, "out": str(tmp_path / "b")}
    train(config.replace(out=str(tmp_path / "b")), resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["bank"]["feats"], b["bank"]["feats"])
    assert torch.equal(a["selector"]["window.values"], b["selector"]["window.values"])
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (tmp_path / "b" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("loss", ["softtriple", "contrastive", "ms", "mcl"])
def test_prism_with_every_loss(noisy_digits: str, tmp_path: Path, loss: str) -> None:
    summary = train(
        TrainConfig(dataset=noisy_digits, method=loss, iterations=6, out=str(tmp_path / loss), **FAST), progress=False
    )
    assert 0 < summary["test"]["precision_at_1"] <= 1
    assert 0 < summary["noise_detection"]["flagged_fraction"] < 1


def test_exact_mode_runs(noisy_digits: str, tmp_path: Path) -> None:
    summary = train(
        TrainConfig(dataset=noisy_digits, mode="exact", iterations=6, out=str(tmp_path / "x"), **FAST), progress=False
    )
    assert summary["noise_detection"]["flagged_fraction"] > 0


def test_cli_train_and_eval(noisy_digits: str, tmp_path: Path, runner) -> None:
    out = tmp_path / "cli"
    args = [
        "train",
        "--dataset",
        noisy_digits,
        "--iterations",
        "6",
        "--eval-every",
        "6",
        "-P",
        "5",
        "-K",
        "4",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test P@1" in result.output and "flagged precision" in result.output
    summary = json.loads((out / "summary.json").read_text())
    result = runner.invoke(app, ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--dataset", noisy_digits])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["precision_at_1"] == pytest.approx(summary["test"]["precision_at_1"], abs=1e-9)


def test_yaml_config_and_flag_override(noisy_digits: str, tmp_path: Path, runner) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "dataset": noisy_digits,
                "iterations": 4,
                "classes_per_batch": 5,
                "samples_per_class": 4,
                "loss": "ms",
                "eval_every": 4,
            }
        )
    )
    result = runner.invoke(app, ["train", "--config", str(cfg), "--loss", "contrastive", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["method"] == "contrastive" and saved["iterations"] == 4


def _fails(runner, args: list[str], *needles: str) -> None:
    one_line_error(runner.invoke(app, args), *needles)


def test_one_class_dataset(runner, home: Path, tmp_path: Path) -> None:
    frame = make_frame(
        ["a", "b", "c", "d"], ["a.png", "b.png", "c.png", "d.png"], ["train", "train", "test", "test"], [0, 0, 1, 2]
    )
    write_manifest(
        Manifest(frame, ManifestMeta(dataset="one", root=str(tmp_path), class_names=("x", "y", "z"))),
        home / "one" / "clean.parquet",
    )
    _fails(runner, ["train", "--dataset", "one", "--out", str(tmp_path / "o")], "1 class(es)", "at least two")


def test_pk_larger_than_data(runner, noisy_digits: str, tmp_path: Path) -> None:
    _fails(
        runner,
        ["train", "--dataset", noisy_digits, "-P", "8", "--out", str(tmp_path / "o")],
        "P x K = 8 x 8 is larger than the data",  # K = 64 // 8 by the defaults rule
        "5 training classes",
    )


@pytest.mark.parametrize("rate", ["1.0", "-0.2"])
def test_filter_rate_outside(runner, noisy_digits: str, rate: str) -> None:
    _fails(runner, ["train", "--dataset", noisy_digits, "--filter-rate", rate], "--filter-rate must be in [0, 1)")


def test_resume_with_another_config(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = str(tmp_path / "r")
    base = ["train", "--dataset", noisy_digits, "--iterations", "8", "-P", "5", "-K", "4", "--out", out]
    assert runner.invoke(app, [*base, "--stop-at", "3"]).exit_code == 0
    _fails(runner, [*base, "--resume", "--loss", "ms"], "last.pt was written by another config", "method: 'mcl'")


def test_corrupted_checkpoint(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    _fails(
        runner,
        ["train", "--dataset", noisy_digits, "-P", "5", "--out", str(out), "--resume"],
        "not a readable prism checkpoint",
        "corrupted",
    )
    _fails(runner, ["eval", "--checkpoint", str(out / "last.pt"), "--dataset", noisy_digits], "last.pt")
    _fails(runner, ["eval", "--checkpoint", str(out / "absent.pt"), "--dataset", noisy_digits], "does not exist")


def test_metrics_equal_pml_on_trained_embeddings(noisy_digits: str, tmp_path: Path) -> None:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from torch.utils.data import DataLoader

    from prism.data import Images, eval_transform, prepare
    from prism.evaluate import embed_loader, retrieval_metrics
    from prism.models import build_model

    out = tmp_path / "run"
    train(TrainConfig(dataset=noisy_digits, iterations=20, out=str(out), **FAST), progress=False)
    data = prepare(noisy_digits, val_fraction=0.2, seed=0)
    model = build_model("small_cnn", embed_dim=128, weights="random", seed=0)
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    loader = DataLoader(Images(data.test, eval_transform(True, 8), preload=8), batch_size=256)
    emb, labels = embed_loader(model, loader, torch.device("cpu"))
    ours = retrieval_metrics(emb, labels)
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision"), k="max_bin_count"
    )
    ref = calc.get_accuracy(torch.from_numpy(emb), torch.from_numpy(labels))
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_a_short_run_logs_enough_points_for_its_curves(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "short"
    args = ["train", "--dataset", noisy_digits, "--iterations", "40", "-P", "5", "-K", "4", "--workers", "0"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    steps = json.loads(torch.load(out / "last.pt", weights_only=True)["steps"])
    # the log interval follows the run's length (about 50 points), not a fixed 50 iterations that gave one point
    assert [s["iteration"] for s in steps] == list(range(1, 41))
    assert "log_every: 1" in (out / "config.yaml").read_text()


def test_checkpoint_carries_no_optimiser_state_and_still_evaluates(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--dataset", noisy_digits, "--iterations", "6", "-P", "5", "-K", "4", "--workers", "0"]
    assert runner.invoke(app, [*args, "--out", str(out)]).exit_code == 0
    best = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    # the optimiser's Adam moments are twice the weights: only --resume needs them, and it reads last.pt
    assert "optimizer" not in best and "scheduler" not in best and "model" in best
    assert last["optimizer"]["state"] and "scheduler" in last
    assert (out / "checkpoint.pt").stat().st_size < (out / "last.pt").stat().st_size
    result = runner.invoke(app, ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--dataset", noisy_digits])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["iteration"] == 6

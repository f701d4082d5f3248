"""Each new filter and ``--filter-rate auto`` through a real (tiny) training run: what the run records."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from prism.config import TrainConfig
from prism.train import load_checkpoint, train

# digits: 5 training classes after the validation split; warm-up 0 so every step selects
FAST = dict(classes_per_batch=4, samples_per_class=4, eval_every=10, log_every=2, val_fraction=0.2, warmup=0)


@pytest.mark.parametrize(
    ("method", "filter_name", "rate"),
    [("mcl", "prism", "auto"), ("mcl", "vmf", "auto"), ("softtriple", "proxysim", 0.5), ("mcl", "knn", 0.5)],
)
def test_a_filtered_run_records_its_rate_and_likely_classes(
    noisy_digits: str, tmp_path: Path, method: str, filter_name: str, rate: float | str
) -> None:
    out = tmp_path / filter_name
    config = TrainConfig(
        dataset=noisy_digits, method=method, filter=filter_name, filter_rate=rate, iterations=10, out=str(out),
        bank_size=64, **FAST,
    )  # fmt: skip
    summary = train(config, progress=False)
    record = summary["rate_estimate"]
    assert summary["filter"] == filter_name and summary["filter_rate"] == rate
    # logged every 2 steps from the first that scored a sample (kNN: once its bank of 64 has filled, after 4 steps)
    assert record["iterations"] == [2, 4, 6, 8, 10][-len(record["iterations"]) :] and len(record["values"]) >= 3
    assert len(record["values"]) == len(record["iterations"])
    assert record["true"] == pytest.approx(0.5, abs=0.02) and record["final"] == record["values"][-1]
    if rate != "auto" and filter_name != "knn":
        assert set(record["values"]) == {rate}
    report = pd.read_parquet(out / "noise_report.parquet")
    drawn = report[report["times_seen"] > 0]
    assert (drawn["likely_label"] >= -1).all() and (drawn["likely_label"] >= 0).any()
    assert json.loads((out / "summary.json").read_text())["rate_estimate"] == record


def test_knn_bank_holds_every_sample(noisy_digits: str, tmp_path: Path) -> None:
    """kNN's memory keeps rejected samples too (Galanakis et al.'s keep_only_good_samples: False): after 5 steps of
    16 the bank holds 80 entries whatever was rejected."""
    out = tmp_path / "knn"
    config = TrainConfig(
        dataset=noisy_digits, filter="knn", iterations=5, out=str(out), bank_size=200, stop_at=5, **FAST
    )
    train(config, progress=False)
    bank = load_checkpoint(out / "last.pt")["bank"]
    assert int(bank["count"]) == 80


def test_coteaching_auto_forget_rate(noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "ct"
    config = TrainConfig(
        dataset=noisy_digits, method="coteaching", filter_rate="auto", iterations=6, out=str(out), **FAST
    )
    summary = train(config, progress=False)
    values = summary["rate_estimate"]["values"]
    assert len(values) == 3 and all(0.0 <= v <= 0.95 for v in values) and values[-1] > 0.0
    state = load_checkpoint(out / "last.pt")["loss"]
    assert torch.equal(state["estimator.scored"].nonzero().view(-1), torch.arange(6))  # one slot per step

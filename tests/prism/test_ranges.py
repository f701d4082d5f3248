"""Every numeric option of ``prism train`` has one allowed range, checked where the config is built: a flag, a
--config file and a grid's options meet the same one-line error (issue 22)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from cli_checks import one_line_error

from noisekit.sources.build import build
from prism.cli import app
from prism.config import RANGES, TrainConfig

BAD = [  # flag, a value outside its range, what the message says is allowed
    ("--filter-rate", "1.0", "in [0, 1)"),
    ("--window", "0", ">= 1"),
    ("--bank-start", "-1", ">= 0"),
    ("--warmup", "-5", ">= 0"),
    ("--iterations", "0", ">= 1"),
    ("--seed", "-1", ">= 0"),
    ("--embed-dim", "0", ">= 1"),
    ("--classes-per-batch", "1", ">= 2 (metric learning needs negatives)"),
    ("--samples-per-class", "1", ">= 2 (pair losses need a positive per sample)"),
    ("--lr", "-1", "> 0"),
    ("--lr", "nan", "> 0"),
    ("--weight-decay", "-0.1", ">= 0"),
    ("--proxy-lr", "0", "> 0"),
    ("--crop-scale", "0", "in (0, 1]"),
    ("--crop-scale", "1.5", "in (0, 1]"),
    ("--val-fraction", "1", "in [0, 1)"),
    ("--eval-every", "0", ">= 1"),
    ("--bank-size", "-3", ">= 0"),
    ("--image-size", "0", ">= 1"),
    ("--workers", "-1", ">= 0"),
    ("--stop-at", "-2", ">= 0"),
]


def test_every_numeric_option_has_a_range() -> None:
    hints = typing.get_type_hints(TrainConfig)
    numeric = {
        f.name for f in dataclasses.fields(TrainConfig)
        if {int, float} & set(typing.get_args(hints[f.name]) or (hints[f.name],))
    }  # fmt: skip
    assert numeric == set(RANGES)
    flagged = {flag for flag, _, _ in BAD}
    assert {f"--{n.replace('_', '-')}" for n in RANGES} - flagged == {"--memory-weight", "--log-every"}  # no flag


@pytest.mark.parametrize(("flag", "value", "allowed"), BAD)
def test_a_flag_outside_its_range(runner, home: Path, tmp_path: Path, flag: str, value: str, allowed: str) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", "digits", flag, value, "--out", str(out)])
    line = one_line_error(result, f"{flag} must be {allowed}, got ")
    assert line.endswith(f"got {float(value) if '.' in value or flag in FLOATS else int(value)}")
    assert not out.exists()


FLOATS = {"--filter-rate", "--lr", "--weight-decay", "--proxy-lr", "--crop-scale", "--val-fraction"}


@pytest.mark.parametrize(
    ("line", "needle"),
    [("lr: -1", "--lr must be > 0, got -1.0"), ("memory_weight: -0.5", "--memory-weight must be >= 0, got -0.5"),
     ("log_every: 0", "--log-every must be >= 1, got 0"), ("samples_per_class: 1", "--samples-per-class must be >= 2")],
)  # fmt: skip
def test_a_config_file_outside_a_range(runner, home: Path, tmp_path: Path, line: str, needle: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: digits\n{line}\n")
    out = tmp_path / "run"
    one_line_error(runner.invoke(app, ["train", "--config", str(config), "--out", str(out)]), needle)
    assert not out.exists()


def test_a_grid_option_outside_a_range(runner, home: Path, tmp_path: Path) -> None:
    build("digits")
    result = runner.invoke(
        app, ["grid", "--dataset", "digits", "--variant", "clean", "--method", "mcl", "--seed", "0",
              "--set", "workers=-1", "--out", str(tmp_path / "g")],
    )  # fmt: skip
    one_line_error(result, "--workers must be >= 0, got -1")
    assert not (tmp_path / "g").exists()

"""A run's folder and the summary line (issue 22): clean labels end with their summary, one overwrite rule, resume
from the run's own config, and train_seconds kept over sessions."""

from __future__ import annotations

import json
from pathlib import Path

from cli_checks import one_line_error

from noisekit.sources.build import build
from prism.cli import app

SHORT = ["--iterations", "12", "--eval-every", "6", "--workers", "0"]


def test_clean_labels_with_the_default_filter_end_with_their_summary(runner, home: Path, tmp_path: Path) -> None:
    build("digits")
    out = tmp_path / "clean"
    result = runner.invoke(app, ["train", "--dataset", "digits", *SHORT, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "digits" in result.output and "test P@1" in result.output and "recall" not in result.output


def test_one_rule_for_a_run_folder(runner, home: Path, tmp_path: Path) -> None:
    build("digits")
    out = tmp_path / "run"
    base = ["train", "--dataset", "digits", *SHORT, "--out", str(out)]
    assert runner.invoke(app, [*base, "--stop-at", "6"]).exit_code == 0
    # resume with exactly what the stop message says: the run's config.yaml supplies the rest
    resumed = runner.invoke(app, ["train", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    first = json.loads((out / "summary.json").read_text())["train_seconds"]
    again = runner.invoke(app, ["train", "--resume", "--out", str(out)])  # a finished run resumed once more
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["train_seconds"] >= first  # the total, not the last session
    before = (out / "last.pt").read_bytes()
    one_line_error(runner.invoke(app, base), f"--out {out} holds a run (last.pt)", "--overwrite")
    assert (out / "last.pt").read_bytes() == before
    assert runner.invoke(app, [*base, "--overwrite", "--seed", "1"]).exit_code == 0
    assert "seed: 1" in (out / "config.yaml").read_text()
    file = tmp_path / "a-file"
    file.write_text("x")
    one_line_error(runner.invoke(app, ["train", "--dataset", "digits", "--out", str(file)]), "is a file")
    empty = tmp_path / "empty"
    one_line_error(runner.invoke(app, ["train", "--dataset", "digits", "--resume", "--out", str(empty)]), "no last.pt")
    assert not empty.exists()


def test_no_silent_default_dataset(runner, home: Path, tmp_path: Path) -> None:
    one_line_error(runner.invoke(app, ["train", "--out", str(tmp_path / "r")]), "--dataset: which dataset?")

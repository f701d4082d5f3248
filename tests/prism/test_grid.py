"""``prism grid``: a killed grid re-run executes only the missing runs, interrupted runs resume, results come out
in the paper's shape, and a grid that cannot run fails before the first run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from noisekit.errors import NoisekitError
from noisekit.manifest import read_manifest
from noisekit.noise.common import save_variant
from noisekit.paths import resolve_manifest
from prism.cli import app
from prism.grid import load_grid, markdown, run_grid, status
from prism.train import train

FLAGS = {"datasets": ["digits"], "variants": ["symmetric-0.5"], "methods": ["mcl", "contrastive"],
         "filters": ["none"], "seeds": [0, 1]}  # fmt: skip
OPTIONS = {"iterations": 12, "warmup": 4, "classes_per_batch": 5, "samples_per_class": 4, "eval_every": 12}


def _grid(out: Path, **changes):
    return load_grid(None, FLAGS | {"out": str(out), "options": OPTIONS} | changes)


def test_a_killed_grid_reruns_only_the_missing_runs(noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    grid = _grid(out)
    assert len(grid.runs) == 4
    sets = [f"--set={k}={v}" for k, v in OPTIONS.items()]
    command = [sys.executable, "-m", "prism", "grid", "--dataset", "digits", "--variant", "symmetric-0.5",
               "--method", "mcl", "--method", "contrastive", "--filter", "none", "--seed", "0", "--seed", "1",
               "--out", str(out), *sets]  # fmt: skip
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not any(status(r) == "done" for r in grid.runs) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = [r for r in grid.runs if status(r) == "done"]
    assert 1 <= len(done) < 4
    stamps = {r.out: (r.out / "summary.json").stat().st_mtime_ns for r in done}
    lines: list[str] = []
    counts = run_grid(grid, echo=lines.append)
    assert counts["executed"] == 4 - len(done) and counts["skipped"] == len(done)
    assert all((r.out / "summary.json").stat().st_mtime_ns == stamps[r.out] for r in done)
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 4 and set(frame["seed"]) == {0, 1} and "test.precision_at_1" in frame
    assert "wall_seconds" in frame and frame["test.precision_at_1"].between(0, 1).all()
    assert (out / "results.png").stat().st_size > 0 and lines[-1].startswith("grid: ")
    again = run_grid(grid, echo=lines.append)
    assert again["executed"] == 0 and again["skipped"] == 4


def test_an_interrupted_run_resumes_and_results_take_the_papers_shape(noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    grid = _grid(out, methods=["mcl"], filters=["none", "prism"], seeds=[0])
    first = grid.runs[0]
    train(first.config.replace(stop_at=6), progress=False)
    assert status(first) == "interrupted"
    counts = run_grid(grid, echo=lambda line: None)
    assert counts == {"runs": 2, "skipped": 0, "resumed": 1, "executed": 2}
    summary = json.loads((first.out / "summary.json").read_text())
    assert summary["iterations"] == 12 and summary["filter"] == "none"
    text = (out / "results.md").read_text()
    assert "| method | digits/symmetric-0.5 |" in text and "| mcl+prism |" in text
    assert text.count("**") >= 4  # the best of each column, in both tables
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["rate"]) == {0.5}  # R = the variant's rate


def test_paper_table_is_shown_marked_as_published(noisy_digits: str, tmp_path: Path, runner) -> None:
    paper = tmp_path / "paper.csv"
    paper.write_text("method,setting,precision_at_1\nmcl,CARS 50%,46.88\n")
    sets = [f"--set={k}={v}" for k, v in OPTIONS.items()]
    result = runner.invoke(app, ["grid", "--dataset", "digits", "--variant", "symmetric-0.5", "--method", "mcl",
                                 "--filter", "none", "--seed", "0", "--out", str(tmp_path / "g"),
                                 "--paper-table", str(paper), *sets])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (tmp_path / "g" / "results.md").read_text()
    assert "| mcl (published) | 46.88 |" in text and "not measured here" in text
    for name, body in [("empty.csv", b""), ("broken.csv", b'a,b\n1,2,3,4\n"x\n'), ("latin.csv", b"m\xe9thode\n")]:
        bad = tmp_path / name
        bad.write_bytes(body)
        result = runner.invoke(
            app, ["grid", "--dataset", "digits", "--paper-table", str(bad), "--out", str(tmp_path / "b")]
        )
        assert result.exit_code == 2 and result.output.startswith(f"error: --paper-table {bad}: not a readable CSV (")
        assert result.output.count("\n") == 1 and not (tmp_path / "b").exists()


def test_grids_that_cannot_run_fail_before_any_run(noisy_digits: str, tmp_path: Path, runner) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [cub]\nvariants: [symmetric-0.5]\nmethods: [mcl]\n")
    result = runner.invoke(app, ["grid", "--grid", str(bad), "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "cub/symmetric-0.5" in result.output
    assert not (tmp_path / "g").exists()
    with pytest.raises(NoisekitError, match="--method must be one of"):
        _grid(tmp_path / "g", methods=["arcface"])
    for line, needle in [("filter_rate: abc", "filter_rate must be variant, auto or a number, got 'abc'"),
                         ("jobs: two", "jobs must be an integer, got 'two'"),
                         ("seeds: [0, x]", "seeds must be integers, got 'x'"),
                         ("variants: [5]", "variants must be names, got 5"),
                         ("methods: {mcl: 1}", "methods must be names, got {'mcl': 1}"),
                         ("options: [1]", "options must be a mapping of prism train option: value, got [1]"),
                         ("options: {iterations: x}", "iterations must be an integer, got 'x'"),
                         ("out: 5", "out must be a folder, got 5")]:  # fmt: skip
        bad.write_text(f"datasets: [digits]\nvariants: [symmetric-0.5]\nmethods: [mcl]\n{line}\n")
        flags = [] if line.startswith("out:") else ["--out", str(tmp_path / "g")]  # --out would win over out:
        result = runner.invoke(app, ["grid", "--grid", str(bad), *flags])
        assert result.exit_code == 2 and result.output == f"error: {bad}: {needle}\n"
    result = runner.invoke(app, ["grid", "--dataset", "digits", "--filter-rate", "half", "--out", str(tmp_path / "g")])
    assert (
        result.exit_code == 2
        and result.output == "error: prism grid: filter_rate must be variant, auto or a number, got 'half'\n"
    )
    with pytest.raises(NoisekitError, match="takes no filter"):
        _grid(tmp_path / "g", methods=["coteaching"], filters={"coteaching": ["prism"]})
    manifest = read_manifest(resolve_manifest(noisy_digits))
    save_variant(manifest.replace(variant="small_cluster-0.5", noise={"model": "small_cluster", "requested_rate": 0.5}))
    with pytest.raises(NoisekitError, match="open-set"):
        _grid(tmp_path / "g", variants=["symmetric-0.5", "small_cluster-0.5"], methods=["mcl", "fcorrection"])
    assert not (tmp_path / "g").exists()


def test_one_seed_shows_its_value_without_a_spread() -> None:
    frame = pd.DataFrame(
        {"run": ["mcl", "mcl", "mcl+prism"], "dataset": ["digits"] * 3, "variant": ["clean"] * 3,
         "test.precision_at_1": [0.5, 0.7, 0.9]}
    )  # fmt: skip
    lines = markdown(frame).splitlines()
    assert lines[2] == "| mcl | 60.00 +- 14.14 (n=2) |"
    assert lines[3] == "| mcl+prism | **90.00 (n=1)** |"  # one seed: no "+- 0.00", which would read as measured

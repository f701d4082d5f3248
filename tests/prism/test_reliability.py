"""A run's folder and the summary line (issue 22): clean labels end with their summary, one overwrite rule, resume
from the run's own config, and train_seconds kept over sessions."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cli_checks import one_line_error
from PIL import Image

from noisekit.manifest import Manifest, ManifestMeta, make_frame, write_manifest
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


def _photos(home: Path, n: int = 48) -> Path:
    """A dataset of 160 x 150 JPEGs (above the small-image size, so a DataLoader's workers decode them): 8 classes of
    6, 0-3 train, 4-7 test. Returns its manifest."""
    rng = np.random.default_rng(0)
    folder = home / "photos" / "images"
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((160, 150), Image.BILINEAR).save(folder / f"{i:03d}.jpg", quality=90)
    labels = np.arange(n) // 6
    frame = make_frame([f"{i:03d}" for i in range(n)], [f"images/{i:03d}.jpg" for i in range(n)],
                       np.where(labels < 4, "train", "test"), labels)  # fmt: skip
    meta = ManifestMeta("photos", str(home / "photos"), tuple(f"c{k}" for k in range(8)))
    return write_manifest(Manifest(frame, meta), home / "photos" / "clean.parquet")


def test_a_broken_image_read_by_a_worker_is_one_line(runner, home: Path, tmp_path: Path) -> None:
    manifest = _photos(home)
    for i in range(1, 24):  # every training image but the first, whose header sets the run's defaults
        broken = home / "photos" / "images" / f"{i:03d}.jpg"
        broken.write_bytes(broken.read_bytes()[:2000])  # a truncated JPEG: its header reads, its pixels do not
    args = ["train", "--dataset", str(manifest), "--arch", "resnet18", "--weights", "random", "--image-size", "32",
            "-P", "2", "-K", "3", "--iterations", "6", "--val-fraction", "0", "--workers", "2"]  # fmt: skip
    # torch re-raises a worker's error as "Caught NoisekitError in DataLoader worker process 0" and its traceback
    line = one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "r")]), "cannot read image (image file")
    folder = re.escape(str(broken.parent))
    assert re.fullmatch(rf"error: {folder}/0[0-2]\d\.jpg: cannot read image \(.*truncated.*\)", line)
    assert not (tmp_path / "r").exists()  # a failed start leaves no folder holding only config.yaml


def _interrupt(command: list[str], ready: Callable[[int], bool]) -> subprocess.CompletedProcess:
    """Run ``command`` in a real process, send it SIGINT (Ctrl-C) once ``ready(pid)``, and return what it did."""
    # a shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN: restore the default a
    # terminal's foreground program has, so the test does not depend on how pytest itself was started
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not ready(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_ctrl_c_before_the_first_checkpoint_leaves_no_run(runner, home: Path, tmp_path: Path) -> None:
    build("digits")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "prism", "train", "--dataset", "digits", "--iterations", "100000",
               "--eval-every", "100000", "--workers", "0", "--out", str(out)]  # fmt: skip
    done = _interrupt(command, lambda pid: (out / "config.yaml").is_file())  # written as the loop starts
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert done.stderr == "interrupted before the first checkpoint; nothing was written\n"
    assert not out.exists()  # no folder holding only config.yaml, which --resume could not continue
    resumed = runner.invoke(app, ["train", "--dataset", "digits", "--resume", "--out", str(out)])
    one_line_error(resumed, "no last.pt", "without --resume")


def test_ctrl_c_in_noisekit_make_is_one_line_and_writes_nothing(home: Path, tmp_path: Path) -> None:
    build("digits")
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    command = [sys.executable, "-m", "noisekit", "make", "small-cluster", "--dataset", "digits", "--rate", "0.5",
               "--weights", "random", "--workers", "1"]  # fmt: skip
    # the feature pass has begun once the DataLoader's worker process exists
    done = _interrupt(command, lambda pid: bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().strip()))
    assert done.returncode == 130 and done.stderr == "interrupted; nothing was written\n", done.stderr
    after = sorted(p.relative_to(home) for p in home.rglob("*"))
    assert [p for p in after if p not in before and p.parts[0] != ".locks"] == []

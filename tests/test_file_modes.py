"""What noisekit and prism write gets the mode the umask gives any new file (issue 22): temporary files renamed into
place must not keep mkstemp's private 0600, or a shared data home or run folder is unreadable to the group."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisekit.cli import app
from prism.cli import app as prism_app


@pytest.fixture(params=[0o022, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode)
        for p in folder.rglob("*")
        if not p.is_symlink() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def test_every_output_gets_the_umasks_mode(runner, home: Path, tmp_path: Path, umask: int) -> None:
    assert runner.invoke(app, ["build", "digits"]).exit_code == 0
    assert runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", "0.2"]).exit_code == 0
    published = tmp_path / "published"
    assert runner.invoke(app, ["publish", "digits", "--out", str(published)]).exit_code == 0
    run = tmp_path / "run"
    # training on the published folder also unpacks its images into the data home
    dataset = str(published / "symmetric-0.2")
    args = ["train", "--dataset", dataset, "--iterations", "2", "--eval-every", "2", "--workers", "0"]
    trained = runner.invoke(prism_app, [*args, "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    written = _modes(tmp_path)  # the data home is tmp_path/home
    for name in [
        "home/digits/clean.parquet",
        "home/digits/clean.json",
        "home/digits/symmetric-0.2.parquet",
        "home/digits/symmetric-0.2.report.json",
        "published/README.md",
        "run/summary.json",
        "run/config.yaml",
        "run/last.pt",
    ]:
        assert name in written, sorted(written)
    assert any(name.endswith("/images") for name in written)  # the folder a published dataset is unpacked into
    wrong = {name: oct(mode) for name, mode in written.items() if mode not in (0o666 & ~umask, 0o777 & ~umask)}
    assert not wrong, f"umask {oct(umask)}: {wrong}"

"""Nothing read is trusted (issue 22): manifests checked on read by every reader, reserved variant names, the
overwrite rule, the variant lock with two real processes, and the content-keyed feature cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_checks import one_line_error

from noisekit.cli import app
from noisekit.manifest import read_manifest, to_table
from noisekit.sources.build import build
from prism.cli import app as prism_app

ESCAPE = "../../../../../../etc/passwd"


@pytest.fixture
def digits(home: Path) -> Path:
    return build("digits")[0]


def _tampered(clean: Path, name: str, **changes: object) -> Path:
    """A copy of the clean manifest as variant ``name`` with row 0 changed, written past the checks (as a hand-made
    or hostile file would be)."""
    manifest = read_manifest(clean)
    frame = manifest.frame.copy()
    for column, value in changes.items():
        frame.loc[0, column] = value
    path = clean.parent / f"{name}.parquet"
    pq.write_table(to_table(manifest.replace(frame, variant=name)), path)
    return path


def test_an_escaping_path_is_refused_by_every_reader(runner, digits: Path, tmp_path: Path) -> None:
    _tampered(digits, "evil", path=ESCAPE)
    rule = f"row 0: path {ESCAPE!r} must be relative to the dataset root and stay inside it"
    one_line_error(runner.invoke(app, ["info", "digits/evil"]), "evil.parquet", rule)
    out = tmp_path / "published"
    one_line_error(runner.invoke(app, ["publish", "digits", "--variant", "evil", "--out", str(out)]), rule)
    assert not out.exists()
    run = tmp_path / "run"
    trained = runner.invoke(prism_app, ["train", "--dataset", "digits/evil", "--iterations", "2", "--out", str(run)])
    one_line_error(trained, rule)
    assert not run.exists()
    # the same row in the clean manifest: noise is never added to it
    os.replace(digits.parent / "evil.parquet", digits)
    one_line_error(runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", "0.2"]), rule)
    assert not (digits.parent / "symmetric-0.2.parquet").exists()


def test_a_link_out_of_the_root_is_refused(runner, digits: Path, tmp_path: Path) -> None:
    manifest = read_manifest(digits)
    image = manifest.resolve(manifest.frame["path"].iloc[0])
    image.unlink()
    image.symlink_to("/etc/passwd")
    one_line_error(runner.invoke(app, ["info", "digits"]), "row 0:", "leads outside the dataset root", "/etc/passwd")
    out = tmp_path / "published"
    one_line_error(runner.invoke(app, ["publish", "digits", "--out", str(out)]), "leads outside the dataset root")
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"split": "holdout"}, "row 0: split 'holdout' is not one of train, val, test"),
        ({"label": 99}, "row 0: label 99 is outside [0, 10)"),
        ({"image_id": "digits/1"}, "duplicate image_id"),
        ({"is_noisy": True}, "row 0: is_noisy=True disagrees with its labels"),
    ],
)
def test_every_rule_is_checked_on_read(runner, digits: Path, changes: dict, needle: str) -> None:
    manifest = read_manifest(digits)
    if "image_id" in changes:
        changes = {"image_id": manifest.frame["image_id"].iloc[1]}
    _tampered(digits, "bad", **changes)
    one_line_error(runner.invoke(app, ["info", "digits/bad"]), "bad.parquet", needle)


def test_missing_column_and_a_published_shard(runner, digits: Path, tmp_path: Path) -> None:
    table = pq.read_table(digits).drop(["clean_label"])
    pq.write_table(table, digits.parent / "nolabel.parquet")
    one_line_error(runner.invoke(app, ["info", "digits/nolabel"]), "missing column clean_label")
    one_line_error(
        runner.invoke(prism_app, ["train", "--dataset", "digits/nolabel", "--out", str(tmp_path / "r")]),
        "missing column clean_label",
    )
    published = tmp_path / "pub"
    assert (
        runner.invoke(
            app, ["publish", "digits", "--variant", "clean", "--out", str(published), "--labels-only"]
        ).exit_code
        == 0
    )
    shard = next(published.glob("clean/train-*.parquet"))
    one_line_error(runner.invoke(app, ["info", str(shard)]), str(shard), "read through its folder: DIR/CONFIG")
    trained = runner.invoke(prism_app, ["train", "--dataset", str(shard), "--out", str(tmp_path / "s")])
    one_line_error(trained, str(shard), "read through its folder: DIR/CONFIG")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("name", ["clean", "shared", "symmetric-0.5.report", "a/b", "..x", "x.json", "x."])
def test_reserved_and_unsafe_variant_names(runner, digits: Path, name: str) -> None:
    before = {p.name: p.read_bytes() for p in digits.parent.iterdir() if p.is_file()}
    result = runner.invoke(app, ["make", "symmetric", "--dataset", "digits", "--rate", "0.5", "--variant", name])
    one_line_error(result, f"--variant {name!r}")
    assert {p.name: p.read_bytes() for p in digits.parent.iterdir() if p.is_file()} == before


def test_a_variant_is_replaced_only_with_overwrite(runner, digits: Path) -> None:
    make = ["make", "symmetric", "--dataset", "digits", "--rate", "0.5"]
    assert runner.invoke(app, [*make, "--seed", "0"]).exit_code == 0
    path = digits.parent / "symmetric-0.5.parquet"
    first = path.read_bytes(), path.with_suffix(".report.json").read_bytes()
    assert runner.invoke(app, [*make, "--seed", "0"]).exit_code == 0  # the same content: fine, unchanged
    assert (path.read_bytes(), path.with_suffix(".report.json").read_bytes()) == first
    refused = runner.invoke(app, [*make, "--seed", "1"])
    one_line_error(refused, "symmetric-0.5.parquet exists with other content (model symmetric, rate 0.5, seed 0)")
    assert (path.read_bytes(), path.with_suffix(".report.json").read_bytes()) == first
    assert runner.invoke(app, [*make, "--seed", "1", "--overwrite"]).exit_code == 0
    assert read_manifest(path).meta.noise["seed"] == 1


def test_two_makes_of_one_variant_at_once(digits: Path, home: Path) -> None:
    env = {**os.environ, "NOISEKIT_HOME": str(home)}
    make = [sys.executable, "-m", "noisekit", "make", "symmetric", "--dataset", "digits", "--rate", "0.5"]
    procs = [
        subprocess.Popen([*make, "--seed", s], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in ("0", "7")
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "exists with other content" in loser and "Traceback" not in loser
    import json

    path = digits.parent / "symmetric-0.5.parquet"
    report = json.loads(path.with_suffix(".report.json").read_text())
    assert report["seed"] == read_manifest(path).meta.noise["seed"]  # manifest and report of the same run


def test_feature_cache_follows_the_images(runner, digits: Path) -> None:
    make = ["make", "small-cluster", "--dataset", "digits", "--rate", "0.5", "--weights", "random"]
    fast = ["--image-size", "32", "--workers", "0", "--batch-size", "256"]
    assert "computed in" in runner.invoke(app, [*make, *fast]).output
    assert "from cache" in runner.invoke(app, [*make, *fast, "--variant", "sc-again"]).output
    manifest = read_manifest(digits)
    for rel in manifest.frame["path"]:  # same ids, other bytes: a rebuild from another copy
        image = manifest.resolve(rel)
        image.write_bytes(image.read_bytes())
        os.utime(image, ns=(1, 1))
    assert "computed in" in runner.invoke(app, [*make, *fast, "--variant", "sc-new"]).output


def test_devices_that_are_not_there(runner, digits: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    make = ["make", "small-cluster", "--dataset", "digits", "--rate", "0.5", "--weights", "random"]
    one_line_error(runner.invoke(app, [*make, "--device", "cuda"]), "--device cuda: no CUDA device is available")
    one_line_error(runner.invoke(app, [*make, "--device", "gpu"]), "--device gpu: expected cpu, cuda, cuda:N or mps")
    train = ["train", "--dataset", "digits", "--out", str(tmp_path / "r")]
    one_line_error(runner.invoke(prism_app, [*train, "--device", "cuda"]), "--device cuda: no CUDA device")
    one_line_error(runner.invoke(prism_app, [*train, "--device", "gpu"]), "--device gpu: expected")
    assert not (tmp_path / "r").exists()
    checkpoint = tmp_path / "none.pt"
    evaluated = runner.invoke(
        prism_app, ["eval", "--checkpoint", str(checkpoint), "--dataset", "digits", "--device", "cuda:1"]
    )
    one_line_error(evaluated, "--device cuda:1: no CUDA device")

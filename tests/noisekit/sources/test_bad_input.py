"""Bad raw input: one-line errors naming the file and line, exit status 2, and no manifest left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_checks import one_line_error
from fakes import fake_cars, fake_cub, fake_food101n, fake_sop

from noisekit.cli import app


def _fails(runner, args: list[str], *needles: str) -> str:
    return one_line_error(runner.invoke(app, args), *needles)


def _no_manifest(home: Path, name: str) -> None:
    """Nothing at all was written for ``name``: no manifest, no temporary file."""
    assert not (home / name).exists() or not any((home / name).iterdir())


def test_root_missing(runner, home: Path, tmp_path: Path) -> None:
    _fails(runner, ["build", "cub", "--root", str(tmp_path / "nope")], "cub root", "nope")
    _no_manifest(home, "cub")


def test_metadata_file_missing(runner, home: Path, tmp_path: Path) -> None:
    fake_cub(tmp_path / "cub")
    (tmp_path / "cub" / "image_class_labels.txt").unlink()
    _fails(runner, ["build", "cub", "--root", str(tmp_path / "cub")], "image_class_labels.txt", "missing")
    _no_manifest(home, "cub")


def test_malformed_line_names_file_and_line(runner, home: Path, tmp_path: Path) -> None:
    fake_cub(tmp_path / "cub")
    labels = tmp_path / "cub" / "image_class_labels.txt"
    lines = labels.read_text().splitlines(keepends=True)
    lines[6] = "7 seven\n"
    labels.write_text("".join(lines))
    _fails(runner, ["build", "cub", "--root", str(tmp_path / "cub")], "image_class_labels.txt:7", "'seven'")
    _no_manifest(home, "cub")


def test_sop_wrong_header(runner, tmp_path: Path) -> None:
    fake_sop(tmp_path / "sop")
    path = tmp_path / "sop" / "Ebay_test.txt"
    path.write_text(path.read_text().replace("super_class_id", "super"))
    _fails(runner, ["build", "sop", "--root", str(tmp_path / "sop")], "Ebay_test.txt:1", "expected header")


def test_sop_short_row(runner, tmp_path: Path) -> None:
    fake_sop(tmp_path / "sop")
    path = tmp_path / "sop" / "Ebay_train.txt"
    path.write_text(path.read_text() + "99 1 1\n")
    _fails(runner, ["build", "sop", "--root", str(tmp_path / "sop")], "Ebay_train.txt:14", "expected 4 fields")


def test_absent_image_counted_then_strict(runner, home: Path, tmp_path: Path) -> None:
    fake_cars(tmp_path / "cars", per_class=1)
    (tmp_path / "cars" / "car_ims" / "000005.jpg").unlink()
    (tmp_path / "cars" / "car_ims" / "000150.jpg").unlink()
    result = runner.invoke(app, ["build", "cars", "--root", str(tmp_path / "cars")])
    assert result.exit_code == 0, result.output
    assert "2 listed image(s) absent" in result.output and "car_ims/000005.jpg" in result.output
    assert "194 images" in result.output
    (home / "cars" / "clean.parquet").unlink()
    _fails(
        runner,
        ["build", "cars", "--root", str(tmp_path / "cars"), "--strict"],
        "2 listed image(s)",
        "--strict",
    )
    assert not (home / "cars" / "clean.parquet").exists()


def test_duplicate_ids(runner, home: Path, tmp_path: Path) -> None:
    fake_cub(tmp_path / "cub")
    images = tmp_path / "cub" / "images.txt"
    first, second, *rest = images.read_text().splitlines(keepends=True)
    images.write_text(first + first.replace("1 ", "2 ", 1) + "".join(rest))  # id 2 now points at image 1's file
    _fails(runner, ["build", "cub", "--root", str(tmp_path / "cub")], "is listed twice")
    _no_manifest(home, "cub")


def test_unknown_dataset(runner) -> None:
    _fails(runner, ["build", "imagenet"], "unknown dataset 'imagenet'", "cub")


def test_cars_mat_not_matlab(runner, tmp_path: Path) -> None:
    fake_cars(tmp_path / "cars", per_class=1)
    (tmp_path / "cars" / "cars_annos.mat").write_bytes(b"not a mat file")
    _fails(runner, ["build", "cars", "--root", str(tmp_path / "cars")], "cars_annos.mat", "MATLAB")


def test_failed_rebuild_keeps_previous_manifest(runner, home: Path, tmp_path: Path) -> None:
    fake_cub(tmp_path / "cub")
    assert runner.invoke(app, ["build", "cub", "--root", str(tmp_path / "cub")]).exit_code == 0
    before = (home / "cub" / "clean.parquet").read_bytes()
    (tmp_path / "cub" / "classes.txt").write_text("1 a\n3 c\n")
    _fails(runner, ["build", "cub", "--root", str(tmp_path / "cub")], "classes.txt", "without gaps")
    assert (home / "cub" / "clean.parquet").read_bytes() == before
    assert sorted(p.name for p in (home / "cub").iterdir()) == ["clean.json", "clean.parquet"]


@pytest.mark.parametrize("dataset", ["cars", "sop"])
def test_root_required_without_download(runner, dataset: str) -> None:
    _fails(runner, ["build", dataset], "--root is required")


def _latin1_at_line(path: Path, number: int) -> None:
    """Line ``number`` of a text list gets a Latin-1 byte (an 'é' saved by another tool), as a mangled copy would."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = lines[number - 1].replace(b"\n", b"\xe9\n")
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    ("dataset", "listing", "number"),
    [
        ("cub", "classes.txt", 3),
        ("cub", "images.txt", 5),
        ("cub", "image_class_labels.txt", 1),
        ("sop", "Ebay_test.txt", 2),
        ("food101n", "meta/verified_val.tsv", 4),
    ],
)
def test_a_byte_that_is_not_utf8_names_file_and_line(
    runner, home: Path, tmp_path: Path, dataset: str, listing: str, number: int
) -> None:
    root = tmp_path / dataset
    args = ["build", dataset, "--root", str(root)]
    if dataset == "cub":
        fake_cub(root)
    elif dataset == "sop":
        fake_sop(root)
    else:
        fake_food101n(root, tmp_path / "food-101")
        args += ["--food101-root", str(tmp_path / "food-101")]
    _latin1_at_line(root / listing, number)
    line = _fails(runner, args, f"{listing}:{number}: not UTF-8 text (byte 0xe9 at column ")
    assert line.endswith("save the file as UTF-8")
    _no_manifest(home, dataset)

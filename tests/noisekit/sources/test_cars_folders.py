"""CARS196 in its class-folder layout (``images/<class name>/<file>.jpg``, as the PRISM authors' lists name it):
the real class names in plain sorted() order are the official class order, and the split is the standard one."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_checks import one_line_error
from fakes import fake_cars, fake_cars_folders, prism_cars_classes

from noisekit.cli import app
from noisekit.manifest import read_manifest
from noisekit.sources.build import BuildOptions, build


def _files(classes: list[str], per_class: int) -> list[str]:
    return [f"{name}/{k:05d}.jpg" for name in classes for k in range(1, per_class + 1)]


def _fails(runner, args: list[str], *needles: str) -> str:
    return one_line_error(runner.invoke(app, args), *needles)


def test_class_folders_standard_split(tmp_path: Path) -> None:
    classes = prism_cars_classes()
    root = tmp_path / "cars196"
    fake_cars_folders(root, _files(classes, per_class=2))
    (root / "images" / classes[0] / "notes.txt").write_text("not an image\n")  # left out: not an image
    (root / "images" / ".cache").mkdir()  # left out: hidden, not a class
    path, result = build("cars", BuildOptions(root=tmp_path))  # --root may name cars196's parent
    m = read_manifest(path)
    assert result.missing == []
    assert m.counts() == {"splits": {"train": 196, "test": 196}, "classes": {"train": 98, "test": 98}}
    # the folder names in plain (ASCII) sorted order are the authors' class order 1-196
    assert m.meta.class_names == tuple(classes) == tuple(sorted(classes))
    assert m.meta.class_names[0] == "AM General Hummer SUV 2000"
    assert m.meta.class_names[1] == "Acura Integra Type R 2001"  # 'M' < 'c': not case-insensitive order
    assert m.meta.class_names[98] == "FIAT 500 Abarth 2012"
    assert m.meta.source["layout"] == "class folders"
    row = m.frame.set_index("image_id").loc["images/FIAT 500 Abarth 2012/00002"]
    assert (row["path"], row["split"], row["clean_label"], row["label"]) == (
        "images/FIAT 500 Abarth 2012/00002.jpg",
        "test",
        98,
        98,
    )
    assert set(m.split("train")["label"]) == set(range(98)) and set(m.split("test")["label"]) == set(range(98, 196))
    assert all(m.resolve(p).is_file() for p in m.frame["path"])
    assert not m.frame["is_noisy"].any()


def test_annotations_file_wins_over_folders(tmp_path: Path) -> None:
    fake_cars(tmp_path / "cars", per_class=1)
    fake_cars_folders(tmp_path / "cars", _files(prism_cars_classes(), per_class=1))
    m = read_manifest(build("cars", BuildOptions(root=tmp_path / "cars"))[0])
    assert m.frame["path"].str.startswith("car_ims/").all() and len(m) == 196
    assert m.meta.source["layout"] == "cars_annos.mat"


@pytest.mark.parametrize("n_classes", [195, 197])
def test_wrong_number_of_class_folders(runner, home: Path, tmp_path: Path, n_classes: int) -> None:
    classes = prism_cars_classes()
    classes = classes[:n_classes] if n_classes < 196 else [*classes, "Zzz Extra Car 2013"]
    fake_cars_folders(tmp_path / "cars", _files(classes, per_class=1))
    _fails(runner, ["build", "cars", "--root", str(tmp_path / "cars")], f"holds {n_classes} class folder(s)", "196")
    assert not (home / "cars" / "clean.parquet").exists()


def test_neither_layout(runner, tmp_path: Path) -> None:
    (tmp_path / "cars").mkdir()
    _fails(runner, ["build", "cars", "--root", str(tmp_path / "cars")], "neither cars_annos.mat nor an images/")

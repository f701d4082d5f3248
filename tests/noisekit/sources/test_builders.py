"""Each builder on a fake tree with its real layout: exact counts, labels, split membership, disjoint classes."""

from __future__ import annotations

from pathlib import Path

from fakes import FOOD_CLASSES, cars_class_names, fake_cars, fake_cub, fake_food101n, fake_sop

from noisekit.manifest import read_manifest
from noisekit.paths import manifest_path
from noisekit.sources.build import BuildOptions, build


def _disjoint(manifest) -> None:
    train = set(manifest.split("train")["clean_label"]) - {-1}
    test = set(manifest.split("test")["clean_label"])
    assert train and test and not train & test


def test_cars_standard_split(tmp_path: Path) -> None:
    items = fake_cars(tmp_path / "cars", per_class=2)
    path, result = build("cars", BuildOptions(root=tmp_path / "cars"))
    m = read_manifest(path)
    assert len(m) == 392 and result.missing == []
    assert m.counts() == {"splits": {"train": 196, "test": 196}, "classes": {"train": 98, "test": 98}}
    assert m.meta.class_names == tuple(cars_class_names())
    row = m.frame.set_index("image_id").loc["car_ims/000197"]  # the 197th image is class 99: first test class
    assert (row["path"], row["split"], row["clean_label"], row["label"]) == (
        "car_ims/000197.jpg",
        "test",
        98,
        98,
    )
    by_id = dict(zip(m.frame["path"], m.frame["clean_label"], strict=True))
    assert all(by_id[rel] == cls - 1 for rel, cls in items)
    assert not m.frame["is_noisy"].any()
    _disjoint(m)


def test_cub_standard_split(tmp_path: Path) -> None:
    sizes = [1 + k % 3 for k in range(200)]
    fake_cub(tmp_path / "CUB_200_2011", sizes)
    # --root may name the dataset folder or its parent
    path, _ = build("cub", BuildOptions(root=tmp_path))
    m = read_manifest(path)
    assert m.counts()["splits"] == {"train": sum(sizes[:100]), "test": sum(sizes[100:])}
    assert m.counts()["classes"] == {"train": 100, "test": 100}
    assert m.meta.class_names[0] == "001.Bird_1" and len(m.meta.class_names) == 200
    assert set(m.split("train")["label"]) == set(range(100))
    assert set(m.split("test")["label"]) == set(range(100, 200))
    assert m.frame["path"].iloc[0] == "images/001.Bird_1/Bird_1_0000_1.jpg"
    assert all(m.resolve(p).is_file() for p in m.frame["path"])
    _disjoint(m)


def test_sop_standard_split(tmp_path: Path) -> None:
    counts = fake_sop(tmp_path / "Stanford_Online_Products", train_classes=6, test_classes=5, per_class=3)
    path, _ = build("sop", BuildOptions(root=tmp_path / "Stanford_Online_Products"))
    m = read_manifest(path)
    assert m.counts()["splits"] == {"train": counts["train"], "test": counts["test"]} == {"train": 18, "test": 15}
    assert m.counts()["classes"] == {"train": 6, "test": 5}
    assert m.meta.class_names[:2] == ("bicycle_1", "cabinet_2")
    assert m.split("test")["label"].min() == 6
    _disjoint(m)


def test_food101n_split_and_verification(tmp_path: Path) -> None:
    fake_food101n(tmp_path / "Food-101N_release", tmp_path / "food-101", per_class=3)
    options = BuildOptions(root=tmp_path / "Food-101N_release", food101_root=tmp_path / "food-101")
    path, _ = build("food101n", options)
    m = read_manifest(path)
    assert m.meta.class_names == tuple(FOOD_CLASSES)  # alphabetical, not the file's order
    assert m.counts() == {"splits": {"train": 150, "test": 153}, "classes": {"train": 50, "test": 51}}
    train = m.split("train")
    assert set(train["label"]) == set(range(50)) and set(m.split("test")["label"]) == set(range(50, 101))
    # per class: image 0 verified noisy, image 1 verified clean, image 2 unverified
    assert int(train["is_noisy"].fillna(False).sum()) == 50
    assert int((train["is_noisy"] == False).sum()) == 50  # noqa: E712 - nullable comparison
    assert int(train["is_noisy"].isna().sum()) == 50
    assert ((train["clean_label"] >= 0) == (train["is_noisy"] == False)).all()  # noqa: E712
    test = m.split("test")
    assert test["path"].str.startswith("food-101/images/").all() and not test["is_noisy"].any()
    assert all(m.resolve(p).is_file() for p in m.frame["path"])


def test_digits_is_real_and_byte_identical(home: Path) -> None:
    path, _ = build("digits")
    first = path.read_bytes()
    m = read_manifest(path)
    assert m.counts() == {"splits": {"train": 901, "test": 896}, "classes": {"train": 5, "test": 5}}
    assert set(m.split("train")["label"]) == {0, 1, 2, 3, 4}
    build("digits")
    assert manifest_path("digits").read_bytes() == first

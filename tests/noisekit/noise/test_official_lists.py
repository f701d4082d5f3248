"""The PRISM authors' real lists imported onto CARS196 in their own layout (``cars196/images/<class>/<file>.jpg``,
written once per module from CARS_train.csv + CARS_test.csv): exact counts, rates and labels, and bad input."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from cli_checks import one_line_error
from fakes import PRISM_LISTS, fake_cars_folders, prism_cars_classes, prism_cars_images

from noisekit.cli import app
from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, read_manifest
from noisekit.noise.common import load_clean
from noisekit.noise.official_lists import import_lists, map_paths
from noisekit.sources.build import BuildOptions, build

SYMMETRIC = PRISM_LISTS / "CARS_0.1noised_train.csv"
SYMMETRIC_CLEANED = PRISM_LISTS / "CARS_0.1noised_cleaned_train.csv"
SMALL_CLUSTER = PRISM_LISTS / "CARS_0.5smallclusternoised_train.csv"
SMALL_CLUSTER_CLEANED = PRISM_LISTS / "CARS_0.5smallclusternoised_cleaned_train.csv"
N_TRAIN, N_TEST = 8054, 8131


def _rows(path: Path) -> list[tuple[str, int]]:
    return [(p, int(lab)) for p, lab in (line.rsplit(",", 1) for line in path.read_text().splitlines())]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a data home holding CARS196 built from the authors' layout (the tree is built once)."""
    base = tmp_path_factory.mktemp("prism_cars")
    fake_cars_folders(base / "cars196", [rel for rel, _ in prism_cars_images()])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEKIT_HOME", str(base / "home"))
        build("cars", BuildOptions(root=base))
    return base / "home" / "cars"


@pytest.fixture
def cars(built: Path, home: Path) -> Manifest:
    """This test's data home with the built clean manifest copied in; returns that manifest."""
    shutil.copytree(built, home / "cars")
    return load_clean("cars")


def _cli(runner, *args: str | Path) -> str:
    result = runner.invoke(app, ["import-lists", "--dataset", "cars", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def _fails(runner, home: Path, args: list[str | Path], *needles: str) -> str:
    line = one_line_error(runner.invoke(app, ["import-lists", *map(str, args)]), *needles)
    written = sorted(p.name for p in (home / "cars").iterdir()) if (home / "cars").exists() else []
    assert written in ([], ["clean.json", "clean.parquet"]), written  # no variant, no temporary file
    return line


def _edited(tmp_path: Path, source: Path, edit) -> Path:
    """A copy of an authors' list with ``edit`` applied to its lines."""
    lines = source.read_text().splitlines(keepends=True)
    out = tmp_path / f"edited_{source.name}"
    out.write_text("".join(edit(lines)))
    return out


def test_folder_layout_builds_the_standard_split(cars: Manifest) -> None:
    assert cars.counts() == {"splits": {"train": N_TRAIN, "test": N_TEST}, "classes": {"train": 98, "test": 98}}
    train, test = set(cars.split("train")["clean_label"]), set(cars.split("test")["clean_label"])
    assert train == set(range(98)) and test == set(range(98, 196)) and not train & test
    assert cars.meta.class_names == tuple(prism_cars_classes())
    # every image of the authors' split lands on their class (authors' label k = clean class k - 1)
    rows = _rows(PRISM_LISTS / "CARS_train.csv") + _rows(PRISM_LISTS / "CARS_test.csv")
    hit = map_paths([p for p, _ in rows], cars.frame["path"].tolist())
    assert (hit >= 0).all() and len(set(hit.tolist())) == N_TRAIN + N_TEST
    assert (cars.frame["clean_label"].to_numpy()[hit] == np.array([lab for _, lab in rows]) - 1).all()


def test_symmetric_list_with_cleaned(runner, cars: Manifest, home: Path) -> None:
    out = _cli(runner, "--list", SYMMETRIC, "--cleaned", SYMMETRIC_CLEANED, "--variant", "prism-symmetric-0.1")
    # an imported list has no requested rate and no seed: the summary, info and the report say only what is known
    assert "cars/prism-symmetric-0.1: realised 0.1072 (863 of 8,054 training labels noisy)" in out
    assert "None" not in out
    shown = runner.invoke(app, ["info", "cars/prism-symmetric-0.1"]).output
    assert "noise: official_list  realised 0.1072\n" in shown and "None" not in shown
    m = read_manifest(home / "cars" / "prism-symmetric-0.1.parquet")
    noise = m.meta.noise
    assert noise["unmapped"] == 0 and noise["dropped_train_rows"] == 0
    assert noise["realised_rate"] == 863 / N_TRAIN and noise["model"] == "official_list"
    assert noise["list"] == SYMMETRIC.name and noise["cleaned"] == SYMMETRIC_CLEANED.name
    assert noise["labels"] == "ids" and "labels read as class ids" in out  # auto: the authors' labels are class ids
    assert m.meta.label_names is None  # labels 1-98 stand for the 98 training classes: clean label space kept
    train = m.split("train")
    n_cleaned = len(SYMMETRIC_CLEANED.read_text().splitlines())
    assert len(train) == N_TRAIN and int(train["is_noisy"].sum()) == 863 == N_TRAIN - n_cleaned
    listed = {p.split("cars196/")[1]: lab for p, lab in _rows(SYMMETRIC)}
    assert (train["label"].to_numpy() == np.array([listed[p] for p in train["path"]]) - 1).all()
    test = m.split("test")
    clean_test = cars.split("test")
    assert test["path"].tolist() == clean_test["path"].tolist()
    assert (test["label"].to_numpy() == clean_test["label"].to_numpy()).all() and not test["is_noisy"].any()
    assert (home / "cars" / "prism-symmetric-0.1.report.json").is_file()


def test_symmetric_list_without_cleaned_votes_the_same_flags(cars: Manifest) -> None:
    with_cleaned = import_lists(cars, list_path=SYMMETRIC, cleaned_path=SYMMETRIC_CLEANED, variant="a")
    voted = import_lists(cars, list_path=SYMMETRIC, variant="b")
    assert voted.meta.noise["realised_rate"] == 863 / N_TRAIN and voted.meta.noise["cleaned"] is None
    assert voted.meta.noise["list_sha256"] == with_cleaned.meta.noise["list_sha256"]
    assert voted.frame["is_noisy"].equals(with_cleaned.frame["is_noisy"])
    assert voted.frame["label"].equals(with_cleaned.frame["label"])


def test_small_cluster_list_reindexes_48_labels(runner, cars: Manifest, home: Path) -> None:
    _cli(runner, "--list", SMALL_CLUSTER, "--cleaned", SMALL_CLUSTER_CLEANED, "--variant", "prism-small_cluster-0.5")
    m = read_manifest(home / "cars" / "prism-small_cluster-0.5.parquet")
    n_cleaned = len(SMALL_CLUSTER_CLEANED.read_text().splitlines())
    assert n_cleaned == 4007
    assert m.counts() == {"splits": {"train": N_TRAIN, "test": N_TEST}, "classes": {"train": 48, "test": 98}}
    assert m.meta.noise["realised_rate"] == 1 - 4007 / N_TRAIN
    assert round(m.meta.noise["realised_rate"], 4) == 0.5025
    assert int(m.split("train")["is_noisy"].sum()) == N_TRAIN - 4007 == 4047
    # label k names the class whose images carry the authors' label k in the cleaned list
    truth = {lab: p.split("/")[-2] for p, lab in _rows(SMALL_CLUSTER_CLEANED)}
    assert sorted(truth) == list(range(48))
    assert m.meta.label_names[:48] == tuple(truth[k] for k in range(48))
    assert m.meta.label_names[48:] == tuple(prism_cars_classes()[98:])
    assert set(m.split("train")["label"]) == set(range(48)) and set(m.split("test")["label"]) == set(range(48, 146))
    # the clean rows carry their own class name, the noisy ones another
    train = m.split("train")
    named = np.asarray(m.meta.label_names, dtype=object)[train["label"].to_numpy()]
    own = np.asarray(m.meta.class_names, dtype=object)[train["clean_label"].to_numpy()]
    assert ((named != own) == train["is_noisy"].to_numpy(dtype=bool)).all()
    assert m.meta.noise["labels"] == "learn"  # auto: labels 0-47 are no class ids
    voted = import_lists(cars, list_path=SMALL_CLUSTER, variant="voted")
    assert voted.meta.label_names == m.meta.label_names and voted.frame["is_noisy"].equals(m.frame["is_noisy"])


def test_skip_unmapped_and_dropped_rows(runner, cars: Manifest, home: Path, tmp_path: Path) -> None:
    # the cleaned list as a list of its own: 863 training images absent, plus one row that maps nowhere
    lst = _edited(tmp_path, SYMMETRIC_CLEANED, lambda lines: [*lines, "/data/cars196/images/Nope/00001.jpg,1\n"])
    out = _cli(runner, "--list", lst, "--variant", "partial", "--skip-unmapped")
    assert "skipped 1 unmapped row(s); left out 863 training image(s)" in out
    m = read_manifest(home / "cars" / "partial.parquet")
    assert m.meta.noise["unmapped"] == 1 and m.meta.noise["dropped_train_rows"] == 863
    assert m.counts()["splits"] == {"train": N_TRAIN - 863, "test": N_TEST}
    assert m.meta.noise["realised_rate"] == 0.0 and not m.frame["is_noisy"].any()


def test_unmapped_row_names_file_line_and_count(runner, cars: Manifest, home: Path, tmp_path: Path) -> None:
    def edit(lines: list[str]) -> list[str]:
        lines[16] = "/data/cars196/images/No Such Car 1999/00001.jpg,1\n"
        # a test image is no training image either
        lines[99] = "/data/cars196/images/FIAT 500 Abarth 2012/07729.jpg,1\n"
        return lines

    lst = _edited(tmp_path, SYMMETRIC, edit)
    _fails(
        runner,
        home,
        ["--dataset", "cars", "--list", lst, "--variant", "v"],
        f"{lst.name}:17:",
        "No Such Car 1999",
        "2 unmapped row(s)",
        "--skip-unmapped",
    )


@pytest.mark.parametrize(
    ("suffix", "needle"), [("\n", "expected 2 fields, got 1"), (",one\n", "label 'one' is not an integer")]
)
def test_malformed_row(runner, cars: Manifest, home: Path, tmp_path: Path, suffix: str, needle: str) -> None:
    lst = _edited(tmp_path, SYMMETRIC, lambda lines: [*lines[:41], lines[41].rsplit(",", 1)[0] + suffix, *lines[42:]])
    _fails(runner, home, ["--dataset", "cars", "--list", lst, "--variant", "v"], f"{lst.name}:42:", needle)


def test_path_listed_twice_names_both_lines(runner, cars: Manifest, home: Path, tmp_path: Path) -> None:
    lst = _edited(tmp_path, SYMMETRIC, lambda lines: [*lines[:9], lines[2], *lines[10:]])
    _fails(runner, home, ["--dataset", "cars", "--list", lst, "--variant", "v"], "listed twice (lines 3 and 10)")


def test_dataset_not_built(runner, home: Path) -> None:
    _fails(runner, home, ["--dataset", "cars", "--list", SYMMETRIC, "--variant", "v"], "'cars' is not built")


def test_cleaned_row_not_in_list(runner, cars: Manifest, home: Path, tmp_path: Path) -> None:
    lst = _edited(tmp_path, SYMMETRIC, lambda lines: [line for line in lines if "/00887.jpg," not in line])
    args = ["--dataset", "cars", "--list", lst, "--cleaned", SYMMETRIC_CLEANED, "--variant", "v"]
    # 00887.jpg is the first row of the cleaned list
    _fails(runner, home, args, f"{SYMMETRIC_CLEANED.name}:1:", "00887.jpg", f"not in {lst.name}")


def test_cleaned_label_differs_from_list(runner, cars: Manifest, home: Path, tmp_path: Path) -> None:
    cleaned = _edited(tmp_path, SYMMETRIC_CLEANED, lambda lines: [lines[0].replace(",1\n", ",2\n"), *lines[1:]])
    args = ["--dataset", "cars", "--list", SYMMETRIC, "--cleaned", cleaned, "--variant", "v"]
    _fails(runner, home, args, f"{cleaned.name}:1:", "label 2 differs", f"{SYMMETRIC.name}:")


def test_vote_tie_suggests_cleaned(cars: Manifest, tmp_path: Path) -> None:
    # relabel Acura images to 1 until label 1 holds as many Acuras as Hummers: the vote cannot decide
    rows = _rows(SYMMETRIC)
    hummer, acura = "AM General Hummer SUV 2000", "Acura Integra Type R 2001"
    in_one = Counter(p.split("/")[-2] for p, lab in rows if lab == 1)
    movable = [i for i, (p, lab) in enumerate(rows) if p.split("/")[-2] == acura and lab != 1]
    for i in movable[: in_one[hummer] - in_one[acura]]:
        rows[i] = (rows[i][0], 1)
    lst = tmp_path / "tie.csv"
    lst.write_text("".join(f"{p},{lab}\n" for p, lab in rows))
    with pytest.raises(NoisekitError, match=r"label 1 has no single clean class .*tie.*--cleaned"):
        import_lists(cars, list_path=lst, variant="v", labels="learn")
    # read as class ids (what auto picks for a symmetric list) there is nothing to decide
    assert import_lists(cars, list_path=lst, variant="v").meta.noise["labels"] == "ids"


def test_refuses_to_overwrite_clean(cars: Manifest) -> None:
    with pytest.raises(NoisekitError, match="--variant 'clean'"):
        import_lists(cars, list_path=SYMMETRIC, variant="clean")


def _class_of(path: str, names: list[str]) -> int:
    """The clean class of an authors' path: its folder's name (cars196/images/<class>/<file>.jpg)."""
    return names.index(path.split("/")[-2])


def _write(path: Path, rows: list[tuple[str, int]]) -> Path:
    path.write_text("".join(f"{p},{lab}\n" for p, lab in rows))
    return path


@pytest.mark.parametrize("with_cleaned", [False, True])
def test_ids_out_of_range_and_test_class_labels(
    runner, cars: Manifest, home: Path, tmp_path: Path, with_cleaned
) -> None:
    # CUB's symmetric lists carry a test class's id (101) on some rows; here 7 rows get id 99 (CARS's first test
    # class) and 3 rows an id that is no class at all (500)
    names = list(cars.meta.class_names)
    rows = _rows(SYMMETRIC)
    rows[10:17] = [(p, 99) for p, _ in rows[10:17]]
    rows[100:103] = [(p, 500) for p, _ in rows[100:103]]
    lst = _write(tmp_path / "CUB_like_0.1noised_train.csv", rows)
    args = ["--list", lst, "--variant", "ids"]
    if with_cleaned:
        cleaned = [(p, lab) for p, lab in rows if lab - 1 == _class_of(p, names)]
        args += ["--cleaned", _write(tmp_path / "CUB_like_0.1noised_cleaned_train.csv", cleaned)]
    out = _cli(runner, *args)
    assert "labels read as class ids" in out
    assert "7 row(s) carry the id of a class outside the training split ('" + names[98] + "')" in out
    assert "left out 3 row(s) whose label is no class id of cars" in out
    variant = read_manifest(home / "cars" / "ids.parquet")
    train = variant.split("train")
    kept = [(p, lab) for p, lab in rows if lab != 500]
    assert len(train) == N_TRAIN - 3 == len(kept)
    # row for row: the label is the list's id - 1, noisy exactly when that is not the image's class
    by_file = {p.split("/", 3)[-1]: lab for p, lab in kept}
    expected_label = train["path"].map(lambda p: by_file["/".join(p.split("/")[-3:])] - 1)
    assert (train["label"].to_numpy() == expected_label.to_numpy()).all()
    expected_noisy = sum(lab - 1 != _class_of(p, names) for p, lab in kept)
    assert int(train["is_noisy"].sum()) == expected_noisy == int((train["label"] != train["clean_label"]).sum())
    noise = variant.meta.noise
    assert noise["labels"] == "ids" and noise["extra_labels"] == [names[98]] and noise["extra_label_rows"] == 7
    assert noise["out_of_range_rows"] == 3 and noise["dropped_train_rows"] == 3
    assert noise["realised_rate"] == pytest.approx(expected_noisy / len(kept))
    assert variant.meta.label_names is None  # the clean label space is kept
    assert int((train["label"] == 98).sum()) == 7


def test_ids_label_that_no_image_keeps(cars: Manifest, tmp_path: Path) -> None:
    # SOP's symmetric lists carry labels whose every own image was flipped away: no row tells by vote which class
    # they stand for, but as ids they need no evidence
    names = list(cars.meta.class_names)
    rows = _rows(SYMMETRIC)
    own = [i for i, (p, lab) in enumerate(rows) if lab == 5 and _class_of(p, names) == 4]
    for i in own:
        rows[i] = (rows[i][0], 6)
    lst = _write(tmp_path / "SOP_like_0.5noised_train.csv", rows)
    assert own and sum(lab == 5 for _, lab in rows) > 0  # label 5 still exists, carried by other classes' images
    with pytest.raises(NoisekitError, match="label 5"):
        import_lists(cars, list_path=lst, variant="v", labels="learn")
    variant = import_lists(cars, list_path=lst, variant="v")
    train = variant.frame[variant.frame["split"] == "train"]
    assert len(train) == N_TRAIN
    assert int(train["is_noisy"].sum()) == sum(lab - 1 != _class_of(p, names) for p, lab in rows)
    assert int(((train["label"] == 4) & (train["clean_label"] == 4)).sum()) == 0
    assert int((train["label"] == 4).sum()) == sum(lab == 5 for _, lab in rows)


def test_labels_option_checked(runner, cars: Manifest, home: Path) -> None:
    _fails(runner, home, ["--dataset", "cars", "--list", SYMMETRIC, "--variant", "v", "--labels", "guess"], "--labels")


def test_ids_that_name_no_class_at_all_are_an_error(cars: Manifest, tmp_path: Path) -> None:
    lst = _write(tmp_path / "zeros.csv", [(p, 0) for p, _ in _rows(SYMMETRIC)])
    with pytest.raises(NoisekitError, match=r"zeros.csv: none of its labels is a class id of the dataset \(1..196\)"):
        import_lists(cars, list_path=lst, variant="v", labels="ids")

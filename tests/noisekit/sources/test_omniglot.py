"""Omniglot: the shipped small subsets (exact counts, alphabet-disjoint split, byte-identical rebuilds) and the
``--full --download`` path against a loopback server serving zips in the official layout, hostile ones included."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from cli_checks import one_line_error
from PIL import Image
from torchvision.datasets import Omniglot

from noisekit.cli import app
from noisekit.manifest import read_manifest
from noisekit.sources import omniglot
from noisekit.sources.build import build

SMALL1 = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
TEST_ALPHABETS = {"Japanese_(katakana)", "Sanskrit", "Tagalog"}


def test_shipped_subsets_exact_counts_and_disjoint_alphabets(home: Path) -> None:
    path, result = build("omniglot")
    m = read_manifest(path)
    assert m.counts() == {"splits": {"train": 2720, "test": 2120}, "classes": {"train": 136, "test": 106}}
    assert result.missing == [] and "Greek, Latin" in result.notes[0]
    names = m.meta.class_names
    assert len(names) == 242 and len(set(names)) == 242
    train, test = m.split("train"), m.split("test")
    assert {names[c].split("/")[0] for c in train["clean_label"]} == set(SMALL1)
    assert {names[c].split("/")[0] for c in test["clean_label"]} == TEST_ALPHABETS
    assert set(train["label"]) == set(range(136)) and set(test["label"]) == set(range(136, 242))
    assert names[0] == "Balinese/character01" and names[136] == "Japanese_(katakana)/character01"
    assert (train.groupby("label").size() == 20).all() and (test.groupby("label").size() == 20).all()
    first = train.iloc[0]
    assert first["path"] == "images_background_small1/Balinese/character01/0108_01.png"
    assert first["image_id"] == "images_background_small1/Balinese/character01/0108_01"
    with Image.open(m.resolve(first["path"])) as image:
        assert image.size == (105, 105)
    assert Path(m.meta.root) == home / "raw" / "omniglot"


def test_rebuild_is_byte_identical_even_after_extracting_again(home: Path) -> None:
    path, _ = build("omniglot")
    first = path.read_bytes()
    build("omniglot")
    assert path.read_bytes() == first
    import shutil

    shutil.rmtree(home / "raw" / "omniglot")
    build("omniglot")
    assert path.read_bytes() == first


def test_checksums_are_torchvisions() -> None:
    assert {a.subdir: a.md5 for a in omniglot.ARCHIVES} == Omniglot.zips_md5
    assert {a.url for a in omniglot.ARCHIVES} == {f"{Omniglot.download_url_prefix}/{n}.zip" for n in FULL_NAMES}


FULL_NAMES = ("images_background", "images_evaluation")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (12, 12), color=seed % 256).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, top: str, alphabets: dict[str, int], *, drawers: int = 3, extra: str | None = None) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for a, (alphabet, chars) in enumerate(alphabets.items()):
            for c in range(1, chars + 1):
                for d in range(1, drawers + 1):
                    zf.writestr(f"{top}/{alphabet}/character{c:02d}/{a:02d}{c:02d}_{d:02d}.png", _png(a * 31 + c + d))
        if extra:
            zf.writestr(extra, _png(0))


@pytest.fixture
def full_server(file_server, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """Zips in the official layout (2 + 1 alphabets), served on 127.0.0.1, with the known MD5s set to theirs."""
    base, served = file_server
    _zip(served / "images_background.zip", "images_background", {"Alpha": 2, "Beta": 3})
    _zip(served / "images_evaluation.zip", "images_evaluation", {"Gamma": 4})
    archives = tuple(
        replace(a, md5=hashlib.md5((served / a.filename).read_bytes()).hexdigest()) for a in omniglot.ARCHIVES
    )
    monkeypatch.setattr(omniglot, "ARCHIVES", archives)
    return base, served


def test_full_download_from_mirror_builds_background_and_evaluation(full_server, runner, tmp_path: Path) -> None:
    base, _ = full_server
    raw = tmp_path / "raw"
    result = runner.invoke(app, ["build", "omniglot", "--full", "--download", "--mirror", base, "--root", str(raw)])
    assert result.exit_code == 0, result.output
    m = read_manifest(Path(result.output.strip().split("-> ")[-1]))
    assert m.counts() == {"splits": {"train": 15, "test": 12}, "classes": {"train": 5, "test": 4}}
    assert m.meta.class_names[:2] == ("Alpha/character01", "Alpha/character02")
    assert m.meta.class_names[5] == "Gamma/character01"
    assert sorted(p.name for p in raw.iterdir()) == [
        "images_background",
        "images_background.zip",
        "images_evaluation",
        "images_evaluation.zip",
    ]


def test_full_download_refuses_a_hostile_member_and_writes_nothing(
    full_server, runner, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served = full_server
    _zip(served / "images_evaluation.zip", "images_evaluation", {"Gamma": 1}, extra="images_evaluation/../../evil.png")
    digest = hashlib.md5((served / "images_evaluation.zip").read_bytes()).hexdigest()
    monkeypatch.setattr(omniglot, "ARCHIVES", (omniglot.ARCHIVES[0], replace(omniglot.ARCHIVES[1], md5=digest)))
    raw = tmp_path / "raw"
    result = runner.invoke(app, ["build", "omniglot", "--full", "--download", "--mirror", base, "--root", str(raw)])
    one_line_error(result, "images_evaluation.zip", "evil.png", "refused")
    assert not (raw / "images_evaluation").exists() and not (tmp_path / "evil.png").exists()
    assert not (home / "omniglot" / "clean.parquet").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["build", "omniglot", "--download"], ("ship with noisekit", "--full")),
        (["build", "omniglot", "--full"], ("--root", "images_background/", "--download")),
        (["build", "cub", "--full", "--root", "."], ("--full applies to omniglot only",)),
    ],
)
def test_option_misuse_is_one_line(runner, args: list[str], needles: tuple[str, ...]) -> None:
    one_line_error(runner.invoke(app, args), *needles)


def test_full_root_without_its_folders_names_the_folder(runner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "omniglot", "--full", "--root", str(tmp_path)])
    one_line_error(result, str(tmp_path / "images_background"), "does not exist")


def test_card_allows_publishing_the_images() -> None:
    from noisekit.hub.cards import commands, images_allowed

    assert images_allowed("omniglot")  # MIT: `noisekit publish omniglot` may include the images
    assert commands({"dataset": "omniglot", "variant": "clean"}) == ["noisekit build omniglot"]

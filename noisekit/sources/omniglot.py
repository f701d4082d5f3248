"""Omniglot (Lake et al. 2015, MIT): handwritten characters of 50 alphabets, 20 drawers each, 105x105 PNGs.

Embedded default: the two "background small" subsets ship with noisekit (``noisekit/data/omniglot/``, 2.9 MB) and
are extracted into the raw folder on first use. DML split, alphabet-disjoint: train = the five alphabets of
``images_background_small1`` (136 characters, 2,720 images); test = the alphabets of ``images_background_small2``
that small1 does not hold (Japanese (katakana), Sanskrit, Tagalog: 106 characters, 2,120 images; Greek and Latin are
in both archives, byte-identical, and stay in train). ``full=True``: train = ``images_background`` (30 alphabets,
964 characters), test = ``images_evaluation`` (20 alphabets, 659 characters), from the official repository.

Classes are named ``<alphabet>/<character>``; training classes come first, each split sorted by name.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from noisekit.download import Archive, safe_extract
from noisekit.errors import NoisekitError
from noisekit.sources.common import BuildResult, assemble, require_dir

EMBEDDED = Path(str(files("noisekit") / "data" / "omniglot"))
SMALL = ("images_background_small1", "images_background_small2")
FULL = ("images_background", "images_evaluation")
# torchvision.datasets.Omniglot's URLs and MD5s (the archives of brendenlake/omniglot, python/)
BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
ARCHIVES = (
    Archive(f"{BASE_URL}/images_background.zip", "images_background.zip", "images_background",
            md5="68d2efa1b9178cc56df9314c21c6e718"),
    Archive(f"{BASE_URL}/images_evaluation.zip", "images_evaluation.zip", "images_evaluation",
            md5="6b91aef0f799c5bb55b94e3f2daec811"),
)  # fmt: skip


def extract_embedded(root: Path) -> None:
    """Extract the shipped small subsets into ``root`` unless they are there already."""
    for name in SMALL:
        if not (root / name).is_dir():
            safe_extract(EMBEDDED / f"{name}.zip", root)


def characters(folder: Path) -> dict[str, list[Path]]:
    """``<alphabet>/<character>`` -> its PNGs, from ``folder/<alphabet>/<character>/*.png``, sorted."""
    require_dir(folder, what="omniglot folder")
    found = {
        f"{alphabet.name}/{char.name}": sorted(char.glob("*.png"))
        for alphabet in sorted(p for p in folder.iterdir() if p.is_dir())
        for char in sorted(p for p in alphabet.iterdir() if p.is_dir())
    }
    empty = [name for name, pngs in found.items() if not pngs]
    if not found or empty:
        what = f"character folder {folder / empty[0]} holds no .png" if empty else "no <alphabet>/<character>/ folders"
        raise NoisekitError(f"omniglot: {folder}: {what}")
    return found


def build(root: Path, *, full: bool = False, strict: bool = False) -> BuildResult:
    train_dir, test_dir = FULL if full else SMALL
    if not full:
        extract_embedded(root)
    train, test = characters(root / train_dir), characters(root / test_dir)
    train_alphabets = {name.split("/")[0] for name in train}
    shared = sorted({name.split("/")[0] for name in test} & train_alphabets)
    test = {name: pngs for name, pngs in test.items() if name.split("/")[0] not in train_alphabets}
    if not test:
        raise NoisekitError(f"omniglot: {root / test_dir} holds no alphabet that {root / train_dir} lacks")
    class_names = [*train, *test]
    rows = [
        (rel.removesuffix(".png"), rel, split, label)
        for split, classes, offset in (("train", train, 0), ("test", test, len(train)))
        for label, pngs in enumerate(classes.values(), start=offset)
        for rel in (png.relative_to(root).as_posix() for png in pngs)
    ]
    result = assemble(
        dataset="omniglot",
        root=root,
        rows=rows,
        class_names=class_names,
        strict=strict,
        source={
            "name": "Omniglot " + ("background / evaluation" if full else "background small 1 / 2"),
            "split": f"train {train_dir}, test {test_dir} minus the alphabets train holds",
        },
    )
    if shared:
        result.notes.append(f"omniglot: {', '.join(shared)} in both {train_dir} and {test_dir}: kept in train only")
    return result

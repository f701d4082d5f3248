"""Food-101N (noisy web training images) + Food-101 (clean test images).

DML split: train = the Food-101N images of the first 50 classes in alphabetical order (144,086 images); test =
the Food-101 images (its train and test lists together) of the other 51 classes (51,000 images).
Food-101N's labels are the web labels. Where ``verified_train.tsv`` / ``verified_val.tsv`` verified an image,
``is_noisy`` says so (verification_label 0 = noisy) and a verified-clean image gets its label as ``clean_label``;
elsewhere the truth is unknown (``clean_label`` -1, ``is_noisy`` null).
"""

from __future__ import annotations

from pathlib import Path

from noisekit.errors import NoisekitError
from noisekit.sources.common import BuildResult, assemble, read_rows, require_dir, require_file

N_TRAIN_CLASSES = 50
TEST_PREFIX = "food-101"  # manifest paths of the test split start with this and resolve under --food101-root


def _classes(path: Path, *, header: bool) -> list[str]:
    return [name for _, (name,) in read_rows(path, fields=1, header=("class_name",) if header else None)]


def _verified(meta: Path) -> dict[str, bool]:
    """key -> is the web label correct, from whichever verification files exist (both are optional)."""
    verdict: dict[str, bool] = {}
    for name in ("verified_train.tsv", "verified_val.tsv"):
        path = meta / name
        if not path.is_file():
            continue
        for number, (key, flag) in read_rows(path, fields=2, sep="\t", header=("class_name/key", "verification_label")):
            if flag not in ("0", "1"):
                raise NoisekitError(f"{path}:{number}: verification_label {flag!r} must be 0 or 1")
            verdict[key] = flag == "1"
    return verdict


def build(root: Path, *, food101_root: Path | None, strict: bool = False) -> BuildResult:
    require_dir(root, what="food101n root")
    if food101_root is None:
        raise NoisekitError("food101n: --food101-root is required (the test split is Food-101's other 51 classes)")
    require_dir(food101_root, what="--food101-root")
    meta = root / "meta"
    classes = sorted(_classes(require_file(meta / "classes.txt", dataset="food101n"), header=True))
    f101_classes = sorted(
        _classes(require_file(food101_root / "meta" / "classes.txt", dataset="food-101"), header=False)
    )
    if classes != f101_classes:
        raise NoisekitError(f"food101n: {meta / 'classes.txt'} and {food101_root / 'meta' / 'classes.txt'} disagree")
    index = {name: k for k, name in enumerate(classes)}
    train_classes = set(classes[:N_TRAIN_CLASSES])
    verdict = _verified(meta)

    rows, noisy, label = [], [], []
    imagelist = require_file(meta / "imagelist.tsv", dataset="food101n")
    for number, (key,) in read_rows(imagelist, fields=1, header=("class_name/key",)):
        cls = key.split("/", 1)[0]
        if cls not in index or "/" not in key:
            raise NoisekitError(f"{imagelist}:{number}: {key!r} is not <class_name>/<file> of a known class")
        if cls not in train_classes:
            continue
        ok = verdict.get(key)
        rows.append((f"food101n/{key.rsplit('.', 1)[0]}", f"images/{key}", "train", index[cls] if ok else -1))
        label.append(index[cls])
        noisy.append(None if ok is None else not ok)

    for part in ("train", "test"):
        listing = require_file(food101_root / "meta" / f"{part}.txt", dataset="food-101")
        for number, (key,) in read_rows(listing, fields=1):
            cls = key.split("/", 1)[0]
            if cls not in index:
                raise NoisekitError(f"{listing}:{number}: class {cls!r} is not in classes.txt")
            if cls in train_classes:
                continue
            rows.append((f"food101/{key}", f"{TEST_PREFIX}/images/{key}.jpg", "test", index[cls]))
            label.append(index[cls])
            noisy.append(False)
    return assemble(
        dataset="food101n",
        root=root,
        rows=rows,
        class_names=classes,
        strict=strict,
        roots={TEST_PREFIX: str(food101_root)},
        source={
            "name": "Food-101N + Food-101",
            "split": "first 50 classes (Food-101N) train, other 51 (Food-101) test",
        },
        is_noisy=noisy,
        label=label,
    )

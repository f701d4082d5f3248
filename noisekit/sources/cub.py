"""CUB-200-2011 from ``images.txt``, ``image_class_labels.txt``, ``classes.txt`` and ``images/``.

DML split: classes 1-100 train (5,864 images), 101-200 test (5,924).
"""

from __future__ import annotations

from pathlib import Path

from noisekit.errors import NoisekitError
from noisekit.sources.common import BuildResult, assemble, parse_int, read_rows, require_dir, require_file

N_TRAIN_CLASSES = 100


def build(root: Path, *, strict: bool = False) -> BuildResult:
    require_dir(root, what="cub root")
    files = {n: require_file(root / n, dataset="cub") for n in ("images.txt", "image_class_labels.txt", "classes.txt")}

    names: dict[int, str] = {}
    for number, (cid, name) in read_rows(files["classes.txt"], fields=2, sep=" ", maxsplit=1):
        names[parse_int(cid, path=files["classes.txt"], number=number, what="class id")] = name
    if sorted(names) != list(range(1, len(names) + 1)):
        raise NoisekitError(f"{files['classes.txt']}: class ids must run 1..{len(names)} without gaps")

    paths: dict[int, str] = {}
    for number, (iid, rel) in read_rows(files["images.txt"], fields=2, sep=" ", maxsplit=1):
        key = parse_int(iid, path=files["images.txt"], number=number, what="image id")
        if key in paths:
            raise NoisekitError(f"{files['images.txt']}:{number}: image id {key} is listed twice")
        paths[key] = rel

    rows = []
    labels_file = files["image_class_labels.txt"]
    for number, (iid, cid) in read_rows(labels_file, fields=2):
        key = parse_int(iid, path=labels_file, number=number, what="image id")
        cls = parse_int(cid, path=labels_file, number=number, what="class id")
        if key not in paths:
            raise NoisekitError(f"{labels_file}:{number}: image id {key} is not in images.txt")
        if cls not in names:
            raise NoisekitError(f"{labels_file}:{number}: class id {cls} is not in classes.txt")
        rel = paths[key]
        split = "train" if cls <= N_TRAIN_CLASSES else "test"
        rows.append((rel.rsplit(".", 1)[0], f"images/{rel}", split, cls - 1))
    return assemble(
        dataset="cub",
        root=root,
        rows=rows,
        class_names=[names[k] for k in sorted(names)],
        strict=strict,
        source={"name": "CUB-200-2011", "split": "classes 1-100 train, 101-200 test"},
    )

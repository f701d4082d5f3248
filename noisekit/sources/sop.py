"""Stanford Online Products from ``Ebay_train.txt`` / ``Ebay_test.txt`` (header
``image_id class_id super_class_id path``).

DML split as shipped: 59,551 train images of 11,318 classes, 60,502 test images of 11,316 classes. SOP's classes
have no names; a class is named ``<super class>_<class_id>`` after its folder (``bicycle_final`` -> ``bicycle``).
"""

from __future__ import annotations

from pathlib import Path

from noisekit.errors import NoisekitError
from noisekit.sources.common import BuildResult, assemble, parse_int, read_rows, require_dir, require_file

HEADER = ("image_id", "class_id", "super_class_id", "path")


def build(root: Path, *, strict: bool = False) -> BuildResult:
    require_dir(root, what="sop root")
    rows, names = [], {}
    split_classes: dict[str, set[int]] = {"train": set(), "test": set()}
    for split in ("train", "test"):
        path = require_file(root / f"Ebay_{split}.txt", dataset="sop")
        for number, (_, cid, _, rel) in read_rows(path, fields=4, header=HEADER, maxsplit=3):
            cls = parse_int(cid, path=path, number=number, what="class_id")
            if cls < 1:
                raise NoisekitError(f"{path}:{number}: class_id {cls} must be >= 1")
            names[cls] = f"{rel.split('/', 1)[0].removesuffix('_final')}_{cls}"
            split_classes[split].add(cls)
            rows.append((rel.rsplit(".", 1)[0], rel, split, cls - 1))
    shared = split_classes["train"] & split_classes["test"]
    if shared:
        raise NoisekitError(f"sop: class_id {min(shared)} appears in both Ebay_train.txt and Ebay_test.txt")
    n = max(names)
    if sorted(names) != list(range(1, n + 1)):
        raise NoisekitError(f"sop: class ids must run 1..{n} without gaps across Ebay_train.txt and Ebay_test.txt")
    return assemble(
        dataset="sop",
        root=root,
        rows=rows,
        class_names=[names[k] for k in range(1, n + 1)],
        strict=strict,
        source={"name": "Stanford Online Products", "split": "Ebay_train.txt / Ebay_test.txt"},
    )

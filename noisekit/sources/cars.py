"""CARS196 (Stanford Cars) from ``cars_annos.mat`` + ``car_ims/``.

DML split: classes 1-98 train (8,054 images), 99-196 test (8,131). The .mat's own train/test flag is the
classification split and is ignored here, as in every DML paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from noisekit.errors import NoisekitError
from noisekit.sources.common import BuildResult, assemble, require_dir, require_file

N_CLASSES = 196
N_TRAIN_CLASSES = 98
ANNOS = "cars_annos.mat"


def _text(value: object) -> str:
    return str(np.asarray(value).ravel()[0]) if np.asarray(value).size else ""


def read_annotations(path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(relative_im_path, class 1-196) per image, and the 196 class names."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=False)
    except Exception as exc:  # scipy raises several unrelated types for a damaged file
        raise NoisekitError(f"{path}: not a readable MATLAB file ({exc})") from None
    for key in ("annotations", "class_names"):
        if key not in mat:
            raise NoisekitError(f"{path}: has no {key!r} variable")
    annos = mat["annotations"].ravel()
    for key in ("relative_im_path", "class"):
        if key not in (annos.dtype.names or ()):
            raise NoisekitError(f"{path}: annotations have no field {key!r}")
    names = [_text(n) for n in mat["class_names"].ravel()]
    if len(names) != N_CLASSES:
        raise NoisekitError(f"{path}: expected {N_CLASSES} class names, found {len(names)}")
    rows = []
    for index, anno in enumerate(annos, start=1):
        rel, cls = _text(anno["relative_im_path"]), int(np.asarray(anno["class"]).ravel()[0])
        if not rel or not 1 <= cls <= N_CLASSES:
            raise NoisekitError(f"{path}: annotation {index}: expected a path and a class in 1-{N_CLASSES}")
        rows.append((rel, cls))
    return rows, names


def build(root: Path, *, strict: bool = False) -> BuildResult:
    require_dir(root, what="cars root")
    annos, names = read_annotations(require_file(root / ANNOS, dataset="cars"))
    rows = [(rel.rsplit(".", 1)[0], rel, "train" if cls <= N_TRAIN_CLASSES else "test", cls - 1) for rel, cls in annos]
    return assemble(
        dataset="cars",
        root=root,
        rows=rows,
        class_names=names,
        strict=strict,
        source={"name": "CARS196", "split": "classes 1-98 train, 99-196 test"},
    )

"""CARS196 (Stanford Cars) from either of its two raw layouts.

1. The official archive: ``cars_annos.mat`` (``relative_im_path``, ``class`` 1-196, ``class_names``) + ``car_ims/``.
   image_id = ``car_ims/000123``, path = ``car_ims/000123.jpg``.
2. Class folders, as the PRISM authors' lists use them (``cars196/images/AM General Hummer SUV 2000/00887.jpg``):
   ``images/`` holds exactly 196 folders named after the classes. Used when ``cars_annos.mat`` is absent. Class k
   is the k-th folder name in plain ``sorted()`` order, which is the official class order 1-196 (class 1 is
   "AM General Hummer SUV 2000", class 99 "FIAT 500 Abarth 2012"). image_id = the path without its extension,
   path = ``images/<class>/<file>``.

DML split: classes 1-98 train (8,054 images), 99-196 test (8,131). The .mat's own train/test flag is the
classification split and is ignored here, as in every DML paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from noisekit.errors import NoisekitError
from noisekit.sources.common import BuildResult, assemble, require_dir

N_CLASSES = 196
N_TRAIN_CLASSES = 98
ANNOS = "cars_annos.mat"
IMAGES = "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


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


def read_class_folders(images: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """(path relative to the root, class 1-196) per image of ``images/<class>/<file>``, and the 196 class names."""
    names = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) != N_CLASSES:
        raise NoisekitError(f"cars: {images} holds {len(names)} class folder(s); expected {N_CLASSES}")
    rows = []
    for cls, name in enumerate(names, start=1):
        files = sorted(
            p.name
            for p in (images / name).iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )
        rows.extend((f"{IMAGES}/{name}/{file}", cls) for file in files)
    return rows, names


def read_layout(root: Path) -> tuple[list[tuple[str, int]], list[str], str]:
    """The images, class names and layout name of whichever raw layout ``root`` holds."""
    if (root / ANNOS).is_file():
        return (*read_annotations(root / ANNOS), ANNOS)
    if (root / IMAGES).is_dir():
        return (*read_class_folders(root / IMAGES), "class folders")
    raise NoisekitError(f"cars: {root} has neither {ANNOS} nor an {IMAGES}/ folder of {N_CLASSES} class folders")


def build(root: Path, *, strict: bool = False) -> BuildResult:
    require_dir(root, what="cars root")
    annos, names, layout = read_layout(root)
    rows = [(rel.rsplit(".", 1)[0], rel, "train" if cls <= N_TRAIN_CLASSES else "test", cls - 1) for rel, cls in annos]
    return assemble(
        dataset="cars",
        root=root,
        rows=rows,
        class_names=names,
        strict=strict,
        source={"name": "CARS196", "split": "classes 1-98 train, 99-196 test", "layout": layout},
    )

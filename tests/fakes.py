"""Tiny fake raw datasets that reproduce each real layout exactly (file names, headers, column formats), with
real (tiny) JPEG files, so the builders run on what the real archives look like."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def jpeg_bytes(seed: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(seed))


def cars_class_names() -> list[str]:
    return [f"Make{k:03d} Model {2000 + k % 13}" for k in range(1, 197)]


def fake_cars(root: Path, per_class: int = 2) -> list[tuple[str, int]]:
    """``cars_annos.mat`` + ``car_ims/NNNNNN.jpg`` for 196 classes; returns (relative path, class 1-196)."""
    items = [(f"car_ims/{i + 1:06d}.jpg", 1 + i // per_class) for i in range(196 * per_class)]
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annos = np.zeros((1, len(items)), dtype=[(f, "O") for f in fields])
    for i, (rel, cls) in enumerate(items):
        annos[0, i] = (
            rel,
            np.uint8(1),
            np.uint8(2),
            np.uint8(30),
            np.uint8(20),
            np.uint8(cls),
            np.uint8(i % 2),
        )
        write_jpeg(root / rel, i)
    names = np.empty((1, 196), dtype=object)
    names[0, :] = cars_class_names()
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annos, "class_names": names})
    return items


def fake_cub(root: Path, sizes: list[int] | None = None) -> list[tuple[str, int]]:
    """``CUB_200_2011`` layout for 200 classes with ``sizes[k]`` images each (default 2); returns (path, class)."""
    sizes = sizes or [2] * 200
    root.mkdir(parents=True, exist_ok=True)
    classes = [f"{k:03d}.Bird_{k}" for k in range(1, 201)]
    (root / "classes.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate(classes, 1)))
    items, images, labels = [], [], []
    for k, (cls, n) in enumerate(zip(classes, sizes, strict=True), 1):
        for j in range(n):
            rel = f"{cls}/{cls.split('.')[1]}_{j:04d}_{k}.jpg"
            items.append((rel, k))
    for i, (rel, k) in enumerate(items, 1):
        images.append(f"{i} {rel}\n")
        labels.append(f"{i} {k}\n")
        write_jpeg(root / "images" / rel, i)
    (root / "images.txt").write_text("".join(images))
    (root / "image_class_labels.txt").write_text("".join(labels))
    return items


SOP_SUPER = [
    "bicycle",
    "cabinet",
    "chair",
    "coffee_maker",
    "fan",
    "kettle",
    "lamp",
    "mug",
    "sofa",
    "stapler",
    "table",
    "toaster",
]


def fake_sop(root: Path, train_classes: int = 6, test_classes: int = 5, per_class: int = 2) -> dict[str, int]:
    """``Ebay_train.txt`` / ``Ebay_test.txt`` with their header and ``<super>_final/<id>_<n>.JPG`` images."""
    root.mkdir(parents=True, exist_ok=True)
    cls = 0
    counts = {}
    for split, n_classes in (("train", train_classes), ("test", test_classes)):
        lines = ["image_id class_id super_class_id path\n"]
        image_id = 0
        for _ in range(n_classes):
            cls += 1
            sup = (cls - 1) % len(SOP_SUPER)
            for j in range(per_class):
                image_id += 1
                rel = f"{SOP_SUPER[sup]}_final/{100000 + cls}_{j}.JPG"
                lines.append(f"{image_id} {cls} {sup + 1} {rel}\n")
                write_jpeg(root / rel, cls * 10 + j)
        (root / f"Ebay_{split}.txt").write_text("".join(lines))
        counts[split] = image_id
    return counts


FOOD_CLASSES = sorted(f"dish_{k:03d}" for k in range(101))


def fake_food101n(root: Path, f101: Path, per_class: int = 3) -> dict[str, object]:
    """``Food-101N_release`` (meta/classes.txt, imagelist.tsv, verified_{train,val}.tsv, images/) and
    ``food-101`` (meta/classes.txt, train.txt, test.txt, images/), per_class images of every class in each."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (f101 / "meta").mkdir(parents=True, exist_ok=True)
    # Food-101N lists its classes in a header-first file, in an order that is not alphabetical.
    (root / "meta" / "classes.txt").write_text("class_name\n" + "".join(f"{c}\n" for c in reversed(FOOD_CLASSES)))
    (f101 / "meta" / "classes.txt").write_text("".join(f"{c}\n" for c in FOOD_CLASSES))
    keys = [f"{c}/{k:032x}.jpg" for c in FOOD_CLASSES for k in range(per_class)]
    (root / "meta" / "imagelist.tsv").write_text("class_name/key\n" + "".join(f"{k}\n" for k in keys))
    for i, key in enumerate(keys):
        write_jpeg(root / "images" / key, i)
    # Verify the first image of each class as noisy, the second as clean; the rest stay unverified.
    head = "class_name/key\tverification_label\n"
    first = [f"{c}/{0:032x}.jpg\t0\n" for c in FOOD_CLASSES]
    second = [f"{c}/{1:032x}.jpg\t1\n" for c in FOOD_CLASSES]
    (root / "meta" / "verified_train.tsv").write_text(head + "".join(first))
    (root / "meta" / "verified_val.tsv").write_text(head + "".join(second))
    train_lines, test_lines = [], []
    for c in FOOD_CLASSES:
        for k in range(per_class):
            (train_lines if k % 2 == 0 else test_lines).append(f"{c}/{1000 + k}\n")
            write_jpeg(f101 / "images" / c / f"{1000 + k}.jpg", k)
    (f101 / "meta" / "train.txt").write_text("".join(train_lines))
    (f101 / "meta" / "test.txt").write_text("".join(test_lines))
    return {"keys": keys}


PRISM_LISTS = Path(__file__).parent / "data" / "prism-official"


def prism_cars_images() -> list[tuple[str, int]]:
    """(``<class name>/<file>``, authors' class 1-196) of every CARS196 image in the PRISM authors' standard split
    (``CARS_train.csv`` + ``CARS_test.csv``, paths like ``/data/cars196/images/<class name>/<file>.jpg``)."""
    items = []
    for name in ("CARS_train.csv", "CARS_test.csv"):
        for line in (PRISM_LISTS / name).read_text().splitlines():
            path, label = line.rsplit(",", 1)
            items.append(("/".join(path.split("/")[-2:]), int(label)))
    return items


def prism_cars_classes() -> list[str]:
    """The 196 CARS196 class names in the authors' class order (their label k names class k)."""
    names = {k: rel.split("/")[0] for rel, k in prism_cars_images()}
    return [names[k] for k in range(1, 197)]


def fake_cars_folders(root: Path, files: list[str]) -> None:
    """CARS196's class-folder layout, ``root/images/<class name>/<file>`` for each ``<class name>/<file>``. Every
    file holds the same tiny JPEG: the full tree has 16,185 images, and distinct pixels would test nothing more."""
    data = jpeg_bytes(0)
    for folder in {rel.rsplit("/", 1)[0] for rel in files}:
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    for rel in files:
        (root / "images" / rel).write_bytes(data)

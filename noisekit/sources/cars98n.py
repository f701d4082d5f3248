"""CARS-98N: the PRISM authors' web-crawled images of CARS196's 98 training classes, tested on CARS196's test split.

Inputs: ``--crawl DIR``, the folder that ``noisekit crawl CARS_98N_list.csv --out DIR`` wrote (its record
``crawl.parquet`` and ``images/``), and ``--cars-root``, CARS196 in either raw layout (:mod:`noisekit.sources.cars`).

Training split: the crawl's ok rows. The list's labels 0-97 are CARS196 classes 1-98 in the official order, so label
k is named by ``class_names[k]`` of the CARS manifest. The truth is unknown: ``clean_label`` -1, ``is_noisy`` null.
``image_id`` is ``cars98n/<row>`` (the row of the list, 0-based), ``path`` the crawl's ``images/<h[:2]>/<h>.<ext>``
under --crawl; the crawl's url, sha256, status, error, width and height ride along as extra columns.
Test split: CARS196's test split (classes 99-196, labels 98-195); ids and paths prefixed ``cars196/``, which the
manifest's ``roots`` resolve under --cars-root.

Left out, each counted in the build notes and in ``clean.leakage.json`` beside the manifest:

1. Rows that did not download (any status but ok), by status.
2. The same bytes (SHA-256) under the same label more than once: the first row in list order is kept.
3. The same bytes under different labels (the list names 769 URLs under two or more labels, and distinct URLs can
   serve one file): every row of that image is dropped as ambiguous. The list then says one photograph shows two
   car models; at most one is right and nothing in the data says which. Keeping the first occurrence is not
   neutral: the list is sorted by label, so "first" always means the lower class index, a systematic bias that
   real web noise does not have. Dropping leaves the remaining noise as the web made it, at the cost of the
   conflicting images (about 9% of the distinct URLs), which the report lists.
4. Leakage: a crawled image that is a near-duplicate of any CARS196 test image is excluded and listed with its
   closest test image. The check is a 64-bit perceptual hash (pHash, :mod:`noisekit.crawl.phash`) at Hamming distance
   at most :data:`LEAKAGE_MAX_DISTANCE`, not a CNN embedding: the question is "is this the same photograph,
   resized, re-encoded, recoloured or slightly cropped" (how web re-posts of CARS196's own web images look), not
   "is this a similar car", which an embedding answers and which would also remove honest images of the same model
   (and every crawled image is of a car). pHash needs no weights (works offline), is exact and deterministic. It
   does not catch mirrored or heavily cropped copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from noisekit.crawl.fetch import OK
from noisekit.crawl.phash import hash_files, nearest
from noisekit.crawl.record import RECORD, load_record
from noisekit.errors import NoisekitError
from noisekit.sources import cars
from noisekit.sources.common import BuildResult, assemble, require_dir

# Hamming distance (of 64 bits) up to which a crawled image counts as a copy of a test image. Measured on real
# photographs: a thumbnail or re-encode moves 0-2 bits, a 3% crop or +-15% brightness up to 6, a caption 2; unrelated
# pictures differ in about 32. An 8% crop or an added border (12-16) and a mirror image (~33) are not caught.
LEAKAGE_MAX_DISTANCE = 10
N_CLASSES = 98
CARS_PREFIX = "cars196"  # test paths start with this and resolve under --cars-root
EXTRA = ("url", "sha256", "status", "error", "width", "height")
HASH = f"pHash 64-bit (imagehash-compatible), Hamming distance <= {LEAKAGE_MAX_DISTANCE}"


def _crawl_rows(crawl: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The crawl's record (and its metadata), checked: every row finished, labels 0-97."""
    record = load_record(crawl)
    frame = record.frame()
    where = crawl / RECORD
    pending = frame["status"].isna()
    if pending.any():
        raise NoisekitError(
            f"{where}: {int(pending.sum()):,} of {len(frame):,} rows are not crawled yet (first: row "
            f"{int(frame['row'][pending].iloc[0])}); finish with `noisekit crawl LIST --out {crawl} --resume`"
        )
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = labels.isna() | (labels < 0) | (labels >= N_CLASSES) | (labels != labels.round())
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = frame["label"].iloc[i]
        shown = repr(value) if isinstance(value, str) else str(value)
        raise NoisekitError(f"{where}: row {i}: label {shown} is not a CARS-98N class 0-{N_CLASSES - 1}")
    frame["label"] = labels.astype(np.int64)
    return frame, record.meta


def _deduplicate(ok: pd.DataFrame) -> tuple[pd.DataFrame, int, list[dict[str, Any]]]:
    """One row per image: same bytes + same label -> the first row; same bytes + several labels -> none."""
    labels = ok.groupby("sha256")["label"].nunique()
    conflicting = set(labels.index[labels > 1])
    conflicts = [
        {"sha256": sha, "labels": sorted(set(group["label"].tolist())), "rows": group["row"].tolist()}
        for sha, group in ok[ok["sha256"].isin(conflicting)].groupby("sha256", sort=True)
    ]
    single = ok[~ok["sha256"].isin(conflicting)]
    kept = single.drop_duplicates("sha256", keep="first")
    return kept, len(single) - len(kept), conflicts


def _leakage(train: pd.DataFrame, crawl: Path, test: pd.DataFrame, cars_manifest: Any) -> list[dict[str, Any]]:
    """The training rows whose pHash is within LEAKAGE_MAX_DISTANCE of some test image, with that image."""
    ours = hash_files([crawl / p for p in train["path"]], desc="pHash crawled images")
    theirs = hash_files([cars_manifest.resolve(p) for p in test["path"]], desc="pHash CARS196 test images")
    index, distance = nearest(ours, theirs)
    leaks = []
    for i in np.flatnonzero(distance <= LEAKAGE_MAX_DISTANCE):
        row, match = train.iloc[i], test.iloc[index[i]]
        leaks.append(
            {
                "row": int(row["row"]),
                "url": row["url"],
                "label": int(row["label"]),
                "path": row["path"],
                "sha256": row["sha256"],
                "phash": f"{int(ours[i]):016x}",
                "test_image_id": f"{CARS_PREFIX}/{match['image_id']}",
                "test_phash": f"{int(theirs[index[i]]):016x}",
                "distance": int(distance[i]),
            }
        )
    return leaks


def build(*, crawl: Path | None, cars_root: Path | None, strict: bool = False) -> BuildResult:
    if crawl is None:
        raise NoisekitError("cars98n: --crawl is required (the folder `noisekit crawl CARS_98N_list.csv --out` wrote)")
    if cars_root is None:
        raise NoisekitError("cars98n: --cars-root is required (CARS196, whose test split CARS-98N is tested on)")
    require_dir(crawl, what="--crawl")
    require_dir(cars_root, what="--cars-root")
    cars_root = cars_root / "cars196" if (cars_root / "cars196").is_dir() else cars_root
    frame, crawl_meta = _crawl_rows(crawl)
    cars_manifest = cars.build(cars_root, strict=strict).manifest
    test = cars_manifest.split("test")

    ok = frame[frame["status"] == OK]
    failed = frame.loc[frame["status"] != OK, "status"].value_counts().sort_index()
    kept, duplicates, conflicts = _deduplicate(ok)
    present = np.array([(crawl / p).is_file() for p in kept["path"]], dtype=bool)
    missing = [str(crawl / p) for p in kept["path"][~present]]
    if missing and strict:
        raise NoisekitError(f"cars98n: {len(missing)} crawled image(s) are absent, first {missing[0]} (--strict)")
    kept = kept[present]
    leaks = _leakage(kept, crawl, test, cars_manifest)
    train = kept[~kept["row"].isin({leak["row"] for leak in leaks})]
    if train.empty:
        raise NoisekitError(f"cars98n: {crawl / RECORD} leaves no training image (ok rows: {len(ok)})")

    ids = [f"cars98n/{row:05d}" for row in train["row"]]
    rows = [(i, p, "train", -1) for i, p in zip(ids, train["path"], strict=True)]
    rows += [
        (f"{CARS_PREFIX}/{i}", f"{CARS_PREFIX}/{p}", "test", int(c))
        for i, p, c in test[["image_id", "path", "clean_label"]].itertuples(index=False)
    ]
    figures = {
        "crawl_rows": len(frame),
        "ok_rows": len(ok),
        "failed_rows": {str(k): int(v) for k, v in failed.items()},
        "duplicate_rows_dropped": duplicates,
        "conflicting_images_dropped": len(conflicts),
        "conflicting_rows_dropped": sum(len(c["rows"]) for c in conflicts),
        "missing_files": len(missing),
        "leaked_images_excluded": len(leaks),
        "train_images": len(train),
        "test_images": len(test),
    }
    result = assemble(
        dataset="cars98n",
        root=crawl,
        rows=rows,
        class_names=cars_manifest.meta.class_names,
        strict=strict,
        roots={CARS_PREFIX: str(cars_root)},
        source={
            "name": "CARS-98N (PRISM authors' crawl) + CARS196 test split",
            "split": "crawled images of classes 1-98 train, CARS196 classes 99-196 test",
            "crawl": crawl_meta,
            "cars_layout": cars_manifest.meta.source.get("layout"),
            "duplicates": "same bytes and label: first row kept; same bytes, several labels: all rows dropped",
            "leakage": HASH,
            "figures": figures,
        },
        label=train["label"].tolist() + test["clean_label"].tolist(),
        is_noisy=[None] * len(train) + [False] * len(test),
    )
    extra = train.assign(image_id=ids).set_index("image_id")[list(EXTRA)]
    extra = extra.astype({c: "string" for c in ("url", "sha256", "status", "error")})
    result.manifest.frame = result.manifest.frame.join(extra, on="image_id")
    result.missing = missing + result.missing
    result.notes = _notes(figures)
    result.reports["leakage"] = {
        "dataset": "cars98n",
        "figures": figures,
        "leakage": {"hash": HASH, "max_distance": LEAKAGE_MAX_DISTANCE, "excluded": leaks},
        "conflicting_labels": {"policy": "all rows of the image dropped", "images": conflicts},
    }
    return result


def _notes(f: dict[str, Any]) -> list[str]:
    failed = sum(f["failed_rows"].values())
    kinds = ", ".join(f"{k} {n:,}" for k, n in f["failed_rows"].items())
    conflicts = f"{f['conflicting_images_dropped']:,} image(s) ({f['conflicting_rows_dropped']:,} rows)"
    return [
        f"cars98n: {f['crawl_rows']:,} crawl rows: {f['ok_rows']:,} ok, {failed:,} failed"
        + (f" ({kinds})" if kinds else ""),
        f"cars98n: {f['duplicate_rows_dropped']:,} duplicate row(s) (same bytes, same label) kept once; "
        f"{conflicts} under several labels dropped as ambiguous",
        f"cars98n: {f['leaked_images_excluded']:,} near-duplicate(s) of CARS196 test images excluded ({HASH}); "
        "listed in clean.leakage.json beside the manifest",
    ]

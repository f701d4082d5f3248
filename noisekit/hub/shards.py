"""Parquet shards of one published configuration: the Hugging Face schema, shards of bounded size, row groups small
enough to stream. Rows keep the manifest's order; an image is stored as its original bytes with its manifest path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from noisekit.errors import NoisekitError
from noisekit.hub.published import META_KEY, ConfigRecord, features, shard_name
from noisekit.progress import progress

IMAGE_ROW_GROUP = 100  # rows per Parquet row group of image shards: small reads when streaming


def read_image(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NoisekitError(f"{path}: cannot read image ({exc.strerror or exc})") from None


def shard_bounds(sizes: list[int], limit: int) -> list[int]:
    """Shard boundaries: contiguous runs of rows of at most ``limit`` bytes (a larger single row stands alone)."""
    bounds, total = [0], 0
    for i, size in enumerate(sizes):
        if total and total + size > limit:
            bounds.append(i)
            total = 0
        total += size
    return bounds + [len(sizes)]


def _table(rows: pd.DataFrame, file: Callable[[str], Path], schema: pa.Schema, *, labels_only: bool) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    if labels_only:
        columns["image_id"] = pa.array(rows["image_id"].tolist(), pa.string())
        columns["path"] = pa.array(rows["path"].tolist(), pa.string())
    else:
        images = [{"bytes": read_image(file(p)), "path": p} for p in rows["path"]]
        columns["image"] = pa.array(images, schema.field("image").type)
        columns["image_id"] = pa.array(rows["image_id"].tolist(), pa.string())
    columns["label"] = pa.array(rows["label"].to_numpy(), pa.int64())
    columns["clean_label"] = pa.array(rows["clean_label"].to_numpy(), pa.int64())
    columns["is_noisy"] = pa.array([None if v is pd.NA else bool(v) for v in rows["is_noisy"]], pa.bool_())
    return pa.Table.from_pydict(columns, schema=schema)


def write_config(
    record: ConfigRecord,
    parts: list[tuple[str, pd.DataFrame]],
    file: Callable[[str], Path],
    stage: Path,
    max_shard_size: int,
) -> None:
    """Write ``record``'s splits (``parts``: HF split name, manifest rows) as shards under ``stage/NAME/``;
    ``file`` maps a manifest path to the image file."""
    feats = features(record.label_names, record.class_names, labels_only=record.labels_only)
    (stage / record.name).mkdir(parents=True)
    for split, rows in parts:
        if record.labels_only:
            sizes = [len(i) + len(p) + 32 for i, p in zip(rows["image_id"], rows["path"], strict=True)]
        else:
            sizes = [file(p).stat().st_size + 32 for p in rows["path"]]
        bounds = shard_bounds(sizes, max_shard_size)
        count = len(bounds) - 1
        schema = feats.arrow_schema
        schema = schema.with_metadata(schema.metadata | {META_KEY: json.dumps(record.shard_meta(split)).encode()})
        with progress(total=len(rows), desc=f"{record.name}/{split}", unit="img", leave=False, disable=None) as bar:
            for i in range(count):
                chunk = rows.iloc[bounds[i] : bounds[i + 1]]
                table = _table(chunk, file, schema, labels_only=record.labels_only)
                group = None if record.labels_only else IMAGE_ROW_GROUP
                pq.write_table(table, stage / record.name / shard_name(split, i, count), row_group_size=group)
                bar.update(len(chunk))

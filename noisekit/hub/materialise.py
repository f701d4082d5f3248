"""A published configuration turned back into a Manifest that prism trains on.

Published with images: each image's original bytes are written once under
``$NOISEKIT_HOME/hub/<slug>/<config>/images/`` with the manifest beside them, reused while the published data is
unchanged (and offline, for a Hub reference). Published ``--labels-only``: the rows name files relative to the
source's raw folder and are joined with the user's local copy of it (``root``); nothing is written.

Nothing read is trusted: every row's ``path`` or ``image_id`` is checked (the manifest rule, :func:`escapes`) before
any image is opened or written, and a refusal names the shard and row.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from noisekit.errors import NoisekitError
from noisekit.hub.published import SPLIT_NAMES, read_folder
from noisekit.hub.reach import datasets_offline, offline_error, offline_reason
from noisekit.hub.refs import Ref, parse
from noisekit.hub.repo import config_names, load_config, pick
from noisekit.manifest import (
    INSIDE,
    Manifest,
    ManifestMeta,
    check_inside,
    escapes,
    make_frame,
    read_manifest,
    temp_beside,
    validate,
    write_manifest,
)
from noisekit.paths import data_home

if TYPE_CHECKING:
    import datasets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
RULES = {
    "path": INSIDE.replace("the dataset root", "--root"),
    "image_id": "would be written outside the folder it is materialised in (an id is a relative path without '..')",
}


def _slug(ref: Ref) -> str:
    if ref.local:
        digest = hashlib.sha256(str(ref.folder.resolve()).encode()).hexdigest()[:10]
        return f"local--{ref.folder.name}-{digest}"
    return ref.source.replace("/", "--")


def _refuse(where: str, column: str, values: Iterable[Any]) -> None:
    """Refuse the first value of ``column`` (``path`` or ``image_id``) that may lead out of its folder."""
    for row, value in enumerate(values):
        if not isinstance(value, str) or escapes(value):
            raise NoisekitError(f"{where} row {row}: {column} {value!r} {RULES[column]}")


def _check_shards(ref: Ref, config: str) -> bool:
    """Check a local configuration's rows in its shards, reading the one column (before datasets reads them, so that
    a refusal names the shard); return whether it was published --labels-only."""
    folder = read_folder(ref.folder)
    record = folder.configs[config]
    column = "path" if record.labels_only else "image_id"
    for split in folder.resolved(record).values():
        for rel in split.files:
            _refuse(
                str(ref.folder / rel), column, pq.read_table(ref.folder / rel, columns=[column])[column].to_pylist()
            )
    return record.labels_only


def _check_rows(ref: Ref, config: str, data: datasets.DatasetDict, column: str) -> None:
    """The same check on the rows ``datasets`` loaded (all a Hub reference has), reading the one column: no image is
    decoded."""
    for split, part in data.items():
        if split not in SPLIT_NAMES.values():
            raise NoisekitError(f"{ref.spell(config)}: split {split!r} is not one of {', '.join(SPLIT_NAMES.values())}")
        _refuse(f"{ref.spell(config)} {split}", column, part[column])


def _columns(data: datasets.DatasetDict) -> dict[str, list[Any]]:
    """The manifest columns of every row but ``path``, splits in the order ``data`` lists them."""
    back = {hf: ours for ours, hf in SPLIT_NAMES.items()}
    out: dict[str, list[Any]] = {k: [] for k in ("image_id", "split", "clean_label", "label", "is_noisy")}
    for name, part in data.items():
        for key in ("image_id", "clean_label", "label", "is_noisy"):
            out[key] += list(part[key])
        out["split"] += [back[name]] * len(part)
    return out


def _meta(ref: Ref, config: str, data: datasets.DatasetDict, root: Path, fingerprint: str) -> ManifestMeta:
    features = next(iter(data.values())).features
    record = read_folder(ref.folder).configs.get(config) if ref.local else None
    labels, classes = features["label"].names, features["clean_label"].names
    return ManifestMeta(
        dataset=record.dataset if record else _slug(ref),
        root=str(root),
        class_names=tuple(classes),
        label_names=None if labels == classes else tuple(labels),
        variant=config,
        noise=record.meta.get("noise") if record else None,
        source={
            "published": ref.folder.name if ref.local else ref.source,
            "config": config,
            "fingerprint": fingerprint,
        },
    )


def _file_name(image_id: str, path: str | None, data: bytes) -> str:
    """``<image_id><ext>`` when the id is a plain relative path, else a hash of the id; the extension is the original
    file's, or the decoded format's."""
    suffix = PurePosixPath(path or "").suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            suffix = "." + (image.format or "png").lower()
    plain = all(p not in ("", ".") for p in image_id.split("/"))
    if not plain or not all(c.isalnum() or c in "-_./" for c in image_id):
        image_id = hashlib.sha256(image_id.encode()).hexdigest()[:24]
    return image_id + suffix


def _write_images(data: datasets.DatasetDict, folder: Path, *, where: str) -> list[str]:
    """Write every image's original bytes under ``folder``; return each row's path there."""
    from datasets import Image

    paths = []
    for part in data.values():
        for batch in part.cast_column("image", Image(decode=False)).iter(batch_size=256):
            for image, image_id in zip(batch["image"], batch["image_id"], strict=True):
                if not image or image.get("bytes") is None:
                    raise NoisekitError(f"{where}: image {image_id!r} has no bytes")
                rel = _file_name(image_id, image.get("path"), image["bytes"])
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(image["bytes"])
                paths.append(rel)
    return paths


def _with_images(ref: Ref, config: str, data: datasets.DatasetDict) -> Manifest:
    folder = data_home() / "hub" / _slug(ref) / config
    fingerprint = hashlib.sha256("|".join(f"{s}:{d._fingerprint}" for s, d in data.items()).encode()).hexdigest()
    cached = folder / "manifest.parquet"
    if cached.is_file():
        try:
            manifest = read_manifest(cached)
        except NoisekitError:
            manifest = None  # a damaged copy is written again
        if manifest and manifest.meta.source.get("fingerprint") == fingerprint and Path(manifest.meta.root).is_dir():
            return manifest
    _check_rows(ref, config, data, "image_id")
    folder.mkdir(parents=True, exist_ok=True)
    staging = temp_beside(folder / "images", directory=True)
    images = folder / "images"
    try:
        columns = _columns(data)
        paths = _write_images(data, staging, where=ref.spell(config))
        manifest = Manifest(make_frame(**columns, path=paths), _meta(ref, config, data, images, fingerprint))
        validate(manifest, where=ref.spell(config))  # before the copy kept from an earlier run is replaced
        if images.exists():
            shutil.rmtree(images)
        os.replace(staging, images)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_manifest(manifest, cached)
    return manifest


def _check_root(ref: Ref, config: str, root: Path | None, *, labels_only: bool) -> None:
    """--root is given exactly when the data was published --labels-only, and is a folder."""
    spelled = ref.spell(config)
    if labels_only and root is None:
        raise NoisekitError(
            f"{spelled} was published --labels-only (its rows name image files, not images); give --root RAW, "
            "the local folder those paths are relative to (the source's raw folder)"
        )
    if not labels_only and root is not None:
        raise NoisekitError(f"--root {root}: {spelled} holds its images; --root is for data published --labels-only")
    if root is not None and not root.is_dir():
        raise NoisekitError(f"--root {root} is not a folder (expected the local copy of {spelled}'s images)")


def _labels_only(ref: Ref, config: str, data: datasets.DatasetDict, root: Path) -> Manifest:
    spelled = ref.spell(config)
    _check_rows(ref, config, data, "path")
    paths = [p for part in data.values() for p in part["path"]]
    manifest = Manifest(make_frame(**_columns(data), path=paths), _meta(ref, config, data, root.absolute(), ""))
    validate(manifest, where=spelled)
    missing = [p for p in paths if not manifest.resolve(p).is_file()]
    if missing:
        raise NoisekitError(
            f"--root {root}: {len(missing):,} of {len(paths):,} image(s) of {spelled} are not there "
            f"(first: {missing[0]})"
        )
    check_inside(manifest, where=f"--root {root}")
    return manifest


def _kept(ref: Ref) -> Manifest | None:
    """The manifest materialised from ``ref`` by an earlier run, if there is exactly one that fits."""
    base = data_home() / "hub" / _slug(ref)
    names = [ref.config] if ref.config else sorted(p.parent.name for p in base.glob("*/manifest.parquet"))
    if len(names) != 1 or not (base / names[0] / "manifest.parquet").is_file():
        return None
    return read_manifest(base / names[0] / "manifest.parquet")


def materialise(ref: Ref, *, root: Path | None = None) -> Manifest:
    """The Manifest of a published configuration (see the module's text); ``root``: the local copy of the images of
    data published ``--labels-only``."""
    if not ref.local:
        reason = offline_reason()
        kept = _kept(ref) if reason and root is None else None
        if kept is not None:
            return kept  # offline: the copy an earlier run made
        if reason and not datasets_offline():
            raise offline_error(ref, reason)
    config = pick(ref, config_names(ref))
    if ref.local:
        _check_root(ref, config, root, labels_only=_check_shards(ref, config))
    data = load_config(ref, config)
    labels_only = "image" not in next(iter(data.values())).features
    _check_root(ref, config, root, labels_only=labels_only)
    return _labels_only(ref, config, data, root) if labels_only and root else _with_images(ref, config, data)


def published_manifest(ref: str, *, root: str | None = None) -> Manifest | None:
    """The Manifest of a published reference (:mod:`noisekit.hub.refs`), or ``None`` when ``ref`` is not one."""
    parsed = parse(ref)
    if parsed is None:
        if root is not None:
            raise NoisekitError(
                f"--root {root}: {ref} is no published data (--root joins data published --labels-only)"
            )
        return None
    return materialise(parsed, root=None if root is None else Path(root).expanduser())

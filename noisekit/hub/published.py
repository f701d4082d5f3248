"""What a published folder holds, and reading it back: the layout that ``publish`` writes and ``load`` reads.

```
DIR/README.md                                     dataset card: YAML (configs, dataset_info, licence) + text
DIR/CONFIG/train-00000-of-00002.parquet           one folder per configuration (= noise variant)
DIR/CONFIG/validation-00000-of-00001.parquet      only when the manifest has a user-carved val split
DIR/shared/test-00000-of-00001.parquet            the clean test split, shared by every configuration whose
                                                  label space is the clean one
DIR/CONFIG/test-00000-of-00001.parquet            a configuration's own test split, when its labels are re-indexed
```
Every shard carries the Hugging Face features in its Arrow schema metadata (``huggingface``) and a JSON record of
its configuration (``noisekit``): the manifest metadata without local paths, the content hash, the per-split counts.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from noisekit.errors import NoisekitError

if TYPE_CHECKING:
    import datasets

SHARED = "shared"
FORMAT = 1
META_KEY = b"noisekit"
# manifest split -> Hugging Face split name, in the order they appear in a card
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
SHARD = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


@dataclass(frozen=True)
class SplitFiles:
    """The shards of one split: paths relative to the folder, rows, and bytes (Parquet on disk, Arrow in memory)."""

    split: str
    files: tuple[str, ...]
    rows: int
    download_bytes: int = 0
    arrow_bytes: int = 0


@dataclass(frozen=True)
class ConfigRecord:
    """One configuration of a published folder, as its shards describe it."""

    name: str
    meta: dict[str, Any]  # ManifestMeta fields without local paths (see public_meta)
    labels_only: bool
    content_sha256: str
    shared_test: bool
    stats: dict[str, dict[str, int]]  # manifest split -> rows, noisy, unknown, labels
    splits: dict[str, SplitFiles] = field(default_factory=dict)  # HF split name -> its files

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"] or self.meta["class_names"])

    def shard_meta(self, split: str) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "config": self.name,
            "split": split,
            "meta": self.meta,
            "labels_only": self.labels_only,
            "content_sha256": self.content_sha256,
            "shared_test": self.shared_test,
            "stats": self.stats,
        }


def features(label_names: list[str], class_names: list[str], *, labels_only: bool) -> datasets.Features:
    """The columns of every split: ``image`` (or ``path`` without images), ``image_id``, ``label``,
    ``clean_label`` (-1 = unknown, which ClassLabel reserves for a missing label), ``is_noisy`` (nullable)."""
    from datasets import ClassLabel, Features, Image, Value

    if labels_only:
        head = {"image_id": Value("string"), "path": Value("string")}
    else:
        head = {"image": Image(), "image_id": Value("string")}
    return Features(
        {
            **head,
            "label": ClassLabel(names=list(label_names)),
            "clean_label": ClassLabel(names=list(class_names)),
            "is_noisy": Value("bool"),
        }
    )


def _scrub(value: Any) -> Any:
    """Replace absolute paths of this machine by their last component, recursively."""
    if isinstance(value, str) and (os.path.isabs(value) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return Path(value).name
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def public_meta(meta_json: str) -> dict[str, Any]:
    """A manifest's metadata without ``root``/``roots`` (paths of this machine), safe to publish."""
    raw = json.loads(meta_json)
    keep = ("dataset", "variant", "class_names", "label_names", "noise", "source", "tool_version")
    return _scrub({k: raw.get(k) for k in keep})


def _read_shard_meta(path: Path) -> dict[str, Any] | None:
    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    except (OSError, ValueError) as exc:
        raise NoisekitError(f"{path}: not a readable Parquet shard ({exc})") from None
    return json.loads(raw) if raw else None


def _split_files(folder: Path, sub: str, split: str, names: list[str]) -> SplitFiles:
    numbers = sorted(int(SHARD.match(n).group(2)) for n in names)  # type: ignore[union-attr]
    count = int(SHARD.match(names[0]).group(3))  # type: ignore[union-attr]
    if numbers != list(range(count)):
        raise NoisekitError(f"{folder / sub}: the {split} shards are incomplete ({len(numbers)} of {count} present)")
    files = tuple(f"{sub}/{shard_name(split, i, count)}" for i in range(count))
    rows = arrow = size = 0
    for rel in files:
        info = pq.read_metadata(folder / rel)
        rows += info.num_rows
        arrow += sum(info.row_group(g).total_byte_size for g in range(info.num_row_groups))
        size += (folder / rel).stat().st_size
    return SplitFiles(split, files, rows, size, arrow)


def _read_record(folder: Path, sub: str) -> ConfigRecord | None:
    by_split: dict[str, list[str]] = {}
    for path in sorted((folder / sub).iterdir()):
        match = SHARD.match(path.name)
        if match:
            by_split.setdefault(match.group(1), []).append(path.name)
    if not by_split:
        return None
    first = sorted(next(iter(by_split.values())))[0]
    raw = _read_shard_meta(folder / sub / first)
    if raw is None:
        return None
    if raw.get("format") != FORMAT or raw.get("config") != sub:
        raise NoisekitError(
            f"{folder / sub / first}: shard of configuration {raw.get('config')!r}, format "
            f"{raw.get('format')}; expected configuration {sub!r}, format {FORMAT}"
        )
    splits = {s: _split_files(folder, sub, s, names) for s, names in by_split.items()}
    return ConfigRecord(
        name=sub,
        meta=raw["meta"],
        labels_only=bool(raw["labels_only"]),
        content_sha256=raw["content_sha256"],
        shared_test=bool(raw["shared_test"]),
        stats=raw["stats"],
        splits={s: splits[s] for s in SPLIT_NAMES.values() if s in splits},
    )


@dataclass(frozen=True)
class Folder:
    """The configurations of a published folder (empty when it does not exist yet) and its shared test split."""

    path: Path
    configs: dict[str, ConfigRecord]
    shared: ConfigRecord | None

    @property
    def labels_only(self) -> bool | None:
        records = list(self.configs.values()) + ([self.shared] if self.shared else [])
        return records[0].labels_only if records else None

    def resolved(self, record: ConfigRecord) -> dict[str, SplitFiles]:
        """A configuration's splits with the shared test split filled in."""
        splits = dict(record.splits)
        if record.shared_test and self.shared is not None:
            splits["test"] = self.shared.splits["test"]
        return {s: splits[s] for s in SPLIT_NAMES.values() if s in splits}


def read_folder(path: Path) -> Folder:
    """Read the records of every configuration under ``path``; folders without noisekit shards are ignored."""
    if not path.exists():
        return Folder(path, {}, None)
    if not path.is_dir():
        raise NoisekitError(f"--out {path} exists and is not a folder")
    configs: dict[str, ConfigRecord] = {}
    shared = None
    for sub in sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        record = _read_record(path, sub)
        if record is None:
            continue
        if sub == SHARED:
            shared = record
        else:
            configs[sub] = record
    missing = [c.name for c in configs.values() if c.shared_test and shared is None]
    if missing:
        raise NoisekitError(f"{path}: configuration {missing[0]} uses the shared test split, but {SHARED}/ is missing")
    return Folder(path, configs, shared)

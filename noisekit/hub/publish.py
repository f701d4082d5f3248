"""``noisekit publish``: a built dataset's variants -> a Hugging Face dataset repository folder.

One configuration per variant (layout in :mod:`noisekit.hub.published`), Parquet shards of at most ``max_shard_size``
bytes of images, and a README.md card rendered from every configuration present. Publishing is incremental: a
configuration already there with the same content (rows, labels, noise metadata and image bytes, hashed) is kept
as it is; with different content it is refused unless ``overwrite``. The new folder is assembled in a temporary
folder beside ``out`` (unchanged files hard-linked) and moved into place only when complete, so a failure leaves
the previous folder as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from noisekit.crawl.fetch import DEFAULT_MAX_PIXELS, Failure, inspect_image
from noisekit.errors import NoisekitError
from noisekit.hub import cards
from noisekit.hub.published import SHARED, SPLIT_NAMES, ConfigRecord, Folder, public_meta, read_folder
from noisekit.hub.shards import read_image, write_config
from noisekit.manifest import Manifest, read_manifest
from noisekit.paths import CLEAN, check_name, data_home
from noisekit.progress import progress

DEFAULT_MAX_SHARD_SIZE = 500 * 10**6  # as datasets' push_to_hub
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str) -> int:
    """``500MB``, ``2GB``, ``64MiB`` or a byte count -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) * _UNITS[unit] < 1:
        raise NoisekitError(f"--max-shard-size: expected a size like 500MB, 2GB or 64MiB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class PublishOptions:
    variants: tuple[str, ...] = ()  # empty: every variant of the dataset
    labels_only: bool = False
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE
    overwrite: bool = False
    repo_id: str | None = None  # named in the card's loading example


@dataclass(frozen=True)
class PublishResult:
    out: Path
    configs: tuple[str, ...]  # every configuration in the folder now
    written: tuple[str, ...]  # written or replaced by this call
    unchanged: tuple[str, ...]  # already there with the same content
    files: int
    bytes: int
    changed: bool


@dataclass
class _Plan:
    """What one configuration (or the shared test split) will hold."""

    record: ConfigRecord
    manifest: Manifest
    parts: list[tuple[str, pd.DataFrame]]  # (HF split, rows) stored in the configuration's own folder
    paths: dict[str, Path] = field(default_factory=dict)  # manifest path -> file, resolved once

    def file(self, rel: str) -> Path:
        if rel not in self.paths:
            self.paths[rel] = self.manifest.resolve(rel)
        return self.paths[rel]


def _variants(dataset: str, requested: tuple[str, ...]) -> dict[str, Manifest]:
    folder = data_home() / dataset
    if not folder.is_dir():
        raise NoisekitError(f"dataset {dataset!r} is not built (no {folder}); run `noisekit build {dataset}` first")
    have = sorted((p.stem for p in folder.glob("*.parquet")), key=lambda v: (v != CLEAN, v))
    names = list(dict.fromkeys(requested)) or have
    for name in names:
        check_name(name, what="--variant")
        if name not in have:
            raise NoisekitError(f"--variant {name!r}: {dataset} has no such variant (have: {', '.join(have)})")
        if name == SHARED:
            raise NoisekitError(f"--variant {SHARED!r}: the name is reserved for the shared test split's folder")
    return {name: read_manifest(folder / f"{name}.parquet") for name in names}


def _check_images(manifests: dict[str, Manifest]) -> None:
    seen: dict[Path, bool] = {}
    missing: list[Path] = []
    for manifest in manifests.values():
        for rel in manifest.frame["path"]:
            path = manifest.resolve(rel)
            if path not in seen:
                seen[path] = path.is_file()
                if not seen[path]:
                    missing.append(path)
    if missing:
        raise NoisekitError(
            f"{len(missing):,} image(s) missing on disk (first: {missing[0]}); restore them or publish --labels-only"
        )
    _check_decodes(list(seen))


def _decode_failure(path: Path) -> str | None:
    try:
        inspect_image(read_image(path), DEFAULT_MAX_PIXELS)
    except Failure as exc:
        return f"{path}: {exc.status}, {exc.error}"
    return None


def _check_decodes(paths: list[Path]) -> None:
    """Decode every image once (as the crawler does) so that no truncated or corrupt file reaches a shard, where
    ``load_dataset`` users would meet it as an OSError; decoding releases the GIL, so threads use every core."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        failures = [f for f in progress(pool.map(_decode_failure, paths), total=len(paths), desc="decode") if f]
    if failures:
        raise NoisekitError(
            f"{len(failures):,} of {len(paths):,} image(s) do not decode (first: {failures[0]}); replace them, "
            "drop them from the manifest, or publish --labels-only"
        )


def _stats(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    out = {}
    for split in SPLIT_NAMES:
        rows = frame[frame["split"] == split]
        if len(rows):
            out[split] = {
                "rows": len(rows),
                "noisy": int(rows["is_noisy"].fillna(False).sum()),
                "unknown": int(rows["is_noisy"].isna().sum()),
                "labels": int(rows["label"].nunique()),
            }
    return out


TEST_COLUMNS = ["image_id", "path", "label", "clean_label", "is_noisy"]


def _shares_test(manifest: Manifest, clean: Manifest | None) -> bool:
    """Whether a variant's test split is the clean one in the clean label space (so it can share its shards)."""
    if clean is None or tuple(manifest.meta.labels) != tuple(clean.meta.class_names):
        return False
    mine = manifest.split("test")[TEST_COLUMNS].reset_index(drop=True)
    return mine.equals(clean.split("test")[TEST_COLUMNS].reset_index(drop=True))


def _plan(name: str, manifest: Manifest, *, shared_test: bool, labels_only: bool) -> _Plan:
    frame = manifest.frame
    own = [s for s in SPLIT_NAMES if not (s == "test" and shared_test)]
    parts = [(SPLIT_NAMES[s], frame[frame["split"] == s]) for s in own]
    record = ConfigRecord(
        name=name,
        meta=public_meta(manifest.meta.to_json()) | {"variant": name},
        labels_only=labels_only,
        content_sha256="",
        shared_test=shared_test,
        stats=_stats(frame),
    )
    return _Plan(record, manifest, [(s, rows) for s, rows in parts if len(rows)])


def _digest(path: Path, cache: dict[Path, str]) -> str:
    if path not in cache:
        cache[path] = hashlib.sha256(read_image(path)).hexdigest()
    return cache[path]


def _content_hash(plan: _Plan, cache: dict[Path, str], shared_hash: str | None) -> str:
    """sha256 of everything a user loads: metadata (less the tool version), rows, labels and image bytes."""
    meta = {k: v for k, v in plan.record.meta.items() if k != "tool_version"}
    head = {"meta": meta, "labels_only": plan.record.labels_only, "shared_test": shared_hash}
    h = hashlib.sha256(json.dumps(head, sort_keys=True).encode())
    for split, rows in plan.parts:
        for image_id, rel, label, clean, noisy in zip(*(rows[c] for c in TEST_COLUMNS), strict=True):
            image = None if plan.record.labels_only else _digest(plan.file(rel), cache)
            flag = None if noisy is pd.NA else bool(noisy)
            h.update(json.dumps([split, image_id, rel, int(label), int(clean), flag, image]).encode() + b"\n")
    return h.hexdigest()


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) ``src`` to ``dst``."""
    if src.is_dir() and not src.is_symlink():
        dst.mkdir()
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
        return
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _check_target(out: Path, existing: Folder, dataset: str, labels_only: bool) -> None:
    records = list(existing.configs.values())
    if records and records[0].dataset != dataset:
        raise NoisekitError(
            f"--out {out} holds dataset {records[0].dataset!r}; publish {dataset!r} into another folder"
        )
    if existing.labels_only is not None and existing.labels_only != labels_only:
        held = "labels only" if existing.labels_only else "images"
        raise NoisekitError(
            f"--out {out} holds {held}; publish {'without' if labels_only else 'with'} --labels-only "
            "there, or into another folder"
        )
    if not records and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise NoisekitError(f"--out {out} is not empty and holds no published configuration; choose a new folder")


def _plans(manifests: dict[str, Manifest], clean: Manifest | None, labels_only: bool) -> list[_Plan]:
    """The shared test split's plan (when a configuration uses it) first, then one per variant, content hashed."""
    plans = [_plan(n, m, shared_test=_shares_test(m, clean), labels_only=labels_only) for n, m in manifests.items()]
    cache: dict[Path, str] = {}
    shared_hash = None
    if clean is not None and any(p.record.shared_test for p in plans):
        shared = _plan(SHARED, clean.replace(frame=clean.split("test")), shared_test=False, labels_only=labels_only)
        shared_hash = _content_hash(shared, cache, None)
        shared.record = replace(shared.record, content_sha256=shared_hash)
        plans.insert(0, shared)
    for plan in plans:
        if plan.record.name != SHARED:
            used = shared_hash if plan.record.shared_test else None
            plan.record = replace(plan.record, content_sha256=_content_hash(plan, cache, used))
    return plans


def _decide(plans: list[_Plan], existing: Folder, overwrite: bool) -> tuple[list[_Plan], list[str]]:
    """Which plans to write and which configurations are already there with the same content; a clash is refused
    unless ``overwrite``."""
    out = existing.path
    to_write, unchanged = [], []
    for plan in plans:
        name = plan.record.name
        old = existing.shared if name == SHARED else existing.configs.get(name)
        if old is None or (overwrite and old.content_sha256 != plan.record.content_sha256):
            to_write.append(plan)
        elif old.content_sha256 == plan.record.content_sha256:
            unchanged.append(name)
        elif name == SHARED:
            raise NoisekitError(
                f"the clean test split in {out / SHARED} differs from this build's; pass --overwrite to replace it "
                "(with every configuration that uses it) or publish into a new folder"
            )
        else:
            raise NoisekitError(
                f"configuration {name!r} already exists in {out} with different content; pass --overwrite to replace it"
            )
    written = {p.record.name for p in to_write}
    if SHARED in written:
        stale = [n for n, r in existing.configs.items() if r.shared_test and n not in written]
        if stale:
            raise NoisekitError(
                f"the clean test split in {out / SHARED} changes, and configuration(s) {', '.join(stale)} use it; "
                "publish them too (--variant) or into a new folder"
            )
    return to_write, unchanged


def _assemble(out: Path, to_write: list[_Plan], options: PublishOptions) -> None:
    """Build the new folder beside ``out`` (kept entries hard-linked, new configurations written, the card rendered
    from every configuration) and move it into place; on any failure ``out`` is left as it was."""
    written = {p.record.name for p in to_write}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.publish-", dir=out.parent))
    try:
        stage = tmp / out.name
        stage.mkdir()
        if out.is_dir():
            for entry in out.iterdir():
                if entry.name not in written and entry.name != "README.md":
                    _link_tree(entry, stage / entry.name)
        for plan in to_write:
            write_config(plan.record, plan.parts, plan.file, stage, options.max_shard_size)
        (stage / "README.md").write_text(cards.render(read_folder(stage), repo_id=options.repo_id), encoding="utf-8")
        backup = tmp / "previous"
        if out.exists():
            os.replace(out, backup)
        try:
            os.replace(stage, out)
        except OSError:
            if backup.exists():
                os.replace(backup, out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(dataset: str, out: Path, options: PublishOptions = PublishOptions()) -> PublishResult:
    """Write (or update) the dataset repository folder ``out`` with ``dataset``'s variants."""
    check_name(dataset, what="dataset")
    cards.images_allowed(dataset)  # a card template must exist before any work is done
    manifests = _variants(dataset, options.variants)
    if not options.labels_only:
        _check_images(manifests)
    out = out.expanduser().absolute()
    existing = read_folder(out)
    _check_target(out, existing, dataset, options.labels_only)
    clean_path = data_home() / dataset / f"{CLEAN}.parquet"
    clean = manifests.get(CLEAN) or (read_manifest(clean_path) if clean_path.is_file() else None)
    to_write, unchanged = _decide(_plans(manifests, clean, options.labels_only), existing, options.overwrite)
    readme = out / "README.md"
    if not to_write and readme.is_file():
        if readme.read_text(encoding="utf-8") == cards.render(existing, repo_id=options.repo_id):
            return _result(out, existing, (), tuple(unchanged), changed=False)
    _assemble(out, to_write, options)
    return _result(out, read_folder(out), tuple(p.record.name for p in to_write), tuple(unchanged), changed=True)


def _result(
    out: Path, folder: Folder, written: tuple[str, ...], unchanged: tuple[str, ...], *, changed: bool
) -> PublishResult:
    files = [p for p in out.rglob("*") if p.is_file()]
    return PublishResult(
        out=out,
        configs=tuple(folder.configs),
        written=tuple(n for n in written if n != SHARED),
        unchanged=tuple(n for n in unchanged if n != SHARED),
        files=len(files),
        bytes=sum(p.stat().st_size for p in files),
        changed=changed,
    )

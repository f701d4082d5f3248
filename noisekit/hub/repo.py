"""The Hugging Face side of publishing: push a published folder, load a configuration, and turn one back into a
Manifest (with its images in the data home) so prism trains on it.

References to a published dataset: ``hub:OWNER/REPO:CONFIG`` (``:CONFIG`` may be left out when there is one), a
published folder, or a configuration's folder inside it (``DIR/CONFIG``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd

from noisekit.errors import NoisekitError
from noisekit.hub.published import SPLIT_NAMES, read_folder
from noisekit.manifest import Manifest, ManifestMeta, make_frame, read_manifest, temp_beside, write_manifest
from noisekit.paths import data_home
from noisekit.progress import library_bars_off_in_logs

if TYPE_CHECKING:
    import datasets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def check_repo_id(repo_id: str, *, what: str = "--push") -> str:
    """``OWNER/REPO`` as huggingface_hub's validator accepts it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise NoisekitError(f"{what} {repo_id!r}: expected a dataset repository id OWNER/REPO")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise NoisekitError(
            f"{what} {repo_id!r}: not a valid repository id (letters, digits, '-', '_', '.'; no '--' or '..'; "
            "at most 96 characters; not starting or ending with '-' or '.')"
        ) from None
    return repo_id


def require_token() -> str:
    """The user's Hugging Face token (HF_TOKEN or the saved login); it is passed to huggingface_hub only."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise NoisekitError("--push needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return token


def push(folder: Path, repo_id: str) -> str:
    """Upload a published folder to the dataset repository ``repo_id`` (created if needed) in one commit; return the
    commit URL. Hidden files and folders (``.git``, ``.cache``) stay local."""
    from huggingface_hub import CommitOperationAdd, HfApi

    check_repo_id(repo_id)
    token = require_token()
    published = read_folder(folder)
    if not published.configs or not (folder / "README.md").is_file():
        raise NoisekitError(f"{folder} is not a published folder (no README.md or configurations)")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    )
    operations = [CommitOperationAdd(p.relative_to(folder).as_posix(), str(p)) for p in files]
    # HF_ENDPOINT is read now rather than when huggingface_hub was imported, so a later setting takes effect.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    message = f"noisekit publish: {', '.join(published.configs)}"
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True, token=token)
        info = api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset", token=token)
    except Exception as exc:  # HTTP status errors, transport errors and rejected cards all end the push alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NoisekitError(f"push to {repo_id} failed: {first[:300]}") from None
    return str(info.commit_url)


def _source(repo_or_dir: str | Path) -> str:
    path = Path(repo_or_dir).expanduser()
    if path.is_dir():
        if not (path / "README.md").is_file():
            raise NoisekitError(f"{path} is not a published folder (no README.md)")
        return str(path.absolute())
    return check_repo_id(str(repo_or_dir), what="dataset")


def config_names(repo_or_dir: str | Path) -> list[str]:
    import datasets

    source = _source(repo_or_dir)
    try:
        return list(datasets.get_dataset_config_names(source))
    except Exception as exc:  # datasets raises hub, network and file errors of many types
        raise NoisekitError(f"{repo_or_dir}: cannot list configurations ({type(exc).__name__}: {exc})") from None


def _pick(repo_or_dir: str | Path, config: str | None, names: list[str]) -> str:
    if config is None:
        if len(names) != 1:
            raise NoisekitError(
                f"{repo_or_dir} has {len(names)} configurations ({', '.join(names)}); name one (--config C, "
                "DIR/CONFIG or hub:OWNER/REPO:CONFIG)"
            )
        return names[0]
    if config not in names:
        raise NoisekitError(f"configuration {config!r}: {repo_or_dir} has none such (have: {', '.join(names)})")
    return config


def _load(repo_or_dir: str | Path, config: str) -> datasets.DatasetDict:
    import datasets

    try:
        with library_bars_off_in_logs():
            return datasets.load_dataset(_source(repo_or_dir), name=config)
    except Exception as exc:  # datasets raises hub, network, cast and file errors of many types
        raise NoisekitError(f"{repo_or_dir}: cannot load {config!r} ({type(exc).__name__}: {exc})") from None


def load(repo_or_dir: str | Path, config: str | None = None) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of one configuration of a published folder or Hub dataset repository."""
    return _load(repo_or_dir, _pick(repo_or_dir, config, config_names(repo_or_dir)))


def summary(repo_or_dir: str | Path, config: str | None = None) -> dict[str, Any]:
    """What ``noisekit load`` prints: configurations, splits, rows, features and the training noise rate."""
    names = config_names(repo_or_dir)
    config = _pick(repo_or_dir, config, names)
    data = _load(repo_or_dir, config)
    out: dict[str, Any] = {"source": str(repo_or_dir), "config": config, "configs": names}
    out["splits"] = {name: len(split) for name, split in data.items()}
    first = next(iter(data.values()))
    out["features"] = {name: repr(feature) for name, feature in first.features.items()}
    out["classes"] = {name: len(set(split["label"])) for name, split in data.items()}
    if "train" in data and "is_noisy" in data["train"].column_names:
        flags = pd.Series(data["train"]["is_noisy"], dtype="boolean")
        known = int(flags.notna().sum())
        out["noise"] = {
            "noisy": int(flags.fillna(False).sum()),
            "known": known,
            "unknown": int(flags.isna().sum()),
            "rate": float(flags.fillna(False).sum() / known) if known else None,
        }
    return out


def render(data: dict[str, Any]) -> str:
    lines = [f"{data['source']}  config {data['config']}  (configs: {', '.join(data['configs'])})"]
    lines.append(f"{'split':<12}{'rows':>10}{'classes':>10}")
    lines += [f"{s:<12}{n:>10,}{data['classes'][s]:>10,}" for s, n in data["splits"].items()]
    lines += [f"  {name}: {feature[:100]}" for name, feature in data["features"].items()]
    noise = data.get("noise")
    if noise:
        rate = "unknown" if noise["rate"] is None else f"{noise['rate']:.4f}"
        lines.append(
            f"train noise rate {rate} ({noise['noisy']:,} noisy of {noise['known']:,} known; {noise['unknown']:,} "
            "unknown)"
        )
    return "\n".join(lines)


def parse_ref(ref: str) -> tuple[str, str | None] | None:
    """``hub:OWNER/REPO[:CONFIG]``, a published folder or ``DIR/CONFIG`` -> (repo or folder, config); ``None`` for
    any other reference (a data-home name or a manifest path)."""
    if ref.startswith("hub:"):
        repo, _, config = ref[4:].partition(":")
        if repo.count("/") != 1:
            raise NoisekitError(f"--dataset {ref!r}: expected hub:OWNER/REPO:CONFIG")
        return check_repo_id(repo, what="--dataset hub:"), config or None
    path = Path(ref).expanduser()
    if not path.is_dir():
        return None
    if (path / "README.md").is_file():
        return str(path), None
    if (path.parent / "README.md").is_file() and path.name in read_folder(path.parent).configs:
        return str(path.parent), path.name
    return None


def _slug(source: str) -> str:
    path = Path(source)
    if path.is_dir():
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
        return f"local--{path.name}-{digest}"
    return source.replace("/", "--")


def _file_name(image_id: str, path: str | None, data: bytes) -> str:
    """``<image_id><ext>`` when the id is a safe relative path, else a hash of the id; the extension is the original
    file's, or the decoded format's."""
    suffix = PurePosixPath(path or "").suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            suffix = "." + (image.format or "png").lower()
    pure = PurePosixPath(image_id)
    safe = image_id and not pure.is_absolute() and all(p not in ("", ".", "..") for p in image_id.split("/"))
    if not safe or not all(c.isalnum() or c in "-_./" for c in image_id):
        image_id = hashlib.sha256(image_id.encode()).hexdigest()[:24]
    return image_id + suffix


def _write_images(data: datasets.DatasetDict, folder: Path, *, where: str) -> dict[str, list[Any]]:
    """Write every image's original bytes under ``folder``; return the manifest columns of the rows."""
    from datasets import Image

    back = {hf: ours for ours, hf in SPLIT_NAMES.items()}
    rows: dict[str, list[Any]] = {k: [] for k in ("image_id", "path", "split", "clean_label", "label", "is_noisy")}
    for split_name, split in data.items():
        if split_name not in back:
            raise NoisekitError(f"{where}: split {split_name!r} is not one of {', '.join(back)}")
        columns = ("image", "image_id", "label", "clean_label", "is_noisy")
        for batch in split.cast_column("image", Image(decode=False)).iter(batch_size=256):
            for image, image_id, label, clean, noisy in zip(*(batch[c] for c in columns), strict=True):
                if not image or image.get("bytes") is None:
                    raise NoisekitError(f"{where}: image {image_id!r} has no bytes")
                rel = _file_name(image_id, image.get("path"), image["bytes"])
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(image["bytes"])
                for key, value in zip(rows, (image_id, rel, back[split_name], clean, label, noisy), strict=True):
                    rows[key].append(value)
    return rows


def materialise(repo_or_dir: str, config: str | None = None) -> Manifest:
    """A Manifest of a published configuration, its images written once under
    ``$NOISEKIT_HOME/hub/<slug>/<config>/images/`` (reused while the published data is unchanged)."""
    config = _pick(repo_or_dir, config, config_names(repo_or_dir))
    data = _load(repo_or_dir, config)
    features = next(iter(data.values())).features
    if "image" not in features:
        raise NoisekitError(
            f"{repo_or_dir}:{config} was published --labels-only and holds no images; training needs them "
            "(rebuild the dataset with noisekit, or use a copy published with images)"
        )
    source = _source(repo_or_dir)
    folder = data_home() / "hub" / _slug(source) / config
    fingerprint = hashlib.sha256("|".join(f"{s}:{d._fingerprint}" for s, d in data.items()).encode()).hexdigest()
    cached = folder / "manifest.parquet"
    if cached.is_file():
        manifest = read_manifest(cached)
        if manifest.meta.source.get("fingerprint") == fingerprint and Path(manifest.meta.root).is_dir():
            return manifest

    record = read_folder(Path(source)).configs.get(config) if Path(source).is_dir() else None
    folder.mkdir(parents=True, exist_ok=True)
    staging = temp_beside(folder / "images", directory=True)
    try:
        rows = _write_images(data, staging, where=f"{repo_or_dir}:{config}")
        images = folder / "images"
        if images.exists():
            shutil.rmtree(images)
        os.replace(staging, images)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    meta = ManifestMeta(
        dataset=record.dataset if record else _slug(source),
        root=str(images),
        class_names=tuple(features["clean_label"].names),
        label_names=None
        if features["label"].names == features["clean_label"].names
        else tuple(features["label"].names),
        variant=config,
        noise=record.meta.get("noise") if record else None,
        source={
            "published": source if not Path(source).is_dir() else Path(source).name,
            "config": config,
            "fingerprint": fingerprint,
        },
    )
    frame = make_frame(
        **{k: rows[k] for k in ("image_id", "path", "split", "clean_label", "label")}, is_noisy=rows["is_noisy"]
    )
    manifest = Manifest(frame, meta)
    write_manifest(manifest, cached)
    return manifest


def published_manifest(ref: str) -> Manifest | None:
    """The Manifest of a published reference (see :func:`parse_ref`), or ``None`` when ``ref`` is not one."""
    parsed = parse_ref(ref)
    return None if parsed is None else materialise(*parsed)

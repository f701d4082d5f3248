"""The Hugging Face side of publishing: push a published folder, and load one configuration of a published folder
or Hub repository with ``datasets`` (references: :mod:`noisekit.hub.refs`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from noisekit.errors import NoisekitError
from noisekit.hub.published import read_folder
from noisekit.hub.reach import datasets_offline, offline_error, offline_reason
from noisekit.hub.refs import SPELLINGS, Ref, check_repo_id, parse
from noisekit.progress import library_bars_off_in_logs

if TYPE_CHECKING:
    import datasets

__all__ = ["check_repo_id", "config_names", "load", "push", "render", "require_token", "summary"]


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


def source(ref: Ref) -> str:
    """What ``datasets`` loads: the folder's absolute path, or the repository id."""
    return str(ref.folder) if ref.local else ref.source


def guard(ref: Ref) -> None:
    """Fail at once when ``ref`` is on a Hub that cannot be reached, unless ``datasets`` reads only its cache."""
    if not ref.local and not datasets_offline():
        reason = offline_reason()
        if reason:
            raise offline_error(ref, reason)


def _failed(ref: Ref, what: str, exc: Exception) -> NoisekitError:
    reason = None if ref.local else offline_reason()
    if reason:
        return offline_error(ref, reason)
    return NoisekitError(f"{ref}: cannot {what} ({type(exc).__name__}: {exc})")


def config_names(ref: Ref) -> list[str]:
    import datasets

    try:
        return list(datasets.get_dataset_config_names(source(ref)))
    except Exception as exc:  # datasets raises hub, network and file errors of many types
        raise _failed(ref, "list configurations", exc) from None


def pick(ref: Ref, names: list[str]) -> str:
    """``ref``'s configuration, or its only one; a one-line error in the one spelling otherwise."""
    if ref.config is None:
        if len(names) != 1:
            raise NoisekitError(
                f"{ref} has {len(names)} configurations ({', '.join(names)}); name one as {ref.spell('CONFIG')}"
            )
        return names[0]
    if ref.config not in names:
        raise NoisekitError(f"{ref}: no configuration {ref.config!r} (have: {', '.join(names)})")
    return ref.config


def load_config(ref: Ref, config: str) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of ``config``, its errors one line."""
    import datasets

    try:
        with library_bars_off_in_logs():
            return datasets.load_dataset(source(ref), name=config)
    except Exception as exc:  # datasets raises hub, network, cast and file errors of many types
        raise _failed(ref, f"load {config!r}", exc) from None


def reference(repo_or_dir: str | Path, config: str | None = None) -> Ref:
    """``noisekit load``'s argument and ``--config`` -> a :class:`Ref` (also a bare ``OWNER/REPO``)."""
    ref = parse(str(repo_or_dir), config, what="dataset", bare_repo=True)
    if ref is None:
        raise NoisekitError(f"{repo_or_dir} is not a published folder (no README.md); expected {SPELLINGS}")
    return ref


def load(repo_or_dir: str | Path, config: str | None = None) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of one configuration of a published folder or Hub dataset repository: ``DIR/CONFIG``,
    ``hub:OWNER/REPO:CONFIG``, or the folder or repository and ``config``."""
    ref = reference(repo_or_dir, config)
    guard(ref)
    return load_config(ref, pick(ref, config_names(ref)))


def summary(repo_or_dir: str | Path, config: str | None = None) -> dict[str, Any]:
    """What ``noisekit load`` prints: configurations, splits, rows, features and the training noise rate."""
    ref = reference(repo_or_dir, config)
    guard(ref)
    names = config_names(ref)
    config = pick(ref, names)
    data = load_config(ref, config)
    out: dict[str, Any] = {"source": ref.spell(config), "config": config, "configs": names}
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
    lines = [f"{data['source']}  (configs: {', '.join(data['configs'])})"]
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

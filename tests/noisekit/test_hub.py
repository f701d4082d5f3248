"""publish / load / push on the real digits: an exact offline round trip through datasets.load_dataset for every
configuration, incremental and atomic publishing, the push path against a local Hub endpoint, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pandas as pd
import pytest
import yaml
from hub_server import fake_hub
from PIL import Image
from typer.testing import CliRunner

import noisekit
from noisekit.cli import app
from noisekit.hub.publish import PublishOptions, publish
from noisekit.manifest import Manifest, read_manifest, write_manifest
from noisekit.noise.common import save_variant
from noisekit.noise.features import FeatureOptions, train_features
from noisekit.noise.small_cluster import small_cluster
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build

CONFIGS = ("clean", "small_cluster-0.5", "symmetric-0.5")
SECRET = "hf_noisekitTestSecret0123456789"


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets' cache of loaded folders goes to the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


@pytest.fixture(scope="module")
def digits_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data home with digits, symmetric-0.5 and small_cluster-0.5 (random ResNet-18 weights, 32 px)."""
    home = tmp_path_factory.mktemp("digits-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEKIT_HOME", str(home))
        _, result = build("digits")
        save_variant(symmetric(result.manifest, rate=0.5, seed=0))
        feats, provenance, _ = train_features(result.manifest, FeatureOptions("random", 32, 128, 0))
        noisy, figures = small_cluster(result.manifest, feats, rate=0.5, seed=0, provenance=provenance)
        save_variant(noisy, figures)
    yield home


@pytest.fixture(scope="module")
def published(digits_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every variant published into one folder, with small shards so the train splits span several files."""
    out = tmp_path_factory.mktemp("published") / "digits-noisy"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEKIT_HOME", str(digits_home))
        publish("digits", out, PublishOptions(max_shard_size=50_000))
    return out


def manifest_of(home: Path, variant: str) -> Manifest:
    return read_manifest(home / "digits" / f"{variant}.parquet")


def rows_of(manifest: Manifest, split: str) -> list[tuple]:
    part = manifest.split(split)
    flags = [None if f is pd.NA else bool(f) for f in part["is_noisy"]]
    return list(zip(part["image_id"], part["label"], part["clean_label"], flags, strict=True))


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def use_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("NOISEKIT_HOME", str(home))


def linked_home(digits_home: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    """A data home of its own with copies of the module's digits images, so a test may break some (links to them
    would lead outside the root, which a manifest read refuses)."""
    clean = manifest_of(digits_home, "clean")
    root = home / "digits" / "raw"
    for rel in clean.frame["path"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clean.resolve(rel), root / rel)
    manifest = clean.replace(root=str(root))
    write_manifest(manifest, home / "digits" / "clean.parquet")
    use_home(monkeypatch, home)
    return manifest


def test_round_trip_of_every_configuration_offline(
    published: Path, digits_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offline(monkeypatch)
    assert sorted(datasets.get_dataset_config_names(str(published))) == sorted(CONFIGS)
    assert len(list((published / "clean").glob("train-*-of-*.parquet"))) > 1  # the shard limit took effect
    assert list((published / "small_cluster-0.5").glob("test-*"))  # re-indexed labels: its own test split
    assert not list((published / "symmetric-0.5").glob("test-*"))  # the clean label space: shares shared/
    for config in CONFIGS:
        manifest = manifest_of(digits_home, config)
        loaded = datasets.load_dataset(str(published), name=config)
        assert set(loaded) == {"train", "test"}
        for split, part in loaded.items():
            got = list(zip(part["image_id"], part["label"], part["clean_label"], part["is_noisy"], strict=True))
            assert got == rows_of(manifest, split), (config, split)
            assert part.features["label"].names == list(manifest.meta.labels)
            assert part.features["clean_label"].names == list(manifest.meta.class_names)
            for row, rel in zip(part, manifest.split(split)["path"], strict=True):
                with Image.open(manifest.resolve(rel)) as image:
                    assert np.array_equal(np.asarray(row["image"]), np.asarray(image))
    small = manifest_of(digits_home, "small_cluster-0.5")
    assert small.meta.label_names != small.meta.class_names  # the case the own test split exists for


def test_card_yaml_and_text(published: Path, tmp_path: Path) -> None:
    text = (published / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "cc-by-4.0"
    assert {c["config_name"] for c in meta["configs"]} == set(CONFIGS)
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["clean"]
    for info in meta["dataset_info"]:
        features = datasets.Features._from_yaml_list(info["features"])
        assert list(features) == ["image", "image_id", "label", "clean_label", "is_noisy"]
    assert "noisekit make symmetric --dataset digits --rate 0.5 --seed 0" in body
    assert (
        "noisekit make small-cluster --dataset digits --rate 0.5 --seed 0 --backbone resnet18 --weights random "
        "--image-size 32"
    ) in body
    assert "Liu, Chang" in body and "Alpaydin" in body and "noisekit 0.1.0" in body
    assert "`symmetric-0.5` | symmetric | 0.5 | 0.5006 | 0 | 901 | 896 |" in body  # 451 of 901 flipped
    for path in published.rglob("*"):  # no path of this machine is published
        if path.is_file():
            assert str(published.parent).encode() not in path.read_bytes()


def test_labels_only_loads(digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch) -> None:
    use_home(monkeypatch, digits_home)
    out = tmp_path / "labels"
    result = runner.invoke(app, ["publish", "digits", "--out", str(out), "--labels-only", "--variant", "clean"])
    assert result.exit_code == 0, result.output
    offline(monkeypatch)
    loaded = datasets.load_dataset(str(out), name="clean")
    manifest = manifest_of(digits_home, "clean")
    assert loaded["train"].column_names == ["image_id", "path", "label", "clean_label", "is_noisy"]
    assert loaded["test"]["path"] == list(manifest.split("test")["path"])
    assert "Join it with your local copy" in (out / "README.md").read_text().replace("\n", " ")
    assert sum(p.stat().st_size for p in out.rglob("*.parquet")) < 60_000  # no image bytes


def test_unknown_clean_labels_stay_minus_one(
    digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = linked_home(digits_home, tmp_path / "home5", monkeypatch)
    frame = clean.frame.copy()
    unknown = frame.index[frame["split"] == "train"][:10]
    frame.loc[unknown, "clean_label"] = -1  # as a crawl's rows: true class unknown
    frame["is_noisy"] = pd.array([pd.NA if c < 0 else False for c in frame["clean_label"]], dtype="boolean")
    write_manifest(clean.replace(frame, variant="web"), tmp_path / "home5" / "digits" / "web.parquet")
    out = tmp_path / "web"
    result = runner.invoke(app, ["publish", "digits", "--out", str(out), "--variant", "web", "--labels-only"])
    assert result.exit_code == 0, result.output
    loaded = datasets.load_dataset(str(out), name="web")["train"]
    assert loaded["clean_label"][:10] == [-1] * 10 and loaded["is_noisy"][:10] == [None] * 10
    assert loaded["clean_label"][10:] == list(frame[frame["split"] == "train"]["clean_label"][10:])
    with pytest.raises(ValueError):
        loaded.features["clean_label"].int2str(-1)  # -1 is ClassLabel's missing label, not a class
    summary = runner.invoke(app, ["load", str(out)])
    assert "train noise rate 0.0000 (0 noisy of 891 known; 10 unknown)" in summary.output, summary.output


def test_incremental_publish_keeps_configurations(digits_home: Path, tmp_path: Path, monkeypatch) -> None:
    use_home(monkeypatch, digits_home)
    out = tmp_path / "incremental"
    first = publish("digits", out, PublishOptions(variants=("clean",)))
    shard = out / "clean" / "train-00000-of-00001.parquet"
    before = shard.stat()
    second = publish("digits", out, PublishOptions(variants=("symmetric-0.5",)))
    assert (first.written, second.written, second.configs) == (
        ("clean",),
        ("symmetric-0.5",),
        ("clean", "symmetric-0.5"),
    )
    assert shard.stat().st_ino == before.st_ino  # kept as it was (hard-linked into the new folder)
    card = (out / "README.md").read_text()
    assert "### `clean`" in card and "### `symmetric-0.5`" in card
    readme_mtime = (out / "README.md").stat().st_mtime_ns
    again = publish("digits", out, PublishOptions(variants=("clean", "symmetric-0.5")))
    assert (again.changed, again.written, again.unchanged) == (False, (), ("clean", "symmetric-0.5"))
    assert (out / "README.md").stat().st_mtime_ns == readme_mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_clash_is_refused_unless_overwrite(
    digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = linked_home(digits_home, tmp_path / "home2", monkeypatch)
    save_variant(symmetric(clean, rate=0.5, seed=0))
    out = tmp_path / "clash"
    assert runner.invoke(app, ["publish", "digits", "--out", str(out)]).exit_code == 0
    before = folder_bytes(out)
    path, _ = save_variant(symmetric(clean, rate=0.5, seed=1), overwrite=True)  # same name, other labels
    refused = runner.invoke(app, ["publish", "digits", "--out", str(out), "--variant", "symmetric-0.5"])
    assert refused.exit_code == 2
    assert "configuration 'symmetric-0.5' already exists" in refused.output and "--overwrite" in refused.output
    assert folder_bytes(out) == before
    args = ["publish", "digits", "--out", str(out), "--variant", "symmetric-0.5", "--overwrite"]
    replaced = runner.invoke(app, args)
    assert replaced.exit_code == 0, replaced.output
    loaded = datasets.load_dataset(str(out), name="symmetric-0.5")
    assert loaded["train"]["label"] == list(read_manifest(path).split("train")["label"])
    assert folder_bytes(out)["clean/train-00000-of-00001.parquet"] == before["clean/train-00000-of-00001.parquet"]


def test_unreadable_image_leaves_the_previous_folder(
    digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = linked_home(digits_home, tmp_path / "home3", monkeypatch)
    out = tmp_path / "atomic"
    assert runner.invoke(app, ["publish", "digits", "--out", str(out)]).exit_code == 0
    before = folder_bytes(out)
    bad = clean.resolve(clean.frame["path"].iloc[0])
    bad.write_bytes(bad.read_bytes()[:-40])  # a truncated PNG: it opens, its pixels do not decode
    failed = runner.invoke(app, ["publish", "digits", "--out", str(out), "--overwrite"])
    assert failed.exit_code == 2
    assert failed.output.startswith("error: 1 of 1,797 image(s) do not decode (first: ") and str(bad) in failed.output
    assert len(failed.output.strip().splitlines()) == 1
    assert folder_bytes(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    bad.unlink()
    bad.symlink_to("/etc/passwd")  # a link inside the root to a file outside it
    escaped = runner.invoke(app, ["publish", "digits", "--out", str(out), "--overwrite"])
    assert escaped.exit_code == 2, escaped.output
    assert "row 0: path " in escaped.output and "leads outside the dataset root" in escaped.output
    assert folder_bytes(out) == before


def test_bad_input(digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    use_home(monkeypatch, digits_home)
    out = tmp_path / "bad"
    unknown = runner.invoke(app, ["publish", "digits", "--out", str(out), "--variant", "symmetric-0.9"])
    assert unknown.exit_code == 2
    assert "--variant 'symmetric-0.9': digits has no such variant (have: clean, small_cluster-0.5, symmetric-0.5)" in (
        unknown.output
    )
    for repo in ("no-namespace", "owner/bad--name", "owner/-x", "a/b/c"):
        invalid = runner.invoke(app, ["publish", "digits", "--out", str(out), "--push", repo])
        assert invalid.exit_code == 2 and f"--push {repo!r}" in invalid.output, invalid.output
    assert not out.exists()  # nothing was written
    size = runner.invoke(app, ["publish", "digits", "--out", str(out), "--max-shard-size", "lots"])
    assert size.exit_code == 2 and "--max-shard-size" in size.output

    clean = linked_home(digits_home, tmp_path / "home4", monkeypatch)
    paths = [clean.resolve(p) for p in clean.frame["path"]]
    for path in paths[3:6]:
        path.unlink()
    missing = runner.invoke(app, ["publish", "digits", "--out", str(out)])
    assert missing.exit_code == 2
    assert f"3 image(s) missing on disk (first: {paths[3]})" in missing.output
    assert not out.exists()


def test_load_command_and_api(published: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    offline(monkeypatch)
    result = runner.invoke(app, ["load", str(published), "--config", "symmetric-0.5"])
    assert result.exit_code == 0, result.output
    assert "configs: clean, small_cluster-0.5, symmetric-0.5" in result.output
    assert "train noise rate 0.5006 (451 noisy of 901 known; 0 unknown)" in result.output
    assert "label: ClassLabel(names=['0', '1'," in result.output
    wrong = runner.invoke(app, ["load", str(published), "--config", "nope"])
    assert wrong.exit_code == 2 and "configuration 'nope'" in wrong.output
    loaded = noisekit.load(str(published), "small_cluster-0.5")
    assert isinstance(loaded, datasets.DatasetDict) and loaded["train"].num_rows == 901
    light = subprocess.run(
        [sys.executable, "-c", "import sys, noisekit; print(sorted({'datasets', 'torch'} & set(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert light.stdout.strip() == "[]"  # importing noisekit stays light


def test_push_to_a_local_hub(
    digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_home(monkeypatch, digits_home)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    out = tmp_path / "pushed"
    with fake_hub() as (endpoint, record):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        args = ["publish", "digits", "--out", str(out), "--variant", "symmetric-0.5", "--push", "someone/digits-noisy"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        again = runner.invoke(app, args)  # the repository exists: exist_ok
        assert again.exit_code == 0, again.output
    assert record.repos == {"someone/digits-noisy": "dataset"}
    assert record.files["someone/digits-noisy"] == folder_bytes(out)
    assert len(record.commits) == 2  # one commit per push
    assert {auth for _, _, auth in record.requests} == {f"Bearer {SECRET}"}  # the token was used ...
    assert 'load_dataset("someone/digits-noisy", name="symmetric-0.5")' in (out / "README.md").read_text()
    secret = SECRET.encode()
    for root in (out, digits_home, tmp_path):  # ... and written nowhere
        for path in root.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path
    assert SECRET not in result.output + again.output


def test_push_without_a_token(
    digits_home: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_home(monkeypatch, digits_home)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    out = tmp_path / "never"
    result = runner.invoke(app, ["publish", "digits", "--out", str(out), "--push", "someone/digits"])
    assert result.exit_code == 2 and "--push needs a Hugging Face token" in result.output
    assert not out.exists()
    assert os.environ.get("HF_TOKEN") is None

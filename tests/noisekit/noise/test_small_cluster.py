"""Small Cluster on the real digits (random and file weights) and on features the test controls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from noisekit.cli import app
from noisekit.manifest import Manifest, ManifestMeta, make_frame, read_manifest
from noisekit.noise.small_cluster import Plan, apply, small_cluster
from noisekit.sources.build import build

FAST = ["--image-size", "32", "--workers", "0", "--batch-size", "128"]


@pytest.fixture
def digits(home: Path) -> Path:
    return build("digits")[0]


def _check_variant(clean: Manifest, noisy: Manifest, rate: float) -> None:
    train_c, train_n = clean.split("train"), noisy.split("train")
    sizes = train_c["clean_label"].value_counts()
    n = len(train_c)
    noise = noisy.meta.noise
    dissolved = [clean.meta.class_names.index(c) for c in json_report(noisy)["dissolved_classes"]]
    assert noise["classes_dissolved"] == len(dissolved)
    realised = noise["realised_rate"]
    # within one dissolved class of R: the last class dissolved pushed the count past R * n
    assert rate <= realised < rate + sizes.max() / n
    assert realised == pytest.approx(sizes[dissolved].sum() / n)
    survivors = sorted(set(range(5)) - set(dissolved))
    assert json_report(noisy)["surviving_classes"] == len(survivors) == 5 - len(dissolved)
    # labels re-indexed densely over the survivors; every dissolved image carries a surviving label
    assert sorted(set(train_n["label"])) == list(range(len(survivors)))
    assert noisy.meta.label_names[: len(survivors)] == tuple(clean.meta.class_names[c] for c in survivors)
    label_names = np.array(noisy.meta.labels)
    moved = train_n[train_n["clean_label"].isin(dissolved)]
    assert set(label_names[moved["label"]]) <= {clean.meta.class_names[c] for c in survivors}
    assert moved["is_noisy"].all() and not train_n[~train_n["clean_label"].isin(dissolved)]["is_noisy"].any()
    stay = train_n[~train_n["clean_label"].isin(dissolved)]
    assert (label_names[stay["label"]] == np.array(clean.meta.class_names)[stay["clean_label"]]).all()
    # test rows keep their class (by name) and stay clean
    test = noisy.split("test")
    assert (label_names[test["label"]] == np.array(clean.meta.class_names)[test["clean_label"]]).all()
    # every image of a dissolved class was clustered (some more than once, when their new class dissolved too)
    report = json_report(noisy)
    own = report["cluster_size_histogram_own_images_only"]
    merged = report["cluster_size_histogram_with_merged_images"]
    assert sum(int(k) * v for k, v in own.items()) + sum(int(k) * v for k, v in merged.items()) >= len(moved)
    assert report["clusters"] == sum(own.values()) + sum(merged.values())
    assert (report["clusters_own_images_only"], report["clusters_with_merged_images"]) == (
        sum(own.values()),
        sum(merged.values()),
    )


def json_report(noisy: Manifest) -> dict:
    from noisekit.paths import manifest_path

    path = manifest_path(noisy.meta.dataset, noisy.meta.variant).with_suffix(".report.json")
    return json.loads(path.read_text())


def test_digits_random_weights_and_cache(runner, digits: Path, home: Path) -> None:
    result = runner.invoke(
        app, ["make", "small-cluster", "--dataset", "digits", "--rate", "0.5", "--weights", "random", *FAST]
    )
    assert result.exit_code == 0, result.output
    clean = read_manifest(digits)
    noisy = read_manifest(home / "digits" / "small_cluster-0.5.parquet")
    _check_variant(clean, noisy, 0.5)
    assert "computed in" in result.output
    # another rate reuses the cached features
    result = runner.invoke(
        app, ["make", "small-cluster", "--dataset", "digits", "--rate", "0.2", "--weights", "random", *FAST]
    )
    assert result.exit_code == 0, result.output
    again = read_manifest(home / "digits" / "small_cluster-0.2.parquet")
    assert "from cache" in result.output
    _check_variant(clean, again, 0.2)


def test_digits_weights_file_and_reproducible(runner, digits: Path, home: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    args = ["make", "small-cluster", "--dataset", "digits", "--rate", "0.3", "--weights", str(weights), "--seed", "5"]
    result = runner.invoke(app, [*args, *FAST])
    assert result.exit_code == 0, result.output
    path = home / "digits" / "small_cluster-0.3.parquet"
    first = path.read_bytes()
    noisy = read_manifest(path)
    assert noisy.meta.noise["weights"].startswith("file-")
    _check_variant(read_manifest(digits), noisy, 0.3)
    assert runner.invoke(app, [*args, *FAST]).exit_code == 0
    assert path.read_bytes() == first


def _controlled(n_pairs: int = 10, other: int = 12) -> tuple[Manifest, np.ndarray]:
    """Class 0: n_pairs pairs of near-identical images, pairs far apart; classes 1-3: `other` images each."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n_pairs, 64))
    feats = [c + rng.normal(scale=1e-4, size=64) for c in centres for _ in range(2)]
    labels = [0] * (2 * n_pairs)
    for c in (1, 2, 3):
        feats += list(rng.normal(size=(other, 64)))
        labels += [c] * other
    n = len(labels)
    frame = make_frame([f"i{k}" for k in range(n)], [f"i{k}.png" for k in range(n)], ["train"] * n, labels)
    feats_arr = np.asarray(feats, dtype=np.float32)
    feats_arr /= np.linalg.norm(feats_arr, axis=1, keepdims=True)
    return Manifest(frame, ManifestMeta(dataset="t", root="/r", class_names=("a", "b", "c", "d"))), feats_arr


def test_near_identical_images_share_a_cluster() -> None:
    manifest, feats = _controlled()
    new, figures = apply(manifest, feats, Plan(order=np.array([0]), merge_rng=np.random.default_rng(1)))
    pairs = new[:20].reshape(10, 2)
    assert (pairs[:, 0] == pairs[:, 1]).all()  # each pair went to one surviving class together
    assert set(new[:20]) <= {1, 2, 3} and (new[20:] == np.repeat([1, 2, 3], 12)).all()
    # k-means on 20 points into 10 clusters: clusters are whole pairs (size 2)
    assert figures["cluster_size_histogram_own_images_only"] == {"2": 10}
    assert figures["cluster_size_histogram_with_merged_images"] == {}
    assert figures["surviving_classes"] == 3 and figures["dissolved_classes"] == ["a"]


def _pairs_then_noise() -> tuple[Manifest, np.ndarray]:
    """a: one pair A; b: two pairs B1, B2; c: four unrelated images. Each pair is two near-identical images."""
    rng = np.random.default_rng(0)
    feats = [c + rng.normal(scale=1e-4, size=64) for c in rng.normal(size=(3, 64)) for _ in range(2)]
    feats += list(rng.normal(size=(4, 64)))
    labels = [0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    frame = make_frame([f"i{k}" for k in range(10)], [f"i{k}.png" for k in range(10)], ["train"] * 10, labels)
    arr = np.asarray(feats, dtype=np.float32)
    arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    return Manifest(frame, ManifestMeta(dataset="t", root="/r", class_names=("a", "b", "c"))), arr


@pytest.mark.parametrize(
    ("seed", "merged_into_b"),
    [(0, False), (2, True)],  # the merge stream of seed 0 sends A to c, that of seed 2 to b
)
def test_clusters_of_merged_images_are_counted_apart(seed: int, merged_into_b: bool) -> None:
    """a dissolves first: its pair A is one cluster of its own images. Then b dissolves: merged into b, A is a
    cluster again, one made of images merged earlier; B1 and B2 are clusters of b's own images."""
    manifest, feats = _pairs_then_noise()
    new, figures = apply(manifest, feats, Plan(order=np.array([0, 1]), merge_rng=np.random.default_rng(seed)))
    assert (new == 2).all()
    assert figures["cluster_size_histogram_own_images_only"] == {"2": 3}  # A (in a), B1, B2
    assert figures["cluster_size_histogram_with_merged_images"] == ({"2": 1} if merged_into_b else {})
    assert figures["clusters_own_images_only"] == 3
    assert figures["clusters_with_merged_images"] == int(merged_into_b)
    assert figures["clusters"] == 3 + merged_into_b


def test_unstructured_features_do_not_keep_pairs() -> None:
    """The property above comes from the features: with 20 unrelated vectors the same pairs are split."""
    manifest, feats = _controlled()
    feats[:20] = np.random.default_rng(2).normal(size=(20, 64)).astype(np.float32)
    new, _ = apply(manifest, feats, Plan(order=np.array([0]), merge_rng=np.random.default_rng(1)))
    pairs = new[:20].reshape(10, 2)
    assert (pairs[:, 0] != pairs[:, 1]).any()


def test_zero_rate_keeps_labels() -> None:
    manifest, feats = _controlled()
    noisy, figures = small_cluster(manifest, feats, rate=0.0, seed=0)
    assert figures["dissolved_classes"] == [] and noisy.meta.noise["realised_rate"] == 0.0
    assert (noisy.frame["label"] == manifest.frame["label"]).all()


def _fails(runner, args: list[str], needle: str, home: Path) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and needle in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in (home / "digits").glob("*.parquet")) == ["clean.parquet"]


def test_rate_leaving_fewer_than_two_classes(runner, digits: Path, home: Path) -> None:
    _fails(
        runner,
        ["make", "small-cluster", "--dataset", "digits", "--rate", "0.9", "--weights", "random"],
        "would leave 0 of 5 training classes",
        home,
    )
    assert not (home / "digits" / "features").exists()  # refused before computing any feature


def test_weights_file_not_resnet18(runner, digits: Path, home: Path, tmp_path: Path) -> None:
    other = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(3, 4).state_dict(), other)
    args = ["make", "small-cluster", "--dataset", "digits", "--rate", "0.3", *FAST]
    _fails(runner, [*args, "--weights", str(other)], "not a resnet18 state dict", home)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    _fails(runner, [*args, "--weights", str(garbage)], "not a loadable state dict", home)
    _fails(runner, [*args, "--weights", str(tmp_path / "absent.pt")], "is not 'imagenet', 'random'", home)


def test_imagenet_offline_names_file_and_folder(runner, digits: Path, home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("NOISEKIT_OFFLINE", "1")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    _fails(
        runner,
        ["make", "small-cluster", "--dataset", "digits", "--rate", "0.3", *FAST],
        f"place resnet18-f37072fd.pth from https://download.pytorch.org/models/resnet18-f37072fd.pth in {folder}",
        home,
    )

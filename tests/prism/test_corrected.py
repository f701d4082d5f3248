"""The three defects of the comparison (MCL's bank start, F-correction's anchors, Smooth Proxy-Anchor's
confidences) and printing a preset with no data built: each test fails on the code before the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from prism.config import DataShape, TrainConfig, presets, resolve
from prism.methods import build_method
from prism.methods.base import Context
from prism.methods.fcorrection import estimate_transition, symmetric_transition, true_diagonal


def test_bank_start_is_never_from_scratch_and_zero_pretrained() -> None:
    shape = DataShape(side=105, classes=700, images=14000)
    scratch = resolve(TrainConfig(dataset="omniglot"), shape)
    assert scratch.arch == "small_cnn" and scratch.warmup > 0
    assert scratch.bank_start == scratch.iterations and scratch.warmup == round(0.375 * scratch.iterations)
    pretrained = resolve(TrainConfig(dataset="cub"), DataShape(side=500, classes=100, images=5000))
    assert (pretrained.arch, pretrained.weights, pretrained.bank_start, pretrained.warmup) == (
        "resnet50", "imagenet", 0, 0
    )  # fmt: skip
    random_resnet = resolve(TrainConfig(dataset="cub", weights="random"), DataShape(500, 100, 5000))
    assert random_resnet.bank_start == random_resnet.iterations
    assert resolve(TrainConfig(dataset="omniglot", bank_start=5), shape).bank_start == 5  # explicit wins


def test_prism_selects_from_the_warmup_while_mcl_trains_without_its_bank_term(noisy_digits: str, tmp_path) -> None:
    """From scratch MCL's bank term is off (bank start = iterations), but PRISM's bank fills from step 0 and it
    selects from the end of the warm-up (--startup ours)."""
    from prism.train import train

    config = TrainConfig(
        dataset=noisy_digits, iterations=12, warmup=4, classes_per_batch=5, samples_per_class=4, eval_every=12,
        out=str(tmp_path / "run"), trace=True, workers=0,
    )  # fmt: skip
    summary = train(config, progress=False)
    assert summary["selection_started"] == 4
    steps = torch.load(tmp_path / "run" / "trace.pt")["steps"]
    assert all(bool(s["keep"].all()) for s in steps[:4]) and not all(bool(s["keep"].all()) for s in steps[4:])
    assert int((steps[3]["bank_labels"] >= 0).sum()) == 4 * 20  # filled during the warm-up


def _ideal_classifier(classes: int, per_class: int, rate: float, sigma: float = 1.0, seed: int = 0):
    """Predictions of a classifier that learnt the noisy-label distribution: log T[clean] plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    transition = symmetric_transition(classes, rate)
    clean = torch.arange(classes).repeat_interleave(per_class)
    logits = torch.log(transition[clean]) + sigma * torch.randn(len(clean), classes, generator=g)
    return torch.softmax(logits, dim=1), transition


def test_fcorrection_estimate_is_right_with_many_small_classes() -> None:
    probs, transition = _ideal_classifier(100, 20, 0.5)
    true = transition.diagonal().mean().item()
    assert abs(estimate_transition(probs).diagonal().mean().item() - true) < 0.1
    # the authors' global 97th-percentile cut removes every image of a 1%-class: its anchor is another class's
    authors = estimate_transition(probs, 97.0, within_class=False).diagonal().mean().item()
    assert authors < 0.1
    few, _ = _ideal_classifier(10, 200, 0.5)  # where the authors' cut was designed (CIFAR-10)
    assert abs(estimate_transition(few).diagonal().mean().item() - 0.5) < 0.1
    assert abs(estimate_transition(few, 97.0, within_class=False).diagonal().mean().item() - 0.5) < 0.1


def test_authors_estimator_equals_their_numpy_formula() -> None:
    """giorgiop/loss-correction noise.py NoiseEstimator.fit with filter_outlier: per class, discard
    eta >= percentile(eta, 97, interpolation='higher') and take the argmax of the rest."""
    probs, _ = _ideal_classifier(5, 40, 0.3, seed=2)
    eta = probs.numpy()
    rows = []
    for i in range(5):
        col = eta[:, i].copy()
        col[col >= np.percentile(col, 97, method="higher")] = 0.0
        rows.append(eta[np.argmax(col)])
    ours = estimate_transition(probs, 97.0, within_class=False).numpy()
    assert np.array_equal(ours, np.stack(rows))


def test_true_diagonal_of_a_variant() -> None:
    clean = np.array([0, 0, 0, 0, 1, 1, -1])
    labels = np.array([0, 0, 1, 1, 1, 0, 1])
    assert true_diagonal(labels, clean) == (0.5 + 0.5) / 2
    assert true_diagonal(labels, np.full(7, -1)) is None


def _toy_run(flip: float, *, seed: int = 0) -> dict:
    """Smooth Proxy-Anchor on separable Gaussian clusters through a trainable linear network: 120 steps of phase 1
    (the confidence module with the network), 60 of phase 2; labels flipped to another class with prob ``flip``."""
    g = torch.Generator().manual_seed(seed)
    classes, dim, embed = 20, 16, 16
    means = 3.0 * torch.randn(classes, dim, generator=g)
    options = TrainConfig(dataset="digits", method="smooth-proxyanchor").to_dict()
    ctx = Context(
        num_classes=classes, embed_dim=embed, seed=seed, iterations=180, warmup=120, batch_size=80, train_images=1000,
        rate=0.5, options=options, noise=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    method = build_method("smooth-proxyanchor", ctx)
    net = torch.nn.Linear(dim, embed)
    optimizer = torch.optim.Adam([*net.parameters(), *method.parameters()], lr=1e-2)
    for it in range(180):
        clean = torch.randint(0, classes, (80,), generator=g)
        x = means[clean] + torch.randn(80, dim, generator=g)
        noisy = torch.rand(80, generator=g) < flip
        labels = torch.where(noisy, (clean + torch.randint(1, classes, (80,), generator=g)) % classes, clean)
        loss = method(net(x), labels, torch.ones(80, dtype=torch.bool), None, it)
        method.observe(noisy.long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return method.report(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def test_smooth_proxy_anchor_is_confident_on_clean_labels_and_precise_on_noisy_ones() -> None:
    clean = _toy_run(0.0)
    assert clean["phase2_samples"] == 60 * 80
    assert clean["confident_share"] > 0.5 and clean["confident_precision"] == 1.0
    noisy = _toy_run(0.5)
    assert 0.4 < noisy["clean_share"] < 0.6
    assert noisy["confident_precision"] > noisy["clean_share"] + 0.2


def test_print_config_of_every_preset_needs_no_data(tmp_path: Path) -> None:
    env = {"NOISEKIT_HOME": str(tmp_path / "empty"), "PATH": ""}
    for name in presets():
        out = subprocess.run(
            [sys.executable, "-m", "prism", "train", "--preset", name, "--print-config"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert out.returncode == 0, (name, out.stderr)
        assert out.stdout.startswith("# not resolved: dataset ")
        values = yaml.safe_load(out.stdout)
        assert values["method"] == "mcl" and values["iterations"] > 0
        assert values["arch"] in ("bninception", "resnet50", "efficientnet_lite0")
        assert "derived from the data" in out.stdout or all(v is not None for v in values.values())


def test_print_config_prints_unresolved_only_for_missing_data(tmp_path: Path) -> None:
    """A dataset that is there but unreadable is an error, not an unresolved print (only NotBuilt is)."""
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    env = {"NOISEKIT_HOME": str(tmp_path / "home"), "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-m", "prism", "train", "--dataset", str(broken), "--print-config"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr, out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "prism", "train", "--dataset", str(tmp_path / "none.parquet"), "--print-config"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert missing.returncode == 0 and missing.stdout.startswith("# not resolved: manifest ")

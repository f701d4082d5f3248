"""The methods registry: library losses equal pytorch-metric-learning's, the baselines written here against hand
computations, every method trains on digits, and bad choices fail before training."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import CosineSimilarity

from noisekit.errors import NoisekitError
from noisekit.manifest import read_manifest
from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.paths import resolve_manifest
from noisekit.sources.build import build
from prism.cli import app
from prism.config import TrainConfig, load_config, resolve
from prism.data import prepare
from prism.methods import METHODS, Context, build_method
from prism.methods.base import open_set
from prism.methods.coteaching import CoTeaching, exchange, forget_rate, small_loss
from prism.methods.fcorrection import ForwardCorrection, corrected_loss, estimate_transition, symmetric_transition
from prism.methods.smooth_proxy_anchor import smooth_proxy_anchor
from prism.train import method_context, train

PML = {
    "contrastive": lambda c, d: losses.ContrastiveLoss(pos_margin=1.0, neg_margin=0.5, distance=CosineSimilarity()),
    "ms": lambda c, d: losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
    "circle": lambda c, d: losses.CircleLoss(m=0.4, gamma=80),
    "fastap": lambda c, d: losses.FastAPLoss(num_bins=10),
    "nsoftmax": lambda c, d: losses.NormalizedSoftmaxLoss(c, d, temperature=0.05),
    "proxynca": lambda c, d: losses.ProxyNCALoss(c, d, softmax_scale=3),
    "proxyanchor": lambda c, d: losses.ProxyAnchorLoss(c, d, margin=0.1, alpha=32),
    "softtriple": lambda c, d: losses.SoftTripleLoss(c, d, centers_per_class=10, la=20, gamma=0.1, margin=0.01),
}


def _context(**changes) -> Context:
    values = dict(
        num_classes=6, embed_dim=8, seed=0, iterations=100, warmup=10, batch_size=24, train_images=240, rate=0.4,
        options=TrainConfig(dataset="digits", method="mcl").to_dict() | {"arch": "small_cnn"}, noise=None,
    )  # fmt: skip
    return Context(**(values | changes))


def _batch(seed: int = 0, n: int = 24, classes: int = 6, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    labels = torch.arange(classes).repeat(n // classes)
    return emb, labels, g


def test_registry_lists_every_method_of_the_issue() -> None:
    assert set(METHODS) == {
        "mcl", "contrastive", "ms", "circle", "fastap", "nsoftmax", "proxynca", "proxyanchor", "softtriple",
        "smooth-proxyanchor", "coteaching", "coteaching-plus", "coteaching-t", "fcorrection",
    }  # fmt: skip
    assert {m.kind for m in METHODS.values()} == {"pair", "proxy", "classification"}
    assert [m.name for m in METHODS.values() if not m.filters] == [
        "smooth-proxyanchor", "coteaching", "coteaching-plus", "coteaching-t", "fcorrection"
    ]  # fmt: skip


@pytest.mark.parametrize("name", sorted(PML))
def test_library_methods_equal_the_library(name: str) -> None:
    emb, labels, g = _batch(1)
    ours = build_method(name, _context())
    theirs = PML[name](6, 8)
    theirs.load_state_dict(ours.loss.state_dict())  # the same proxies
    keep = torch.rand(24, generator=g) > 0.3
    assert torch.allclose(ours(emb, labels, torch.ones(24, dtype=torch.bool)), theirs(emb, labels), atol=1e-6)
    assert torch.allclose(ours(emb, labels, keep), theirs(emb[keep], labels[keep]), atol=1e-6)
    assert METHODS[name].uses == f"pytorch_metric_learning.losses.{type(theirs).__name__}"


def test_proxy_learning_rates_follow_each_paper() -> None:
    rates = {n: METHODS[n].proxy_lr(1e-4) for n in ("proxyanchor", "proxynca", "softtriple", "nsoftmax", "ms")}
    # Proxy-Anchor: its authors' 100x; the PRISM authors' noXBM baselines: their CENTER_LR 0.1
    assert rates == {"proxyanchor": pytest.approx(1e-2), "proxynca": 0.1, "softtriple": 0.1,
                     "nsoftmax": 0.1, "ms": None}  # fmt: skip


def test_forget_rate_ramps_linearly_then_stays() -> None:
    assert [forget_rate(t, 0.5, 10) for t in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]


def test_coteaching_exchange_trains_each_network_on_the_others_small_loss_samples() -> None:
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 4, (10,), generator=g)
    logits_a, logits_b = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    rate = 0.3
    loss, pick_a, pick_b = exchange(logits_a, logits_b, labels, rate)
    ce_a = F.cross_entropy(logits_a, labels, reduction="none")
    ce_b = F.cross_entropy(logits_b, labels, reduction="none")
    assert len(pick_a) == len(pick_b) == 7  # int((1 - 0.3) * 10)
    assert set(pick_a.tolist()) == set(sorted(range(10), key=lambda i: ce_a[i].item())[:7])
    assert set(pick_b.tolist()) == set(sorted(range(10), key=lambda i: ce_b[i].item())[:7])
    assert torch.allclose(loss, ce_a[pick_b].mean() + ce_b[pick_a].mean())
    assert small_loss(ce_a, 0.99).tolist() == [int(ce_a.argmin())]  # at least one sample


def test_coteaching_applies_the_scheduled_rate_and_plus_trains_on_disagreement() -> None:
    method = build_method("coteaching", _context(rate=0.5))
    assert isinstance(method, CoTeaching) and method.partner is not None and method.ramp == 100  # 10 epochs
    g = torch.Generator().manual_seed(2)
    feats, labels = torch.randn(20, 16, generator=g), torch.randint(0, 6, (20,), generator=g)
    logits_a, logits_b = method.head_a(feats[:, :8]), method.head_b(feats[:, 8:])
    for it in (0, 50, 100):
        expected, _, _ = exchange(logits_a, logits_b, labels, 0.5 * min(it / 100, 1))
        assert torch.allclose(method(feats, labels, torch.ones(20, dtype=torch.bool), None, it), expected)
    plus = build_method("coteaching-plus", _context(rate=0.5))
    assert plus.init == 10
    logits_a, logits_b = plus.head_a(feats[:, :8]), plus.head_b(feats[:, 8:])
    differ = logits_a.argmax(1) != logits_b.argmax(1)
    assert 0 < int(differ.sum()) < 20
    expected, _, _ = exchange(logits_a[differ], logits_b[differ], labels[differ], 0.5 * 0.5)
    assert torch.allclose(plus(feats, labels, torch.ones(20, dtype=torch.bool), None, 50), expected)


def test_fcorrection_with_identity_is_cross_entropy_and_symmetric_matches_hand_computation() -> None:
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(12, 5, generator=g), torch.randint(0, 5, (12,), generator=g)
    assert torch.allclose(corrected_loss(logits, labels, torch.eye(5)), F.cross_entropy(logits, labels), atol=1e-6)
    # by hand: C = 3, R = 0.3 -> T = [[.7, .15, .15], ...]; logits (1, 0, 0), noisy label 1
    e = math.e
    p = [e / (e + 2), 1 / (e + 2), 1 / (e + 2)]
    q1 = 0.15 * p[0] + 0.7 * p[1] + 0.15 * p[2]
    got = corrected_loss(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1]), symmetric_transition(3, 0.3))
    assert got.item() == pytest.approx(-math.log(q1), rel=1e-6)
    assert torch.allclose(symmetric_transition(3, 0.3).sum(1), torch.ones(3))


def test_transition_estimate_reads_the_anchor_points() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    assert torch.equal(estimate_transition(probs, percentile=None), probs[[0, 2]])
    # the 97th percentile ("higher") of each column is its maximum here: the runner-up becomes the anchor
    assert torch.equal(estimate_transition(probs), probs[[1, 3]])


def test_fcorrection_switches_to_the_estimated_matrix_after_its_first_stage() -> None:
    method = build_method("fcorrection", _context(warmup=3))
    feats = torch.randn(30, 8, generator=torch.Generator().manual_seed(0))
    method.stage(2, lambda: (feats, None))
    assert not bool(method.corrected)
    method.stage(3, lambda: (feats, None))
    assert bool(method.corrected)
    expected = estimate_transition(F.softmax(method.head(feats), dim=1))
    assert torch.allclose(method.transition, expected)


def test_smooth_proxy_anchor_with_full_confidence_is_proxy_anchor() -> None:
    emb, labels, g = _batch(4)
    theirs = losses.ProxyAnchorLoss(6, 8, margin=0.1, alpha=32)
    with torch.no_grad():  # seeded proxies (the library draws them from the global generator)
        theirs.proxies.copy_(torch.randn(6, 8, generator=g))
    emb[0] = F.normalize(theirs.proxies[0].detach(), dim=0)  # sample 0 sits on its own proxy
    ones = torch.ones(24)
    assert torch.allclose(smooth_proxy_anchor(emb, theirs.proxies, labels, ones), theirs(emb, labels), atol=1e-5)
    # an unconfident sample is a negative of its own proxy: on it, its negative term exp(32 * 1.1) dominates
    half = ones.clone()
    half[0] = 0.0
    assert abs(smooth_proxy_anchor(emb, theirs.proxies, labels, half).item() - theirs(emb, labels).item()) > 1.0


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_20_iterations_on_digits(name: str, noisy_digits: str, tmp_path: Path) -> None:
    config = TrainConfig(
        dataset=noisy_digits, method=name, iterations=20, warmup=8, classes_per_batch=5, samples_per_class=4,
        eval_every=10, out=str(tmp_path / name),
    )  # fmt: skip
    summary = train(config, progress=False)
    saved = json.loads((tmp_path / name / "summary.json").read_text())
    assert saved["method"] == name and saved["iterations"] == 20 and saved == json.loads(json.dumps(summary))
    assert saved["filter"] == ("prism" if METHODS[name].filters else "none")
    assert 0.0 <= saved["test"]["precision_at_1"] <= 1.0


def test_bad_choices_fail_before_training(noisy_digits: str, runner, tmp_path: Path) -> None:
    with pytest.raises(NoisekitError, match="--method must be one of"):
        TrainConfig(method="arcface")
    with pytest.raises(NoisekitError, match="--filter must be one of"):
        TrainConfig(filter="oracle")
    with pytest.raises(NoisekitError, match="coteaching chooses its samples itself"):
        TrainConfig(method="coteaching", filter="prism")
    with pytest.raises(NoisekitError, match="disagree"):
        load_config(None, {"prism": False, "filter": "prism"})
    assert load_config(None, {"loss": "ms", "prism": False}).filter == "none"  # the older names
    manifest = read_manifest(resolve_manifest(noisy_digits))
    save_variant(manifest.replace(variant="small_cluster-0.5", noise={"model": "small_cluster", "requested_rate": 0.5}))
    out = tmp_path / "fc"
    result = runner.invoke(
        app, ["train", "--dataset", "digits/small_cluster-0.5", "--method", "fcorrection", "--out", str(out)]
    )
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "open-set" in result.output
    assert not out.exists()


def test_fcorrection_accepts_closed_set_noise_once_validation_classes_are_carved(home: Path) -> None:
    """Carving validation classes by noisy label leaves clean labels of the carved classes in the training split:
    the open-set test reads the whole training split, so symmetric noise stays closed-set (a grid stopped on it)."""
    clean = build("omniglot")[1].manifest
    noisy = symmetric(clean, rate=0.2, seed=0)
    save_variant(noisy)
    save_variant(noisy.replace(variant="small_cluster-0.2", noise={"model": "small_cluster", "requested_rate": 0.2}))
    config = TrainConfig(dataset="omniglot/symmetric-0.2", method="fcorrection", arch="small_cnn")
    data = prepare(config.dataset, val_fraction=config.val_fraction, seed=0)
    config = resolve(config, data.shape)
    carved = data.train.clean
    assert len(np.unique(carved)) == 136 > data.num_classes  # every clean class is still there after the carve
    assert not open_set(noisy) and not method_context(config, data).open_set
    assert isinstance(build_method("fcorrection", method_context(config, data)), ForwardCorrection)
    assert open_set(read_manifest(resolve_manifest("omniglot/small_cluster-0.2")))
    assert not open_set(clean)


def test_methods_command_lists_the_registry(runner) -> None:
    result = runner.invoke(app, ["methods", "--json"])
    rows = json.loads(result.output)
    assert result.exit_code == 0 and [r["name"] for r in rows] == list(METHODS)
    assert set(rows[0]) == {"name", "kind", "reference", "uses", "filter"}


def test_methods_table_parses_back(runner) -> None:
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # columns sized from their content: two spaces at least between any two, so a split on them gives the rows back
    parsed = [re.split(r" {2,}", line.rstrip()) for line in lines]
    assert parsed[0] == ["method", "kind", "filter", "uses", "reference"]
    expected = [[m.name, r["kind"], "yes" if r["filter"] else "no", r["uses"], r["reference"]]
                for m, r in zip(METHODS.values(), (m.row() for m in METHODS.values()), strict=True)]  # fmt: skip
    assert parsed[1:] == expected

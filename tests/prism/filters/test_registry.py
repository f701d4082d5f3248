"""The filter registry through the CLI (``prism filters``, bad combinations) and ProxySim's class similarities."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from cli_checks import one_line_error
from pytorch_metric_learning import losses

from prism.cli import app
from prism.filters import FILTERS
from prism.filters.proxysim import ProxySimFilter
from prism.memory import FeatureBank
from prism.methods.pml import KeptLoss


def test_prism_filters_lists_the_registry(runner) -> None:
    result = runner.invoke(app, ["filters", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert list(rows) == ["none", "prism", "batch-positive", "memory-positive", "vmf", "proxysim", "knn"]
    assert rows["knn"]["rate"] == "not needed" and rows["prism"]["rate"] == "R or auto"
    table = runner.invoke(app, ["filters"]).output.splitlines()
    assert len(table) == len(FILTERS) + 1 and table[0].split()[:2] == ["filter", "rate"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--filter", "proxysim"], "--filter proxysim needs a method with proxies"),
        (["--filter", "batch-positive", "--filter-rate", "auto"], "--filter-rate auto: batch-positive has no class"),
        (["--filter", "median"], "--filter must be one of none, prism"),
        (["--filter-rate", "most"], "filter_rate must be a number, got 'most'"),
        (["--method", "coteaching", "--filter", "knn"], "coteaching chooses its samples itself"),
    ],
)
def test_bad_filter_options_are_one_line(runner, noisy_digits: str, tmp_path, args: list[str], needle: str) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", noisy_digits, *args, "--iterations", "2", "--out", str(out)])
    one_line_error(result, needle)
    assert not out.exists()


def test_proxysim_scores_are_the_losses_class_similarities() -> None:
    """ProxyAnchor: cosine to each proxy; SoftTriple: pytorch-metric-learning's own relaxed similarity (its loss on a
    batch equals the loss recomputed from our similarities)."""
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(12, 16, generator=g), dim=1)
    anchor = KeptLoss(losses.ProxyAnchorLoss(5, 16))
    expected = F.normalize(feats, dim=1) @ F.normalize(anchor.loss.proxies, dim=1).T
    assert torch.allclose(anchor.class_similarity(feats), expected, atol=1e-6)
    triple = KeptLoss(losses.SoftTripleLoss(5, 16, centers_per_class=3, la=20, gamma=0.1, margin=0.01))
    sims = triple.class_similarity(feats)
    labels = torch.randint(0, 5, (12,), generator=g)
    margin = torch.zeros_like(sims).scatter_(1, labels.view(-1, 1), 0.01)
    ours = F.cross_entropy(20 * (sims - margin), labels)
    reg_free = losses.SoftTripleLoss(5, 16, centers_per_class=3, la=20, gamma=0.1, margin=0.01)
    reg_free.fc = triple.loss.fc
    theirs = reg_free.compute_loss(feats, labels, None, feats, labels)["loss"]["losses"].mean()
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_proxysim_flags_the_samples_far_from_their_proxy() -> None:
    method = KeptLoss(losses.ProxyAnchorLoss(4, 8))
    with torch.no_grad():
        method.loss.proxies.copy_(torch.eye(4, 8) * 3)
    feats = F.normalize(torch.eye(4, 8).repeat(4, 1) + 0.01, dim=1)
    true = torch.arange(4).repeat(4)
    given = true.clone()
    given[:4] = (true[:4] + 1) % 4  # a quarter mislabelled
    sel = ProxySimFilter(method, rate=0.25, window=1)(feats, given, FeatureBank(1, 8))
    assert (~sel.keep).nonzero().view(-1).tolist() == [0, 1, 2, 3] and torch.equal(sel.likely, true)

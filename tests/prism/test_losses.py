"""The masked memory contrastive loss equals pytorch-metric-learning's ContrastiveLoss on the same pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.reducers import SumReducer

from prism.memory import FeatureBank
from prism.methods.mcl import MemoryContrastiveLoss


def _pml() -> losses.ContrastiveLoss:
    return losses.ContrastiveLoss(pos_margin=1, neg_margin=0.5, distance=CosineSimilarity(), reducer=SumReducer())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mcl_equals_pml_contrastive(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(24, 16, generator=g), dim=1)
    labels = torch.randint(0, 5, (24,), generator=g)
    bank = FeatureBank(40, 16)
    bank.enqueue(F.normalize(torch.randn(30, 16, generator=g), dim=1), torch.randint(0, 5, (30,), generator=g))
    keep = torch.ones(24, dtype=torch.bool)
    ours = MemoryContrastiveLoss()(emb, labels, keep, bank)
    valid = bank.labels >= 0
    ref = _pml()(emb, labels) + _pml()(emb, labels, ref_emb=bank.feats[valid], ref_labels=bank.labels[valid])
    assert torch.allclose(ours, ref / 24, atol=1e-5)


def test_mcl_mask_equals_loss_on_kept_subset() -> None:
    g = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(20, 8, generator=g), dim=1).requires_grad_()
    labels = torch.randint(0, 4, (20,), generator=g)
    keep = torch.rand(20, generator=g) > 0.4
    bank = FeatureBank(16, 8)
    bank.enqueue(F.normalize(torch.randn(16, 8, generator=g), dim=1), torch.randint(0, 4, (16,), generator=g))
    loss = MemoryContrastiveLoss()(emb, labels, keep, bank)
    valid = bank.labels >= 0
    ref = _pml()(emb[keep], labels[keep]) + _pml()(
        emb[keep], labels[keep], ref_emb=bank.feats[valid], ref_labels=bank.labels[valid]
    )
    assert torch.allclose(loss, ref / keep.sum(), atol=1e-5)
    loss.backward()
    assert (emb.grad[~keep] == 0).all() and emb.grad[keep].abs().sum() > 0  # flagged samples get no gradient

"""``mcl``: the memory contrastive loss (Wang et al., XBM, CVPR 2020), the loss PRISM is built on. Written here in
masked form so that a filter's keep-mask applies without a host synchronisation; without a mask its batch and bank
sums equal pytorch-metric-learning's ContrastiveLoss (cosine, pos_margin 1, neg_margin 0.5) with a SumReducer over
batch pairs and over batch-to-bank pairs (tested). The ``contrastive`` method of the comparison is the library's
ContrastiveLoss with its default AvgNonZeroReducer (the mean over pairs with a non-zero loss), not this sum: the
XBM and PRISM authors' contrastive loss is the pair sum divided by the batch size (research-xbm
ret_benchmark/losses/contrastive_loss.py), which ``mcl`` without a bank is."""

from __future__ import annotations

import torch

from prism.memory import FeatureBank
from prism.methods.base import Context, Method

MARGIN = 0.5


def contrastive_terms(
    emb: torch.Tensor,
    labels: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    anchor_mask: torch.Tensor,
    ref_mask: torch.Tensor,
    *,
    exclude_self: bool,
) -> torch.Tensor:
    """Sum over anchor/reference pairs of (1 - s) for positives and [s - margin]_+ for negatives (cosine s)."""
    sims = emb @ ref.T
    same = labels.view(-1, 1) == ref_labels.view(1, -1)
    pairs = anchor_mask.view(-1, 1) & ref_mask.view(1, -1)
    if exclude_self:
        pairs = pairs & ~torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    pos = (1 - sims) * (same & pairs)
    neg = torch.relu(sims - MARGIN) * (~same & pairs)
    return pos.sum() + neg.sum()


class MemoryContrastiveLoss(Method):
    """Contrastive loss over the kept batch samples and over (kept sample, bank entry) pairs.

    ``norm="kept"`` (ours): both sums divided by the number of kept anchors, so the loss scale does not shrink when
    PRISM drops half the batch. ``norm="authors"`` (ret_benchmark/losses/memory_contrastive_loss_w_PRISM.py and
    engine/trainer.py): the batch sum divided by the kept count, the bank sum by the full batch size; and with
    ``self_in_bank`` (the authors' plain MCL, which enqueues the batch before its loss) the bank term also pairs the
    batch with itself, self-pairs excluded.
    """

    uses_bank = True

    def __init__(self, memory_weight: float = 1.0, *, norm: str = "kept", self_in_bank: bool = False) -> None:
        super().__init__()
        if norm not in ("kept", "authors"):
            raise ValueError(f"norm must be kept or authors, got {norm!r}")
        self.memory_weight, self.norm, self.self_in_bank = memory_weight, norm, self_in_bank

    def forward(
        self,
        emb: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        bank: FeatureBank | None = None,
        iteration: int = 0,
    ) -> torch.Tensor:
        n_kept = keep.sum().clamp(min=1)
        batch = contrastive_terms(emb, labels, emb, labels, keep, keep, exclude_self=True)
        if bank is None:
            return batch / n_kept
        memory = contrastive_terms(emb, labels, bank.feats, bank.labels, keep, bank.labels >= 0, exclude_self=False)
        if self.norm == "kept":
            return (batch + self.memory_weight * memory) / n_kept
        if self.self_in_bank:
            memory = memory + batch
        return batch / n_kept + self.memory_weight * memory / len(labels)


def build(ctx: Context) -> MemoryContrastiveLoss:
    options = ctx.options  # the authors' plain MCL (no filter) enqueues the batch before its loss
    return MemoryContrastiveLoss(
        options["memory_weight"], norm=options["mcl_norm"], self_in_bank=options["filter"] == "none"
    )

"""The FIFO feature bank that PRISM queries and the memory losses use.

pytorch-metric-learning's CrossBatchMemory enqueues every sample before the loss and takes no selection mask; PRISM
needs a bank that only the kept samples enter, after the step. Everything stays on the device: a masked enqueue
writes the kept rows at consecutive slots and sends the others to a scratch row, with no host synchronisation.
"""

from __future__ import annotations

import torch


class FeatureBank:
    """``size`` (feature, label) slots; empty slots hold a zero feature and label -1.

    Slots fill from 0 upwards, then wrap around, overwriting the oldest entries first. With ``num_classes`` the bank
    also keeps each class's feature sum and count (float64), updated on every enqueue by adding the new rows and
    subtracting the evicted ones, so class means cost O(classes x dim) instead of a pass over the whole bank.
    """

    def __init__(self, size: int, dim: int, *, num_classes: int = 0, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ValueError(f"bank size must be >= 1, got {size}")
        self.size, self.dim = size, dim
        # one extra scratch row at index `size` absorbs the writes of samples that are not enqueued
        self._feats = torch.zeros(size + 1, dim, device=device)
        self._labels = torch.full((size + 1,), -1, dtype=torch.long, device=device)
        self.ptr = torch.zeros((), dtype=torch.long, device=device)
        self.count = torch.zeros((), dtype=torch.long, device=device)
        self.num_classes = num_classes
        self.class_sum = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
        self.class_count = torch.zeros(num_classes, dtype=torch.float64, device=device)

    @property
    def feats(self) -> torch.Tensor:
        """(size, dim) features; rows of empty slots are zero."""
        return self._feats[: self.size]

    @property
    def labels(self) -> torch.Tensor:
        """(size,) labels; -1 marks an empty slot."""
        return self._labels[: self.size]

    def enqueue(self, feats: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Append the rows of ``feats`` (n, dim) / ``labels`` (n,) where ``keep`` (n,) is True, oldest out first."""
        if feats.shape[0] > self.size:
            raise ValueError(f"cannot enqueue {feats.shape[0]} samples into a bank of {self.size}")
        feats = feats.detach().to(self._feats.dtype)
        if keep is None:
            keep = torch.ones(feats.shape[0], dtype=torch.bool, device=feats.device)
        offset = torch.cumsum(keep.long(), 0) - 1
        slots = torch.where(keep, (self.ptr + offset) % self.size, torch.full_like(offset, self.size))
        if self.num_classes:
            self._update_class_stats(slots, feats, labels.long(), keep)
        self._feats.index_copy_(0, slots, feats)
        self._labels.index_copy_(0, slots, labels.long())
        self._feats[self.size].zero_()
        self._labels[self.size] = -1
        added = keep.long().sum()
        self.ptr = (self.ptr + added) % self.size
        self.count = torch.clamp(self.count + added, max=self.size)

    def _update_class_stats(
        self, slots: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor
    ) -> None:
        old_labels = self._labels[slots]
        evicted = keep & (old_labels >= 0)
        old_index = old_labels.clamp(min=0)
        self.class_sum.index_add_(0, old_index, -self._feats[slots].double() * evicted.unsqueeze(1))
        self.class_count.index_add_(0, old_index, -evicted.double())
        new_index = labels.clamp(min=0)
        self.class_sum.index_add_(0, new_index, feats.double() * keep.unsqueeze(1))
        self.class_count.index_add_(0, new_index, keep.double())

    def class_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(num_classes, dim) mean feature of each class in the bank, and which classes are present."""
        present = self.class_count > 0.5
        means = self.class_sum / self.class_count.clamp(min=1).unsqueeze(1)
        return means.to(self._feats.dtype), present

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "feats": self._feats.clone(),
            "labels": self._labels.clone(),
            "ptr": self.ptr.clone(),
            "count": self.count.clone(),
            "class_sum": self.class_sum.clone(),
            "class_count": self.class_count.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["feats"].shape != self._feats.shape:
            raise ValueError(f"bank shape {tuple(state['feats'].shape)} != {tuple(self._feats.shape)}")
        device = self._feats.device
        self._feats, self._labels = state["feats"].to(device), state["labels"].to(device)
        self.ptr, self.count = state["ptr"].to(device), state["count"].to(device)
        self.class_sum, self.class_count = state["class_sum"].to(device), state["class_count"].to(device)

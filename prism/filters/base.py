"""The interface every filter implements (``prism/filters/``), as a pytorch-metric-learning miner returns indices
that a loss consumes: a filter returns a keep-mask.

Per step the training loop calls the filter on the batch's L2-normalised embeddings, labels and the feature bank
(before the step's samples enter it) and gets a :class:`~prism.selection.Selection`; after the kept samples (or, for
a filter with ``enqueue_all``, every sample) entered the bank it calls :meth:`Filter.update`.
"""

from __future__ import annotations

import abc

import torch

from prism.filters.rate import Rate
from prism.memory import FeatureBank
from prism.selection import Selection


class Filter(abc.ABC):
    """A selection criterion with its state. ``rate`` is the cut's R (``Rate``: fixed or ``auto``)."""

    enqueue_all = False  # the bank holds every sample, not only the kept ones (kNN: the whole previous epoch)
    rate: Rate

    @abc.abstractmethod
    def __call__(self, feats: torch.Tensor, labels: torch.Tensor, bank: FeatureBank) -> Selection:
        """The batch's selection; ``feats`` (n, d) L2-normalised, ``labels`` (n,)."""

    def update(self, bank: FeatureBank, labels: torch.Tensor, keep: torch.Tensor) -> None:  # noqa: B027 (a hook)
        """After the step's samples entered the bank (PRISM refreshes the kept classes' centres here)."""

    def own_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027 (a hook)
        """Restore :meth:`own_state`."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.own_state(), **{f"rate.{k}": v for k, v in self.rate.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.load_own_state({k: v for k, v in state.items() if not k.startswith("rate.")})
        self.rate.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("rate.")})

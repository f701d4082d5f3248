"""The interface every method implements, and the parts they share.

A method owns its loss, any parameters of its own (proxies, classifiers), a second network where it trains two
(Co-teaching) and its state; the training loop (``prism/train.py``) owns the embedding network, the batches, the
filter and the bank. Per step the loop embeds the batch, asks the filter (if any) for a keep-mask and calls the
method on ``(emb, labels, keep, bank, iteration)``; the method returns the loss.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from noisekit.manifest import Manifest
from prism.memory import FeatureBank


@dataclass(frozen=True)
class Context:
    """What a method may read when it is built: the run's options and the training data's shape."""

    num_classes: int  # size of the training label space
    embed_dim: int
    seed: int
    iterations: int
    warmup: int  # the loop's warm-up (a two-stage method's first stage when it has no length of its own)
    batch_size: int
    train_images: int
    rate: float | str  # the filter or forget rate R, or "auto"
    options: dict[str, Any]  # every option of the run (TrainConfig.to_dict())
    noise: dict[str, Any] | None  # the variant's noise record (None: clean or unknown)
    open_set: bool = False  # the labels are open-set noise (see open_set below)

    @property
    def first_stage(self) -> int:
        """Iterations of a two-stage method's first stage: the warm-up, or a quarter of the run without one."""
        return self.warmup or max(1, self.iterations // 4)


def open_set(manifest: Manifest) -> bool:
    """Whether a variant's labels are open-set noise: Small Cluster, or fewer label classes than clean classes in
    its training split (some classes dissolved into others, as the authors' Small Cluster lists are). Read on the
    whole training split: the validation classes carved from it later would make any noisy split look open-set."""
    if manifest.meta.noise is None:
        return False
    train = manifest.split("train")
    clean = train["clean_label"]
    return manifest.meta.noise.get("model") == "small_cluster" or train["label"].nunique() < clean[clean >= 0].nunique()


@dataclass(frozen=True)
class MethodSpec:
    """One row of ``prism methods``."""

    name: str
    kind: str  # pair, proxy or classification
    reference: str
    uses: str  # the pytorch-metric-learning class, or "own"
    filters: bool  # whether a filter (PRISM, batch-positive, memory-positive) may choose its samples
    build: Callable[[Context], Method]
    proxy_lr: Callable[[float], float | None] = lambda lr: None  # its own parameters' rate from the backbone's
    normalized: bool = True  # False: the network outputs the raw features before the classifier

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "reference": self.reference,
            "uses": self.uses,
            "filter": self.filters,
        }


class Method(nn.Module, abc.ABC):
    """A loss over one step's (gathered) embeddings. Subclasses set ``uses_bank`` when their loss reads the bank and
    ``second`` when they train a second network (its output is concatenated to the first's, column-wise)."""

    uses_bank = False
    report_key: str | None = None  # the key of ``report()`` in summary.json (None: the method reports nothing)

    @property
    def partner(self) -> nn.Module | None:
        """The second network (the submodule ``second``), if the method trains one."""
        return self._modules.get("second")

    @abc.abstractmethod
    def forward(
        self,
        emb: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        bank: FeatureBank | None = None,
        iteration: int = 0,
    ) -> torch.Tensor:
        """The step's loss; ``keep`` is the filter's mask (all True without one)."""

    def stage(self, iteration: int, features: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Called before every step; ``features()`` embeds the training split (raw features, labels) with the
        current network. Two-stage methods switch stage here."""

    def observe(self, noisy: torch.Tensor) -> None:
        """Called after every step's loss with the batch's noise flags (1 noisy, 0 clean, -1 unknown), for methods
        that count what their weighting did (Smooth Proxy-Anchor)."""

    def report(self, labels: np.ndarray, clean: np.ndarray) -> dict[str, Any]:
        """What the method records in ``summary.json`` under ``report_key``, given the training split's labels and
        clean labels (-1 unknown)."""
        return {}

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the networks (classifiers, proxies): they see the gathered global batch."""
        second = {id(p) for p in self.partner.parameters()} if self.partner is not None else set()
        return [p for p in self.parameters() if id(p) not in second]

    def proxy_parameters(self) -> list[nn.Parameter]:
        """The parameters trained at ``--proxy-lr`` without weight decay (proxies, class centres)."""
        return []

    def rate_estimate(self) -> torch.Tensor:
        """() the forget rate a method that selects its samples itself cuts at now (Co-teaching); NaN: none."""
        return torch.tensor(float("nan"))

    def class_similarity(self, feats: torch.Tensor) -> torch.Tensor | None:
        """(n, C) similarity of each sample to each class's learned proxy (``--filter proxysim``); None: no proxies."""
        return None


class Twin(nn.Module):
    """Two networks trained side by side (Co-teaching): their outputs concatenated column-wise."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first(x), self.second(x)], dim=1)

"""What the classification baselines share: a classifier over the training labels on the network's raw features
(retrieval uses those features L2-normalised, the layer before the classifier, as the PRISM paper evaluates them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """Linear logits, or with ``temperature`` the normalised softmax of Zhai and Wu (2019): cosine between the
    L2-normalised feature and class weight, divided by the temperature."""

    def __init__(self, dim: int, num_classes: int, temperature: float | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.linear = nn.Linear(dim, num_classes, bias=temperature is None)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.temperature is None:
            return self.linear(features)
        return F.normalize(features, dim=1) @ F.normalize(self.linear.weight, dim=1).T / self.temperature


def epochs_to_iterations(epochs: float, images: int, batch_size: int, iterations: int) -> int:
    """``epochs`` passes over ``images`` in batches of ``batch_size``, at most the run's length."""
    return max(1, min(iterations, round(epochs * images / batch_size)))

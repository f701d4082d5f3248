"""F-correction: forward loss correction (Patrini et al., CVPR 2017), written here.

The classifier's clean-class probabilities p(y | x) are mapped to noisy-label probabilities through the transition
matrix T (T[i, j] = p(noisy j | clean i)) before the log loss: loss = -log((p^T T)[noisy label]). T is estimated
from a first-stage model trained with plain cross-entropy (``--transition estimate``): for each class i the anchor
point is the training image with the highest p(i | x), after discarding the images at or above the 97th percentile
of p(i | x) (the authors' ``filter_outlier``: giorgiop/loss-correction, models.py NoiseEstimator.fit; on in
their experiment.py for every dataset but CIFAR-100), and row i of T is that image's
predicted distribution. The first stage is the run's warm-up, or a quarter of the run when there is none; the
second stage continues from the first stage's weights (the authors retrain from scratch; here the second stage
would then get fewer iterations than every other method). ``--transition known`` uses the symmetric-noise matrix
of the variant's realised rate, (1 - R) on the diagonal and R / (C - 1) elsewhere, from the first step.

Open-set noise (Small Cluster) has no transition matrix over the training classes (the paper: T is undefined there):
such variants are refused before training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from noisekit.errors import NoisekitError
from prism.memory import FeatureBank
from prism.methods.base import Context, Method
from prism.methods.classify import Classifier

PERCENTILE = 97.0


def corrected_loss(logits: torch.Tensor, labels: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    """Mean of -log((softmax(logits) @ T)[label])."""
    noisy = F.softmax(logits, dim=1) @ transition
    return F.nll_loss(torch.log(noisy.clamp(min=1e-12)), labels)


def symmetric_transition(num_classes: int, rate: float) -> torch.Tensor:
    off = rate / (num_classes - 1)
    return torch.full((num_classes, num_classes), off) + torch.eye(num_classes) * (1.0 - rate - off)


def estimate_transition(probs: torch.Tensor, percentile: float | None = PERCENTILE) -> torch.Tensor:
    """T from predicted probabilities (n, C): row i is the prediction of class i's anchor point (the image with the
    highest p(i | x), those at or above the ``percentile``-th percentile of p(i | x) discarded when given)."""
    scores = probs.clone()
    if percentile is not None:
        # numpy's percentile(..., interpolation="higher"): the smallest value with at least that share at or below
        threshold = torch.quantile(probs, percentile / 100.0, dim=0, interpolation="higher")
        scores[scores >= threshold] = 0.0
    return probs[scores.argmax(dim=0)]


class ForwardCorrection(Method):
    def __init__(self, ctx: Context) -> None:
        super().__init__()
        if ctx.open_set:
            raise NoisekitError(
                "--method fcorrection: the labels are open-set (Small Cluster) noise, for which no transition "
                "matrix over the training classes exists; choose another method"
            )
        self.head = Classifier(ctx.embed_dim, ctx.num_classes)
        self.register_buffer("transition", torch.eye(ctx.num_classes))
        self.register_buffer("corrected", torch.tensor(False))
        if ctx.options["transition"] == "known":
            if ctx.noise is None or ctx.noise.get("model") != "symmetric":
                raise NoisekitError(
                    "--transition known: needs a symmetric-noise variant (its rate gives the matrix); "
                    "use --transition estimate"
                )
            self.transition.copy_(symmetric_transition(ctx.num_classes, float(ctx.noise["realised_rate"])))
            self.corrected.fill_(True)
        self.switch = ctx.first_stage

    @torch.no_grad()
    def stage(self, iteration: int, features: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> None:
        if iteration != self.switch or bool(self.corrected):
            return
        feats, _ = features()
        probs = F.softmax(self.head(feats.to(self.transition.device)), dim=1)
        self.transition.copy_(estimate_transition(probs))
        self.corrected.fill_(True)

    def forward(
        self,
        emb: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        bank: FeatureBank | None = None,
        iteration: int = 0,
    ) -> torch.Tensor:
        logits = self.head(emb)
        if not bool(self.corrected):
            return F.cross_entropy(logits, labels)
        return corrected_loss(logits, labels, self.transition)

"""Co-teaching (Han et al., NeurIPS 2018), Co-teaching+ (Yu et al., ICML 2019) and Co-teaching with a temperature
(the normalised softmax of Zhai and Wu, 2019, as the PRISM paper's "Co-teaching w/ T"), written here: no maintained
PyTorch implementation exists.

Two networks of the same architecture and different initialisation classify the training labels. In each step each
network ranks the batch by its own cross-entropy and keeps the 1 - R(t) smallest; network A trains on B's pick and B
on A's. R(t) = tau * min(t / T_k, 1) (the original code's linear ramp over its first ``num_gradual`` = 10 epochs),
tau = the forget rate (``--filter-rate``: the papers set it to the noise rate; ``auto``: estimated from network A's
logits over the last 30 batches, prism/filters/rate.py). Co-teaching+ first trains as
Co-teaching for the first tenth of the run (the authors' CIFAR-10 ``init_epoch``: 20 of 200 epochs), then only on
the samples whose two predictions disagree, each network keeping the (1 - R(t)) share of those with the smallest
loss. With no disagreement in a batch the step trains nothing. The authors' ``loss_coteaching_plus``
(xingruiyu/coteaching_plus loss.py, the ``else`` branch and ``_update_step = np.logical_or(logical_disagree_id,
step < 5000)``) trains the whole batch with plain cross-entropy in that case while the global step is below 5,000,
and nothing after; their main.py calls it only from ``init_epoch`` on, which on CIFAR-10 (20 epochs x 391 batches =
7,820 steps) is already past 5,000, so in their CIFAR-10 run too an agreeing batch takes a zero step. Scaled to a
share of the run (5,000 of 78,200 steps = 6.4%), the window lies inside our Co-teaching phase (the first 10%), so
the whole-batch branch never fires here either. They also apply softmax twice and divide the mean loss by the count
again, which is not copied.

Optimiser (a stated deviation): the originals train with Adam at 1e-3, no weight decay, batches of 128, the
learning rate decayed linearly and Adam's beta1 moved from 0.9 to 0.1 over the last epochs (Co-teaching's main.py
``adjust_learning_rate``). Here every method trains under the one shared protocol (Adam at ``--lr``, weight decay
``--weight-decay``, cosine annealing, P x K batches), so the comparison varies the loss alone; pass
``--lr 1e-3 --weight-decay 0`` for their rate and decay.
Network A is the one evaluated and saved as the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prism.filters.rate import RateEstimator
from prism.memory import FeatureBank
from prism.methods.base import Context, Method
from prism.methods.classify import Classifier, epochs_to_iterations
from prism.models import build_model

RAMP_EPOCHS = 10  # T_k: Co-teaching's num_gradual (10 of 200 epochs); Co-teaching+ keeps it
PLUS_INIT_SHARE = 0.1  # Co-teaching+ trains as Co-teaching this share of the run before disagreement starts
TEMPERATURE = 0.05  # Zhai and Wu's normalised softmax


def forget_rate(iteration: int, rate: float, ramp: int) -> float:
    """R(t): 0 at the first step, growing linearly to ``rate`` at ``ramp`` iterations, then constant."""
    return rate * min(iteration / ramp, 1.0)


def small_loss(losses: torch.Tensor, rate: float) -> torch.Tensor:
    """Indices of the int((1 - rate) * n) smallest losses (at least one), smallest first (the original code's
    ``num_remember``)."""
    keep = max(1, int((1.0 - rate) * len(losses)))
    return torch.argsort(losses.detach(), stable=True)[:keep]


def exchange(
    logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, rate: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Co-teaching step: (loss, A's pick, B's pick); A's loss is over B's pick and B's over A's."""
    loss_a = F.cross_entropy(logits_a, labels, reduction="none")
    loss_b = F.cross_entropy(logits_b, labels, reduction="none")
    pick_a, pick_b = small_loss(loss_a, rate), small_loss(loss_b, rate)
    return loss_a[pick_b].mean() + loss_b[pick_a].mean(), pick_a, pick_b


class CoTeaching(Method):
    def __init__(self, ctx: Context, *, plus: bool = False, temperature: float | None = None) -> None:
        super().__init__()
        options = ctx.options
        self.second = build_model(
            options["arch"],
            embed_dim=ctx.embed_dim,
            weights=options["weights"],
            seed=ctx.seed + 1,  # the two networks must start apart
            pooling=options["pooling"],
            normalize=False,
            freeze_bn=bool(options.get("freeze_bn")),
        )
        self.head_a = Classifier(ctx.embed_dim, ctx.num_classes, temperature)
        self.head_b = Classifier(ctx.embed_dim, ctx.num_classes, temperature)
        self.rate, self.plus, self.dim = ctx.rate, plus, ctx.embed_dim
        if ctx.rate == "auto":
            self.estimator = RateEstimator()
        self.ramp = epochs_to_iterations(RAMP_EPOCHS, ctx.train_images, ctx.batch_size, ctx.iterations)
        self.init = round(PLUS_INIT_SHARE * ctx.iterations)

    def forward(
        self,
        emb: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        bank: FeatureBank | None = None,
        iteration: int = 0,
    ) -> torch.Tensor:
        feats_a, feats_b = emb[:, : self.dim], emb[:, self.dim :]
        logits_a, logits_b = self.head_a(feats_a), self.head_b(feats_b)
        rate = forget_rate(iteration, self.tau(logits_a, labels), self.ramp)
        if self.plus and iteration >= self.init:
            disagree = logits_a.argmax(1) != logits_b.argmax(1)
            if not bool(disagree.any()):
                return (logits_a.sum() + logits_b.sum()) * 0.0  # nothing to learn from: a zero step
            logits_a, logits_b, labels = logits_a[disagree], logits_b[disagree], labels[disagree]
        loss, _, _ = exchange(logits_a, logits_b, labels, rate)
        return loss

    def tau(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        """The forget rate: the fixed one, or (auto) the estimate after counting this batch."""
        if self.rate != "auto":
            return self.rate
        present = torch.ones(logits.shape[1], dtype=torch.bool, device=logits.device)
        self.estimator.observe(logits.detach(), present, labels, torch.ones_like(labels, dtype=torch.bool))
        return float(self.estimator.value())

    def rate_estimate(self) -> torch.Tensor:
        return self.estimator.value() if self.rate == "auto" else torch.tensor(float(self.rate))

"""The values each numeric option of ``prism train`` allows, checked in TrainConfig.__post_init__ whatever set the
option (flag, --config YAML, preset, grid options, checkpoint)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The values a numeric option allows: from ``low`` to ``high``, each end included or not."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    why: str = ""

    def __contains__(self, value: float) -> bool:
        # written so that NaN is outside every range
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        why = f" ({self.why})" if self.why else ""
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}{why}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}{why}"


POSITIVE, COUNT, AT_LEAST_ONE = Range(0, low_open=True), Range(0), Range(1)
SHARE = Range(0, 1)  # [0, 1)
# every numeric option's allowed values, checked in TrainConfig.__post_init__ whatever set it (flag, --config YAML,
# preset, grid options, checkpoint); tests/prism/test_ranges.py checks that each numeric option has one
RANGES = {
    "filter_rate": SHARE,
    "window": AT_LEAST_ONE,
    "bank_start": COUNT,
    "warmup": COUNT,
    "iterations": AT_LEAST_ONE,
    "seed": COUNT,
    "embed_dim": AT_LEAST_ONE,
    "classes_per_batch": Range(2, why="metric learning needs negatives"),
    "samples_per_class": Range(2, why="pair losses need a positive per sample"),
    "lr": POSITIVE,
    "weight_decay": COUNT,
    "proxy_lr": POSITIVE,
    "crop_scale": Range(0, 1, low_open=True, high_open=False),
    "bank_size": COUNT,
    "memory_weight": COUNT,
    "val_fraction": SHARE,
    "eval_every": AT_LEAST_ONE,
    "log_every": AT_LEAST_ONE,
    "image_size": AT_LEAST_ONE,
    "workers": COUNT,
    "stop_at": COUNT,
}

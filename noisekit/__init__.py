"""noisekit: build noisy-label deep metric learning benchmarks reproducibly and publish them."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `noisekit.load` is imported on first use: importing noisekit stays light (no datasets, no torch).
    if name == "load":
        from noisekit.hub.repo import load

        return load
    raise AttributeError(f"module 'noisekit' has no attribute {name!r}")

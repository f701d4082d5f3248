"""The filters ``prism train --filter NAME`` runs, one registry (``prism filters`` prints it), as
``prism/methods/`` holds the methods. A filter returns a keep-mask that the method's loss consumes; open
``base.py`` first, then ``rate.py`` (``--filter-rate auto``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from noisekit.errors import NoisekitError
from prism.filters.base import Filter
from prism.methods.base import Method, MethodSpec

__all__ = ["FILTERS", "Filter", "FilterSpec", "build_filter", "check_filter"]


@dataclass(frozen=True)
class FilterSpec:
    """One row of ``prism filters``."""

    name: str
    reference: str
    rate: str  # what --filter-rate means to it: "R or auto", "R", or "not needed"
    applies: str  # which methods take it
    build: Callable[[int, int, Any, torch.device, Method], Filter] | None  # (classes, dim, config, device, method)
    proxies_only: bool = False

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "reference": self.reference, "rate": self.rate, "applies": self.applies}


def _prism(score: str):
    def build(classes: int, dim: int, config: Any, device: torch.device, method: Method) -> Filter:
        from prism.filters.prism import PrismSelector

        return PrismSelector(
            classes, dim, rate=config.filter_rate, window=config.window, mode=config.mode, startup=config.startup,
            score=score, device=device,
        )  # fmt: skip

    return build


def _vmf(classes: int, dim: int, config: Any, device: torch.device, method: Method) -> Filter:
    from prism.filters.vmf import VmfFilter

    return VmfFilter(classes, rate=config.filter_rate, window=config.window, device=device)


def _proxysim(classes: int, dim: int, config: Any, device: torch.device, method: Method) -> Filter:
    from prism.filters.proxysim import ProxySimFilter

    return ProxySimFilter(method, rate=config.filter_rate, window=config.window, device=device)


def _knn(classes: int, dim: int, config: Any, device: torch.device, method: Method) -> Filter:
    from prism.filters.knn import KnnFilter

    return KnnFilter(classes, device=device)


PAIR_OR_PROXY = "every method that takes a filter (pair and proxy losses)"
_SPECS = [
    FilterSpec("none", "-", "-", "every method", None),
    FilterSpec("prism", "Liu et al., CVPR 2021 (AvgSim)", "R or auto", PAIR_OR_PROXY, _prism("prism")),
    FilterSpec("batch-positive", "Liu et al., CVPR 2021, Eq. 12 (ablation)", "R", PAIR_OR_PROXY,
               _prism("batch-positive")),
    FilterSpec("memory-positive", "Liu et al., CVPR 2021, Eq. 13 (ablation)", "R or auto", PAIR_OR_PROXY,
               _prism("memory-positive")),
    FilterSpec("vmf", "Liu et al., arXiv 2108.01431 (vMF-Sim)", "R or auto", PAIR_OR_PROXY, _vmf),
    FilterSpec("proxysim", "Liu et al., arXiv 2108.01431 v1 (ProxySim)", "R or auto",
               "proxy losses: nsoftmax, proxynca, proxyanchor, softtriple", _proxysim, proxies_only=True),
    FilterSpec("knn", "Galanakis et al., VISAPP 2024", "not needed", PAIR_OR_PROXY, _knn),
]  # fmt: skip
FILTERS: dict[str, FilterSpec] = {s.name: s for s in _SPECS}


def check_filter(method: MethodSpec, name: str, rate: float | str) -> str:
    """``name`` if ``method`` can take it at ``rate``, else a one-line error naming the option."""
    if name not in FILTERS:
        raise NoisekitError(f"--filter must be one of {', '.join(FILTERS)}, got {name!r} (prism filters lists them)")
    found = FILTERS[name]
    if name != "none" and not method.filters:
        raise NoisekitError(
            f"--filter {name}: {method.name} chooses its samples itself and takes no filter; use --filter none"
        )
    if found.proxies_only and method.kind != "proxy":
        raise NoisekitError(f"--filter {name} needs a method with proxies ({found.applies}), got {method.name}")
    if rate == "auto" and found.rate == "R":
        raise NoisekitError(f"--filter-rate auto: {name} has no class scores to estimate it from; give a number")
    return name


def build_filter(name: str, classes: int, dim: int, config: Any, device: torch.device, method: Method) -> Filter:
    return FILTERS[name].build(classes, dim, config, device, method)

"""The methods ``prism train --method NAME`` runs, one registry (``prism methods`` prints it).

Pair and proxy losses are pytorch-metric-learning's (``pml.py``) or MCL (``mcl.py``) and take a filter; the
classification baselines (``coteaching.py``, ``fcorrection.py``) and Smooth Proxy-Anchor select or weight samples
themselves and take none. Open ``base.py`` first.
"""

from __future__ import annotations

from functools import partial

import torch

from noisekit.errors import NoisekitError
from prism.methods import coteaching, fcorrection, mcl, pml, smooth_proxy_anchor
from prism.methods.base import Context, Method, MethodSpec

__all__ = ["METHODS", "Context", "Method", "MethodSpec", "build_method", "check", "spec"]

LIB = "pytorch_metric_learning.losses."
# Rates of a proxy loss's own parameters. The PRISM authors train the proxies of every baseline they run through
# pytorch-metric-learning (ret_benchmark/losses/noXBM_loss.py: N.Softmax, ProxyNCA, SoftTriple) with a separate Adam
# at SOLVER.CENTER_LR 0.1 (ret_benchmark/losses/build.py returns it as optimizer_center, tools/train_net.py steps
# it), without weight decay; Proxy-Anchor's own code
# (tjddus9597/Proxy-Anchor-CVPR2020 train.py) trains its proxies at 100x the backbone's rate, which Smooth
# Proxy-Anchor, built on it, keeps.
CENTER_LR = 0.1


def _times(factor: float):
    return lambda lr: lr * factor


_SPECS = [
    MethodSpec("mcl", "pair", "Wang et al., CVPR 2020 (XBM)", "own (ContrastiveLoss with SumReducer, tested)", True,
               mcl.build),
    MethodSpec("contrastive", "pair", "Hadsell et al., CVPR 2006", LIB + "ContrastiveLoss", True,
               pml.builder("contrastive")),
    MethodSpec("ms", "pair", "Wang et al., CVPR 2019", LIB + "MultiSimilarityLoss", True, pml.builder("ms")),
    MethodSpec("circle", "pair", "Sun et al., CVPR 2020", LIB + "CircleLoss", True, pml.builder("circle")),
    MethodSpec("fastap", "pair", "Cakir et al., CVPR 2019", LIB + "FastAPLoss", True, pml.builder("fastap")),
    MethodSpec("nsoftmax", "proxy", "Zhai and Wu, BMVC 2019", LIB + "NormalizedSoftmaxLoss", True,
               pml.builder("nsoftmax"), proxy_lr=lambda lr: CENTER_LR),
    MethodSpec("proxynca", "proxy", "Movshovitz-Attias et al., ICCV 2017", LIB + "ProxyNCALoss", True,
               pml.builder("proxynca"), proxy_lr=lambda lr: CENTER_LR),
    MethodSpec("proxyanchor", "proxy", "Kim et al., CVPR 2020", LIB + "ProxyAnchorLoss", True,
               pml.builder("proxyanchor"), proxy_lr=_times(100.0)),
    MethodSpec("softtriple", "proxy", "Qian et al., ICCV 2019", LIB + "SoftTripleLoss", True,
               pml.builder("softtriple"), proxy_lr=lambda lr: CENTER_LR),
    MethodSpec("smooth-proxyanchor", "proxy", "Roig et al., arXiv 2006.05142", "own", False,
               smooth_proxy_anchor.SmoothProxyAnchor, proxy_lr=_times(100.0), normalized=False),
    MethodSpec("coteaching", "classification", "Han et al., NeurIPS 2018", "own", False,
               coteaching.CoTeaching, normalized=False),
    MethodSpec("coteaching-plus", "classification", "Yu et al., ICML 2019", "own", False,
               partial(coteaching.CoTeaching, plus=True), normalized=False),
    MethodSpec("coteaching-t", "classification", "Han et al. 2018 + Zhai and Wu 2019 (temperature 0.05)", "own",
               False, partial(coteaching.CoTeaching, temperature=coteaching.TEMPERATURE), normalized=False),
    MethodSpec("fcorrection", "classification", "Patrini et al., CVPR 2017", "own", False,
               fcorrection.ForwardCorrection, normalized=False),
]  # fmt: skip
METHODS: dict[str, MethodSpec] = {s.name: s for s in _SPECS}


def spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise NoisekitError(f"--method must be one of {', '.join(METHODS)}, got {name!r} (prism methods lists them)")
    return METHODS[name]


def check(method: str, filter_name: str | None, rate: float | str = 0.5) -> str:
    """The filter a run uses (None: prism where the method takes one, else none); a one-line error for an unknown
    method or filter, or a filter the method cannot take (``prism/filters/``)."""
    from prism.filters import check_filter

    found = spec(method)
    if filter_name is None:
        return "prism" if found.filters else "none"
    return check_filter(found, filter_name, rate)


def build_method(name: str, ctx: Context) -> Method:
    """The method's module, its own parameters initialised from the run's seed (not the global random state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        return spec(name).build(ctx)

"""prism's GPU code paths in their CPU form (issue 23): bf16 autocast, ``--compile`` and channels_last, run by hand.

``precision``: real ``prism train`` runs on digits at 50% symmetric noise (every other option derived from the data),
MCL + PRISM and FastAP, 3 seeds, ``--precision fp32`` (the peer) against ``--precision bf16``: test P@1 and MAP@R
(mean +- std). Speed is the ``steps`` part's (a run's wall time on 2 cores is mostly evaluation and start-up).

``steps``: one training step (forward, MCL loss, backward, Adam) of a backbone on a random batch of 64, eager fp32
contiguous (the peer) against bf16 autocast, channels_last and ``torch.compile`` (inductor's C++ backend): seconds per
step after warm-up, the ratio to the peer, and for compile the first (compiling) step's seconds.

    python bench/cpu_paths.py precision [--seeds 0 1 2]
    python bench/cpu_paths.py steps [--arch small_cnn efficientnet_lite0 resnet18] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from prism.config import load_config
from prism.methods.mcl import MemoryContrastiveLoss
from prism.models import build_model
from prism.train import train

SIZES = {"small_cnn": 28, "resnet18": 64, "resnet50": 64, "efficientnet_lite0": 64}  # omniglot; pretrained-cpu


def precision(args: argparse.Namespace) -> None:
    from noisekit.noise.common import save_variant
    from noisekit.noise.symmetric import symmetric
    from noisekit.sources.build import build

    _, clean = build("digits", overwrite=True)
    save_variant(symmetric(clean.manifest, rate=0.5, seed=0), overwrite=True)
    print(f"{'method':<14}{'precision':<10}{'test P@1':<18}test MAP@R")
    with tempfile.TemporaryDirectory() as tmp:
        for method, filter_ in (("mcl", "prism"), ("fastap", "none")):
            for mode in ("fp32", "bf16"):
                p1, mapr = [], []
                for seed in args.seeds:
                    options = {"dataset": "digits/symmetric-0.5", "method": method, "filter": filter_, "seed": seed,
                               "precision": mode, "out": f"{tmp}/{method}-{mode}-{seed}", "workers": 0}  # fmt: skip
                    summary = train(load_config(None, options), progress=False)
                    p1.append(100 * summary["test"]["precision_at_1"])
                    mapr.append(100 * summary["test"]["mean_average_precision_at_r"])
                print(
                    f"{method:<14}{mode:<10}{np.mean(p1):6.2f} +- {np.std(p1):5.2f}    "
                    f"{np.mean(mapr):6.2f} +- {np.std(mapr):5.2f}",
                    flush=True,
                )


def _step_time(
    arch: str, *, bf16: bool, channels_last: bool, compiled: bool, steps: int, freeze_bn: bool = False
) -> tuple[float, float]:
    """(seconds of the first step, mean seconds per step after two warm-up steps); ``freeze_bn``: BatchNorm keeps
    its statistics (a pretrained run's default), which skips the batch statistics."""
    size = SIZES[arch]
    model = build_model(arch, embed_dim=128, weights="random", seed=0, freeze_bn=freeze_bn).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    if compiled:
        model.backbone.compile()
    loss_fn = MemoryContrastiveLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8, generator=gen).to(memory_format=fmt)
    labels = torch.arange(16).repeat_interleave(4)
    keep = torch.ones(64, dtype=torch.bool)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(images)
        loss = loss_fn(emb.float(), labels, keep)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return first, (time.perf_counter() - start) / steps


def steps(args: argparse.Namespace) -> None:
    # a fresh inductor cache, so the first compiled step's time is the cold compile a new machine pays
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    print(f"CPU: {torch.get_num_threads()} threads; batch 64; MCL; Adam; {args.steps} timed steps after 2 warm-up")
    for arch in args.arch:
        _, peer = _step_time(arch, bf16=False, channels_last=False, compiled=False, steps=args.steps)
        print(f"{arch} at {SIZES[arch]} px: eager fp32 contiguous (peer) {peer * 1000:8.1f} ms/step")
        for name, kw in (
            ("bf16 autocast", {"bf16": True, "channels_last": False, "compiled": False}),
            ("channels_last", {"bf16": False, "channels_last": True, "compiled": False}),
            ("torch.compile", {"bf16": False, "channels_last": False, "compiled": True}),
        ):
            first, per = _step_time(arch, steps=args.steps, **kw)
            extra = f"; first step {first:.1f} s (compiling)" if kw["compiled"] else ""
            print(f"  {name:<14} {per * 1000:8.1f} ms/step, peer / this {peer / per:.2f}{extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("precision")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    s = sub.add_parser("steps")
    s.add_argument("--arch", nargs="+", default=["small_cnn", "efficientnet_lite0", "resnet18"], choices=sorted(SIZES))
    s.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    {"precision": precision, "steps": steps}[args.part](args)


if __name__ == "__main__":
    main()

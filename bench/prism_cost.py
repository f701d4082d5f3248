"""What PRISM costs, at SOP scale, run by hand (not by CI).

Peer: the plain memory contrastive loss (MCL) step. In one run, interleaving the variants round by round, it times
the full training step (forward, loss over batch + bank, backward, Adam, enqueue) of
  plain MCL | MCL + PRISM (centre mode) | MCL + PRISM (exact mode)
and the selection alone (P_clean, threshold, centre refresh) in centre and exact mode, on SOP's scale: 11,318
classes, a bank of 59,551 x 128, batch 64. GPU: ResNet-50 at 224 px in bf16; CPU: the small CNN at 32 px in fp32.
The paper reports PRISM / MCL = 1.058 (1,777 s vs 1,679 s on SOP) and exact / centre = 7.3 overall.

    .venv/bin/python bench/prism_cost.py [--device cuda] [--rounds 5] [--steps 10] [--throughput 300] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from prism.filters.prism import PrismSelector
from prism.memory import FeatureBank
from prism.methods.mcl import MemoryContrastiveLoss
from prism.models import build_model
from prism.selection import ThresholdWindow, exact_scores, p_clean, select


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--classes", type=int, default=11318)
    parser.add_argument("--bank", type=int, default=59551)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--throughput", type=int, default=0, help="then run this many PRISM steps for images/s")
    parser.add_argument("--compile", action="store_true", help="also time the PRISM step with a compiled backbone")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    arch, size = ("resnet50", 224) if gpu else ("small_cnn", 32)
    g = torch.Generator(device="cpu").manual_seed(0)

    model = build_model(arch, embed_dim=args.dim, weights="random", seed=0).to(device)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    compiled = None
    if args.compile:  # a second copy, compiled as prism train --compile does
        compiled = build_model(arch, embed_dim=args.dim, weights="random", seed=0).to(device)
        compiled = compiled.to(memory_format=torch.channels_last) if gpu else compiled
        compiled.backbone.compile()
        compiled_optimizer = torch.optim.Adam(compiled.parameters(), lr=1e-5)
    loss_fn = MemoryContrastiveLoss()
    bank = FeatureBank(args.bank, args.dim, num_classes=args.classes, device=device)
    fill = F.normalize(torch.randn(args.bank, args.dim, generator=g), dim=1)
    bank_labels = torch.randint(0, args.classes, (args.bank,), generator=g)
    for start in range(0, args.bank, 4096):
        bank.enqueue(fill[start : start + 4096].to(device), bank_labels[start : start + 4096].to(device))
    selectors = {
        m: PrismSelector(args.classes, args.dim, rate=0.5, window=30, mode=m, device=device)
        for m in ("centre", "exact")
    }
    everything = torch.ones(args.bank, dtype=torch.bool, device=device)
    for selector in selectors.values():
        selector.update(bank, bank.labels, everything)
    images = torch.randn(args.batch, 3, size, size, generator=g).to(device)
    if gpu:
        images = images.to(memory_format=torch.channels_last)
    # 16 classes x 4 images, as a P x K batch draws them
    labels = torch.randint(0, args.classes, (16,), generator=g).repeat_interleave(4).to(device)

    def step(mode: str | None, net: torch.nn.Module = model, opt: torch.optim.Optimizer = optimizer) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            emb = net(images).float()
        if mode is None:
            keep = torch.ones(args.batch, dtype=torch.bool, device=device)
        else:
            keep = selectors[mode](emb, labels, bank).keep
        loss = loss_fn(emb, labels, keep, bank)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bank.enqueue(emb.detach(), labels, keep)
        if mode is not None:
            selectors[mode].update(bank, labels, keep)

    def select_only(mode: str) -> None:
        sel = selectors[mode](emb_fixed, labels, bank)
        selectors[mode].update(bank, labels, sel.keep)

    def select_literal() -> None:
        """Eq. 2 literally: one matmul against the whole bank and a segment mean (exact mode's reference)."""
        scores, present = exact_scores(emb_fixed, bank, args.classes)
        select(p_clean(scores, labels, present), present[labels], present.any(), rate=0.5, window=literal_window)

    with torch.no_grad():
        emb_fixed = model(images).float()
    literal_window = ThresholdWindow(30, device=device)
    variants = {
        "plain": lambda: step(None),
        "centre": lambda: step("centre"),
        "exact": lambda: step("exact"),
        "select_centre": lambda: select_only("centre"),
        "select_exact": lambda: select_only("exact"),
        "select_literal": select_literal,
    }
    if compiled is not None:
        variants["compiled"] = lambda: step("centre", compiled, compiled_optimizer)
        start = time.perf_counter()
        variants["compiled"]()
        sync(device)
        print(f"compiling the backbone and the first compiled step: {time.perf_counter() - start:.1f} s")
    for fn in variants.values():  # warm-up: allocator, kernels
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / args.steps)
    best = {k: min(v) * 1000 for k, v in times.items()}  # the least disturbed round of each
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}; {arch} at {size}px, {'bf16' if gpu else 'fp32'}, batch {args.batch}, "
        f"bank {args.bank} x {args.dim}, {args.classes} classes; best of {args.rounds} rounds x {args.steps} steps"
    )
    for k in ("plain", "centre", "exact"):
        print(f"  step {k:<7} {best[k]:9.2f} ms")
    for k in ("select_centre", "select_exact", "select_literal"):
        print(f"  {k:<12} {best[k]:9.2f} ms")
    print(f"ratio PRISM (centre) step / plain MCL step: {best['centre'] / best['plain']:.3f}   (paper: 1.058)")
    if compiled is not None:
        print(
            f"  step compiled {best['compiled']:9.2f} ms; ratio compiled / eager PRISM step: "
            f"{best['compiled'] / best['centre']:.3f}"
        )
    print(
        f"ratio exact / centre, whole step: {best['exact'] / best['centre']:.3f}; "
        f"selection alone: {best['select_exact'] / best['select_centre']:.3f}   (paper: 7.3 overall)"
    )

    if args.throughput:
        sync(device)
        start = time.perf_counter()
        for _ in range(args.throughput):
            step("centre")
        sync(device)
        seconds = time.perf_counter() - start
        util = "n/a"
        if gpu:
            try:
                util = f"{torch.cuda.utilization(device)}%"
            except Exception:  # needs pynvml
                util = "n/a (no pynvml)"
        print(
            f"throughput: {args.throughput} PRISM steps, {args.throughput * args.batch / seconds:.1f} images/s, "
            f"GPU utilisation {util}"
        )


if __name__ == "__main__":
    main()

"""PRISM's start-up on SOP-sized data: the share of each batch kept while few classes have a centre, with our rule
(a sample whose class has no centre is kept) against the authors' (`--startup authors`: centreless classes enter
the softmax with a zero centre and the rank cut removes R of every batch).

No network: features are a fixed unit vector per class plus Gaussian noise (so P_clean ranks clean samples above
mislabelled ones once centres exist), 50% of the labels flipped uniformly, the authors' chunk sampler over SOP's
class sizes (11,318 classes of 2-12 images, 59,551 images), a bank of the training set's size, 16 x 4 batches.
Prints the kept share and the flagged precision over the first 100 steps, the rest of the first pass over the data
(a class of up to 4 images is drawn once per pass, so in the first pass most samples meet no centre of their class)
and the second pass, and the ratio ours / authors. Peer: the authors' rule, in the same run on the same batches.

    .venv/bin/python bench/startup.py [--steps 1700] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from prism.filters.prism import PrismSelector
from prism.memory import FeatureBank
from prism.samplers import ChunkBatches

CLASSES, DIM, RATE = 11318, 128, 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1700)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes = np.minimum(rng.geometric(0.25, size=CLASSES) + 1, 12)
    clean = np.repeat(np.arange(CLASSES), sizes)
    noisy = rng.random(len(clean)) < RATE
    labels = np.where(noisy, rng.integers(0, CLASSES, size=len(clean)), clean)
    noisy &= labels != clean
    g = torch.Generator().manual_seed(args.seed)
    centres = F.normalize(torch.randn(CLASSES, DIM, generator=g), dim=1)
    feats = F.normalize(centres[torch.as_tensor(clean)] + 0.08 * torch.randn(len(clean), DIM, generator=g), dim=1)
    sampler = ChunkBatches(labels, p=16, k=4, seed=args.seed, start=0, stop=args.steps)
    runs = {}
    for startup in ("ours", "authors"):
        selector = PrismSelector(CLASSES, DIM, rate=RATE, window=30, startup=startup)
        bank = FeatureBank(len(labels), DIM, num_classes=CLASSES)
        kept, precision = [], []
        for batch in sampler:
            rows = torch.tensor([r for r, _ in batch])
            y = torch.as_tensor(labels)[rows]
            keep = selector(feats[rows], y, bank).keep
            bank.enqueue(feats[rows], y, keep)
            selector.update(bank, y, keep)
            flagged = ~keep
            kept.append(float(keep.float().mean()))
            hits = torch.as_tensor(noisy)[rows][flagged]
            precision.append(float(hits.float().mean()) if len(hits) else np.nan)
        runs[startup] = (np.array(kept), np.array(precision))
    one_pass = len(labels) // 64
    spans = ((0, 100), (100, one_pass), (one_pass, args.steps))
    print(f"SOP-shaped: {CLASSES:,} classes, {len(labels):,} images, {noisy.mean():.3f} noisy, batches 16 x 4")
    print("steps: " + ", ".join(f"{a + 1}-{b}" for a, b in spans) + f" (one pass = {one_pass} steps)")
    for startup, (kept, precision) in runs.items():
        cells = [f"kept {kept[a:b].mean():.3f} flagged precision {np.nanmean(precision[a:b]):.3f}" for a, b in spans]
        print(f"{startup:<8} " + " | ".join(cells))
    ratio = runs["ours"][0][:100].mean() / runs["authors"][0][:100].mean()
    print(f"kept share over the first 100 steps, ours / authors: {ratio:.2f}")


if __name__ == "__main__":
    main()

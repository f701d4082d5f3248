"""The floor of fine-tuning (issue 21): frozen, L2-normalised features of a pretrained backbone on the embedded
Omniglot's test split (106 characters of 3 unseen alphabets), no training at all, run by hand.

Peer: the same backbone with random weights (seed 0), which says how much of the floor the ImageNet weights give.
Prints test P@1 and MAP@R per input size, and the forward pass's images/s.

    python bench/pretrained_floor.py [--backbone efficientnet_lite0] [--sizes 64 112 160]
"""

from __future__ import annotations

import argparse
import time

import torch

from noisekit.noise.features import FeatureOptions, embed
from noisekit.sources.build import build
from prism.evaluate import retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 160])
    args = parser.parse_args()
    _, built = build("omniglot", overwrite=True)
    manifest = built.manifest
    test = manifest.split("test")
    files = [manifest.resolve(p) for p in test["path"]]
    labels = test["label"].to_numpy()
    print(f"{args.backbone}: omniglot test split, {len(files):,} images, {test['label'].nunique()} classes; "
          f"CPU {torch.get_num_threads()} threads")  # fmt: skip
    for size in args.sizes:
        for weights in ("imagenet", "random"):
            options = FeatureOptions(backbone=args.backbone, weights=weights, image_size=size, workers=1)
            start = time.perf_counter()
            feats = embed(files, options)
            seconds = time.perf_counter() - start
            m = retrieval_metrics(feats, labels)
            print(
                f"  {size:>4} px {weights:<9} test P@1 {m['precision_at_1']:.3f}  MAP@R "
                f"{m['mean_average_precision_at_r']:.3f}  ({len(files) / seconds:.0f} img/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()

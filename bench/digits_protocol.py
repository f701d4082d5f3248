"""The digits protocol grid, run by hand: symmetric noise 0%, 20% and 50%, the memory contrastive loss without and
with PRISM, three seeds each; prints mean +- standard deviation.

Peer: the same loss trained without PRISM on the same noisy labels (and the 0% row: on clean labels).
PRISM's filter rate R is the noise rate where it is known (20%, 50%); on clean data it is the unknown-noise default
0.5. Columns: test = unseen digits 5-9 (the DML protocol); held-out = unseen images of digits 0-4 scored against
their clean labels; flagged precision / recall of the images PRISM drops in most batches that draw them.

    .venv/bin/python bench/digits_protocol.py [--iterations 400] [--seeds 0 1 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def run(job: tuple[float, bool, int, int, str]) -> dict:
    rate, prism, seed, iterations, home = job
    os.environ["NOISEKIT_HOME"] = home
    import torch

    torch.set_num_threads(1)
    from prism.config import TrainConfig
    from prism.train import train

    dataset = "digits" if rate == 0 else f"digits/symmetric-{rate:g}-s{seed}"
    out = Path(home) / "runs" / f"{rate:g}-{int(prism)}-{seed}"
    config = TrainConfig(
        dataset=dataset,
        prism=prism,
        filter_rate=rate or 0.5,
        iterations=iterations,
        seed=seed,
        classes_per_batch=5,
        samples_per_class=12,
        eval_every=iterations,
        select="last",
        out=str(out),
    )
    summary = train(config, progress=False)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "rate": rate,
        "prism": prism,
        "seed": seed,
        "test_p1": summary["test"]["precision_at_1"],
        "test_mapr": summary["test"]["mean_average_precision_at_r"],
        "held_p1": last.get("clean_precision_at_1", last["precision_at_1"]),
        "held_mapr": last.get("clean_mean_average_precision_at_r", last["mean_average_precision_at_r"]),
        "flag_precision": summary["noise_detection"]["precision"],
        "flag_recall": summary["noise_detection"]["recall"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["NOISEKIT_HOME"] = home
        from noisekit.build import build
        from noisekit.noise.common import save_variant
        from noisekit.noise.symmetric import symmetric

        _, clean = build("digits")
        for rate in args.rates:
            for seed in args.seeds:
                if rate:
                    save_variant(symmetric(clean.manifest, rate=rate, seed=seed, variant=f"symmetric-{rate:g}-s{seed}"))
        jobs = [(r, p, s, args.iterations, home) for r in args.rates for p in (False, True) for s in args.seeds]
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run, jobs))

    def cell(rows: list[dict], key: str) -> str:
        values = [r[key] for r in rows if r[key] is not None]
        return f"{np.mean(values):.3f} +- {np.std(values):.3f}" if values else "-"

    keys = ("test_p1", "test_mapr", "held_p1", "held_mapr", "flag_precision", "flag_recall")
    print(f"digits, memory contrastive loss, {args.iterations} iterations, P x K = 5 x 12, seeds {args.seeds}")
    print("| noise | PRISM | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for rate in args.rates:
        for prism in (False, True):
            rows = [r for r in results if r["rate"] == rate and r["prism"] == prism]
            print(f"| {rate:.0%} | {'yes' if prism else 'no'} | " + " | ".join(cell(rows, k) for k in keys) + " |")


if __name__ == "__main__":
    main()

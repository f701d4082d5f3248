"""The DML-protocol grid, run by hand: symmetric noise at each rate, the memory contrastive loss without and with
PRISM, several seeds; prints mean +- standard deviation on the unseen test classes.

Peer: the same loss trained without PRISM on the same noisy labels (and the 0% row: on clean labels). PRISM's
filter rate R is the noise rate where it is known; on clean data it is the unknown-noise default 0.5. Every other
option is the dataset's default (`prism train --dataset omniglot --print-config` shows them), so this measures
what a user gets. Each noise seed is also the training seed. Runs go to processes of one thread each.
Columns: test P@1 / MAP@R on the unseen classes (for omniglot the unseen alphabets), validation MAP@R against the
clean labels (a diagnostic: held-out training classes), flagged precision / recall of the images PRISM drops in
most batches that draw them.

    .venv/bin/python bench/protocol.py [--dataset omniglot] [--rates 0 0.2 0.5] [--seeds 0 1 2] [--jobs 3] \
        [--set iterations=2000 ...] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml

KEYS = ("test_p1", "test_mapr", "val_clean_mapr", "flag_precision", "flag_recall")


def run(job: tuple[str, float, bool, int, dict, str]) -> dict:
    dataset, rate, prism, seed, overrides, home = job
    os.environ["NOISEKIT_HOME"] = home
    import torch

    torch.set_num_threads(1)
    from prism.config import TrainConfig
    from prism.train import train

    out = Path(home) / "runs" / f"{rate:g}-{int(prism)}-{seed}"
    config = TrainConfig(
        dataset=dataset if rate == 0 else f"{dataset}/symmetric-{rate:g}-s{seed}",
        filter="prism" if prism else "none",
        filter_rate=rate or 0.5,
        seed=seed,
        out=str(out),
        **overrides,
    )
    start = time.perf_counter()
    summary = train(config, progress=False)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = next(row for row in history if row["iteration"] == summary["best_iteration"])
    return {
        "rate": rate,
        "prism": prism,
        "seed": seed,
        "test_p1": summary["test"]["precision_at_1"],
        "test_mapr": summary["test"]["mean_average_precision_at_r"],
        "val_clean_mapr": best.get("clean_mean_average_precision_at_r", best.get("mean_average_precision_at_r")),
        "flag_precision": summary["noise_detection"]["precision"],
        "flag_recall": summary["noise_detection"]["recall"],
        "best_iteration": summary["best_iteration"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def cell(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r[key] is not None]
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="omniglot")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="TrainConfig overrides")
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        os.environ["NOISEKIT_HOME"] = home
        from noisekit.noise.common import save_variant
        from noisekit.noise.symmetric import symmetric
        from noisekit.sources.build import build

        _, clean = build(args.dataset)
        for rate in args.rates:
            for seed in args.seeds:
                if rate:
                    variant = f"symmetric-{rate:g}-s{seed}"
                    save_variant(symmetric(clean.manifest, rate=rate, seed=seed, variant=variant))
        jobs = [(args.dataset, r, p, s, overrides, home) for r in args.rates for p in (False, True) for s in args.seeds]
        results = []
        with ProcessPoolExecutor(args.jobs) as pool:
            for done, result in enumerate(pool.map(run, jobs), start=1):
                results.append(result)
                print(f"[{done}/{len(jobs)}] {json.dumps(result)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\n{args.dataset}, memory contrastive loss, seeds {args.seeds}, overrides {overrides or 'none'}")
    print("| noise | PRISM | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for rate in args.rates:
        for prism in (False, True):
            rows = [r for r in results if r["rate"] == rate and r["prism"] == prism]
            print(f"| {rate:.0%} | {'yes' if prism else 'no'} | " + " | ".join(cell(rows, k) for k in KEYS) + " |")
    print(f"{len(jobs)} runs in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()

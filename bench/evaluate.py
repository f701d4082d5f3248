"""Retrieval metrics at test-set scale: ours against pytorch-metric-learning's AccuracyCalculator, run by hand.

Peer: ``AccuracyCalculator(include=(P@1, MAP@R, R-precision), k="max_bin_count").get_accuracy(x, labels)``, the
metric code DML papers report with. Two cases of random clustered unit-length embeddings (a random centre per
class plus noise, L2-normalised as prism's models output them, so PML's Euclidean distance ranks as our cosine):
  sop:      60,502 x 128, 11,316 classes of 2-12 images (SOP's test split)
  food101n: 51,000 x 128, 51 classes of 1,000 images (Food-101N's test split: MAP@R needs R = 999 neighbours)
Each implementation runs in a fresh process on the same embeddings: wall time and peak resident memory above the
process's level before the call (the embeddings themselves excluded), and the metrics compared to 1e-6.

    .venv/bin/python bench/evaluate.py [--case sop food101n] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEYS = ("precision_at_1", "mean_average_precision_at_r", "r_precision")


def embeddings(case: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if case == "sop":
        sizes = rng.integers(2, 13, size=11316)
        sizes = np.maximum(2, sizes + (60502 - sizes.sum()) // len(sizes))
        sizes[: 60502 - sizes.sum()] += 1  # exactly 60,502 rows
    else:
        sizes = np.full(51, 1000)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.normal(size=(len(sizes), 128)).astype(np.float32)
    x = centres[labels] + rng.normal(scale=1.2 if case == "sop" else 2.0, size=(len(labels), 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # unit rows, as prism's models output them
    return x.astype(np.float32), labels.astype(np.int64)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(which: str, path: str, threads: int) -> None:
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    data = np.load(path)
    x, labels = data["x"], data["labels"]
    if which == "ours":
        from prism.evaluate import retrieval_metrics

        def run() -> dict:
            return retrieval_metrics(x, labels)
    else:
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=KEYS, k="max_bin_count")
        xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

        def run() -> dict:
            return calc.get_accuracy(xt, lt)

    before = rss_mb()
    start = time.perf_counter()
    metrics = run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak - before, **{k: float(metrics[k]) for k in KEYS}}))


def measure(which: str, path: Path, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", which, str(path), "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", default=["sop", "food101n"], choices=["sop", "food101n"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.threads)
        return
    for case in args.case:
        x, labels = embeddings(case)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "emb.npz"
            np.savez(path, x=x, labels=labels)
            ours, pml = measure("ours", path, args.threads), measure("pml", path, args.threads)
        worst = max(abs(ours[k] - pml[k]) for k in KEYS)
        print(f"{case}: {len(x):,} x {x.shape[1]}, {len(np.unique(labels)):,} classes, {args.threads} threads")
        for name, m in (("ours", ours), ("PML ", pml)):
            print(
                f"  {name} {m['seconds']:7.2f} s  peak +{m['peak_mb']:7.0f} MB  P@1 {m['precision_at_1']:.6f}  "
                f"MAP@R {m['mean_average_precision_at_r']:.6f}  R-prec {m['r_precision']:.6f}"
            )
        print(
            f"  ratio ours / PML: time {ours['seconds'] / pml['seconds']:.3f}, peak memory "
            f"{ours['peak_mb'] / pml['peak_mb']:.3f}; largest metric difference {worst:.1e} "
            f"({'equal' if worst <= 1e-6 else 'NOT EQUAL'} to 1e-6)"
        )


if __name__ == "__main__":
    main()

"""The README's main job, on the embedded Omniglot subsets: build omniglot, add 50% symmetric noise, train the memory
contrastive loss on clean labels, on the noisy labels, and on the noisy labels with PRISM, and compare them where DML
is judged: retrieval among the unseen alphabets of the test split.

    python3 dev.py demo [--regime pretrained|scratch] [--noise 0.5] [--seed 0] [--out runs/demo] [--jobs 3]
                        [--iterations N]

``--regime pretrained`` (the default, the paper's setting): the offline ImageNet EfficientNet-Lite0 fine-tuned with
the pretrained-cpu preset; ``scratch``: the small CNN from random weights with every option at omniglot's defaults
(``prism train --dataset omniglot --print-config``). The three runs go to parallel processes of one thread each (on
two cores that is 1.6x the throughput of running them one after the other). Writes each run's folder, ``demo.png``
(validation curves of the three runs and PRISM's noise detection) and ``demo.json`` (the table) under --out, and ends
with a verdict computed from the table.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from noisekit.manifest import atomic_path, write_json
from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.progress import progress
from noisekit.sources.build import build

# regime -> the preset its runs start from (None: the dataset's defaults)
REGIMES = {"pretrained": "pretrained-cpu", "scratch": None}
METRICS = (("precision_at_1", "P@1"), ("mean_average_precision_at_r", "MAP@R"), ("r_precision", "R-Prec"))


def run(job: tuple[str, str | None, dict[str, Any]]) -> dict[str, Any]:
    """One training run in a worker process (one thread)."""
    name, preset, options = job
    import torch

    torch.set_num_threads(1)
    from prism.config import load_config
    from prism.train import train

    config = load_config(None, options, preset=preset)
    return {"name": name, "out": options["out"], **train(config, overwrite=True, progress=False)}


def history(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def steps(out: Path) -> list[dict[str, Any]]:
    import torch

    payload = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    return json.loads(payload["steps"])


def verdict(rows: dict[str, dict[str, Any]], noise: str) -> str:
    clean, noisy, prism = (rows[k]["test"]["precision_at_1"] for k in ("clean", "noisy", "prism"))
    lost, gained = clean - noisy, prism - noisy
    figures = f"test P@1: clean {clean:.3f}, {noise} noise {noisy:.3f}, {noise} noise + PRISM {prism:.3f}"
    if lost <= 0:
        return (
            f"verdict: {noise} noise did not lower test P@1 on this seed, so PRISM had nothing to recover ({figures})"
        )
    if gained <= 0:
        return f"verdict: PRISM did not improve on the noisy baseline on this seed ({figures})"
    return (
        f"verdict: PRISM recovered {gained / lost:.0%} of the test P@1 that {noise} noise cost "
        f"(+{gained:.3f} of {lost:.3f}; {figures})"
    )


def plot(runs: list[tuple[str, str, Path]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for _, label, out in runs:
        rows = history(out)
        key = "clean_mean_average_precision_at_r" if rows and "clean_precision_at_1" in rows[0] else None
        key = key or "mean_average_precision_at_r"
        left.plot([r["iteration"] for r in rows], [r[key] for r in rows], marker="o", label=label)
    left.set(xlabel="iteration", ylabel="MAP@R", title="validation (held-out training characters, clean labels)")
    left.legend(loc="lower right", fontsize=8)
    prism_out = runs[-1][2]
    log = [s for s in steps(prism_out) if s["flag_precision"] is not None or s["kept"] < 1]
    for key, label in (("flag_precision", "flagged precision"), ("flag_recall", "flagged recall"), ("kept", "kept")):
        right.plot(
            [s["iteration"] for s in log], [float("nan") if s[key] is None else s[key] for s in log], label=label
        )
    right.set(xlabel="iteration", title=f"PRISM noise detection per batch ({runs[-1][1]})", ylim=(0, 1.02))
    right.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--jobs", type=int, default=3, help="parallel training processes")
    parser.add_argument(
        "--regime",
        choices=sorted(REGIMES),
        default="pretrained",
        help="pretrained: the paper's (ImageNet EfficientNet-Lite0 fine-tuned, preset pretrained-cpu); "
        "scratch: the small CNN from random weights at omniglot's defaults",
    )
    parser.add_argument("--iterations", type=int, help="default: the regime's (the README's defaults rule)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)

    _, clean = build("omniglot", overwrite=True)  # the demo owns its data: a clone elsewhere has another root
    noisy_path, report = save_variant(symmetric(clean.manifest, rate=args.noise, seed=args.seed), overwrite=True)
    variant = f"omniglot/{noisy_path.stem}"
    counts = clean.manifest.counts()
    print(
        f"omniglot: train {counts['classes']['train']} characters of 5 alphabets, test {counts['classes']['test']} "
        f"characters of 3 unseen alphabets; {variant}: {report['noisy']:,} of {report['train_images']:,} training "
        f"labels moved to another character (realised {report['realised_rate']:.3f})"
    )
    noise = f"{args.noise:.0%}"
    runs = [
        ("clean", "clean labels", "omniglot", False),
        ("noisy", f"{noise} noise", variant, False),
        ("prism", f"{noise} noise + PRISM", variant, True),
    ]
    preset = REGIMES[args.regime]
    jobs = [
        (
            key,
            preset,
            {
                "dataset": dataset,
                "filter": "prism" if prism else "none",
                "filter_rate": args.noise,
                "seed": args.seed,
                "iterations": args.iterations,
                "out": str(out / key),
            },
        )
        for key, _, dataset, prism in runs
    ]
    from prism.config import load_config, resolve
    from prism.data import prepare

    resolved = resolve(
        load_config(None, {"dataset": variant, "iterations": args.iterations}, preset=preset),
        prepare(variant, val_fraction=0.2, seed=args.seed).shape,
    )
    print(
        f"training 3 x {resolved.iterations} iterations ({resolved.arch}, {resolved.weights} weights, at "
        f"{resolved.image_size} px, P x K = "
        f"{resolved.classes_per_batch} x {resolved.samples_per_class}, PRISM from iteration {resolved.warmup}) "
        f"in {min(args.jobs, 3)} processes ...",
        flush=True,
    )
    validations = 3 * (resolved.iterations // resolved.eval_every + bool(resolved.iterations % resolved.eval_every))
    rows: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(min(args.jobs, 3)) as pool, progress(total=validations, desc="validations") as bar:
        futures = [pool.submit(run, job) for job in jobs]
        while not all(f.done() for f in futures):
            time.sleep(1)
            bar.update(sum(len(history(out / key)) for key, *_ in jobs) - bar.n)
        for future in futures:
            result = future.result()
            rows[result["name"]] = result
        bar.update(validations - bar.n)

    header = f"{'run':<20} " + " ".join(f"{'test ' + short:>11}" for _, short in METRICS)
    print(f"\n{header} {'flagged prec':>12} {'flagged rec':>11}")
    for key, label, *_ in runs:
        test, det = rows[key]["test"], rows[key]["noise_detection"]
        flags = " ".join(
            f"{'-' if v is None else f'{v:.3f}':>{w}}" for v, w in ((det["precision"], 12), (det["recall"], 11))
        )
        print(f"{label:<20} " + " ".join(f"{test[m]:>11.3f}" for m, _ in METRICS) + f" {flags}")
    print("test: retrieval among the 2,120 images of the 106 unseen characters (3 alphabets never trained on)")
    title = f"omniglot, {noise} symmetric noise, MCL, {args.regime}"
    plot([(k, label, out / k) for k, label, *_ in runs], out / "demo.png", title)
    write_json(
        out / "demo.json", {k: {"test": v["test"], "noise_detection": v["noise_detection"]} for k, v in rows.items()}
    )
    print(f"figure: {out / 'demo.png'}")
    print(verdict(rows, noise))
    print(f"demo done in {time.perf_counter() - start:.0f}s -> {out}")


if __name__ == "__main__":
    main()

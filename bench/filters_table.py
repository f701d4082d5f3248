"""The filters' table (issue 24) from finished grid runs, run by hand after the grids of bench/README.md.

Reads every ``summary.json`` under the given grid folders and prints, per variant and run (method + filter, with
``auto`` marked), over its seeds: test P@1 and MAP@R in % (mean +- sample std), the filter's final R (the auto
estimate, or the fixed R) against the true noise rate, flagged precision and recall (means), and the seed count.

    python bench/filters_table.py runs/grid-omniglot-filters runs/grid-omniglot-filters-auto \
        runs/grid-omniglot-filters-clean
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def spread(values: list[float], scale: float = 100.0) -> str:
    a = np.asarray(values, dtype=float) * scale
    return f"{a.mean():.2f} +- {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f} (n=1)"


def mean(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{np.mean(known):.3f}" if known else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="+", type=Path)
    args = parser.parse_args()
    rows: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for grid in args.grids:
        for path in sorted(grid.glob("*/*/*/seed*/summary.json")):
            summary = json.loads(path.read_text())
            variant = path.parts[-4]
            rate = summary.get("filter_rate")
            name = summary["method"] + ("" if summary["filter"] == "none" else f" + {summary['filter']}")
            if summary["filter"] != "none" and summary["filter"] != "knn":
                name += " (auto)" if rate == "auto" else f" (R={rate:g})"
            rows[(variant, name)].append(summary)
    print("| variant | run | test P@1 % | test MAP@R % | final R | true rate | flagged prec | flagged rec | seeds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (variant, name), runs in sorted(rows.items()):
        finals = [(r.get("rate_estimate") or {}).get("final") for r in runs]
        true = [(r.get("rate_estimate") or {}).get("true") for r in runs]
        print(
            f"| {variant} | {name} | {spread([r['test']['precision_at_1'] for r in runs])} | "
            f"{spread([r['test']['mean_average_precision_at_r'] for r in runs])} | "
            f"{mean(finals)} | {mean(true)} | "
            f"{mean([r['noise_detection']['precision'] for r in runs])} | "
            f"{mean([r['noise_detection']['recall'] for r in runs])} | {len(runs)} |"
        )


if __name__ == "__main__":
    main()

"""``prism grid``: the paper's comparison as one command. A grid is datasets x noise variants x methods x filters x
seeds; every run is an ordinary ``prism train`` run in ``OUT/<dataset>/<variant>/<method>[+<filter>]/seed<k>``.

A run whose ``summary.json`` exists is skipped, one with only a ``last.pt`` (interrupted) is resumed, the rest
start fresh, so a killed grid re-run executes only what is missing. Everything a grid can get wrong (a missing
dataset or variant, an unknown method or filter, a filter the method cannot take, F-correction on open-set noise)
is checked before the first run starts. At the end ``results.csv`` (one row per run), ``results.md`` (the paper's
table shape) and ``results.png`` (P@1 against the noise rate) are written from every finished run.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, atomic_path, write_json
from prism.config import TrainConfig, from_dict, read_yaml
from prism.methods import METHODS, check, spec
from prism.methods.base import open_set

KEYS = {"datasets", "variants", "methods", "filters", "seeds", "filter_rate", "options", "out", "jobs"}


@dataclass(frozen=True)
class Run:
    dataset: str
    variant: str  # "clean" or a variant name
    method: str
    filter: str
    seed: int
    rate: float  # the variant's noise rate (0 for clean)
    config: TrainConfig

    @property
    def name(self) -> str:
        return _run_name(self.method, self.filter)

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def _run_name(method: str, filter_name: str) -> str:
    return method + ("" if filter_name == "none" else f"+{filter_name}")


@dataclass(frozen=True)
class Grid:
    runs: list[Run]
    out: Path
    jobs: int


def _listed(value: Any, key: str, where: str, *, text: bool = True) -> list[Any]:
    """A key's value as a list (one value or several), names unless ``text`` is False; a one-line error otherwise."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise NoisekitError(f"{where}: {key} is empty")
    for item in values if text else ():
        if not isinstance(item, str):
            raise NoisekitError(f"{where}: {key} must be names, got {item!r}")
    return values


def _number(value: Any, kind: type, key: str, expected: str, where: str) -> Any:
    """``value`` as ``kind`` (int or float), or a one-line error naming the key and what it expects."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise NoisekitError(f"{where}: {key} must be {expected}, got {value!r}") from None


def _manifest(ref: str, where: str, root: str | None) -> Manifest:
    from prism.data import load_manifest

    try:
        return load_manifest(ref, root=root)
    except NoisekitError as exc:
        raise NoisekitError(f"{where}: dataset {ref}: {exc}") from None


def plan(spec_values: dict[str, Any], *, where: str) -> Grid:
    """Every run of a grid, checked: a one-line error naming ``where`` for anything that cannot run."""
    unknown = sorted(set(spec_values) - KEYS)
    if unknown:
        raise NoisekitError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(KEYS))}")
    if "datasets" not in spec_values:
        raise NoisekitError(f"{where}: no datasets given")
    out = spec_values.get("out") or "runs/grid"
    if not isinstance(out, str):
        raise NoisekitError(f"{where}: out must be a folder, got {out!r}")
    out = Path(out)
    methods = spec_values.get("methods", ["mcl"])
    methods = list(METHODS) if methods == "all" else _listed(methods, "methods", where)
    filters = spec_values.get("filters", ["none", "prism"])
    per_method = filters if isinstance(filters, dict) else {"*": filters}  # method -> filters, "*": the others
    options = spec_values.get("options") or {}
    if not isinstance(options, dict):
        raise NoisekitError(f"{where}: options must be a mapping of prism train option: value, got {options!r}")
    rate_rule = spec_values.get("filter_rate", "variant")
    if rate_rule not in ("variant", "auto"):
        rate_rule = _number(rate_rule, float, "filter_rate", "variant, auto or a number", where)
    seeds = [
        _number(seed, int, "seeds", "integers", where)
        for seed in _listed(spec_values.get("seeds", [0]), "seeds", where, text=False)
    ]
    runs = []
    for dataset in _listed(spec_values["datasets"], "datasets", where):
        for variant in _listed(spec_values.get("variants", ["clean"]), "variants", where):
            ref = dataset if variant == "clean" else f"{dataset}/{variant}"
            manifest = _manifest(ref, where, None if options.get("root") is None else str(options["root"]))
            noise = manifest.meta.noise
            rate = float((noise or {}).get("requested_rate") or (noise or {}).get("realised_rate") or 0.0)
            for method in methods:
                spec(method)  # an unknown method: the registry's one-line error
                if method == "fcorrection" and open_set(manifest):
                    raise NoisekitError(
                        f"{where}: fcorrection on {ref}: the transition matrix is undefined for open-set "
                        "(Small Cluster) noise; drop the method or the variant"
                    )
                if method in per_method:  # named for this method: every filter must fit it
                    chosen = [check(method, f) for f in _listed(per_method[method], "filters", where)]
                else:  # the grid's filters: methods that take none run without
                    chosen = (
                        _listed(per_method.get("*", ["none"]), "filters", where) if spec(method).filters else ["none"]
                    )
                for filter_name in chosen:
                    for seed in seeds:
                        values = {
                            **options,
                            "dataset": ref,
                            "method": method,
                            "filter": filter_name,
                            "seed": seed,
                            "filter_rate": rate if rate_rule == "variant" else rate_rule,
                            "out": str(out / dataset / variant / _run_name(method, filter_name) / f"seed{seed}"),
                        }  # fmt: skip
                        config = from_dict(values, where=where)
                        runs.append(Run(dataset, variant, method, config.filter, seed, rate, config))
    return Grid(runs=runs, out=out, jobs=_number(spec_values.get("jobs", 1), int, "jobs", "an integer", where))


def status(run: Run) -> str:
    """done (summary.json), interrupted (last.pt only) or new."""
    if (run.out / "summary.json").is_file():
        return "done"
    return "interrupted" if (run.out / "last.pt").is_file() else "new"


def _execute(run: Run, threads: int, progress: bool = False) -> tuple[Run, float, float]:
    """Train one run (resuming it when interrupted); returns it, its wall time and its test P@1. Only a run alone
    in this process shows training progress: bars of parallel runs would overwrite each other on a terminal."""
    import torch

    from prism.train import train

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    summary = train(run.config, resume=status(run) == "interrupted", progress=progress)
    wall = time.perf_counter() - start
    write_json(run.out / "grid.json", {"wall_seconds": round(wall, 1)})
    return run, wall, summary["test"]["precision_at_1"]


def run_grid(grid: Grid, *, paper: pd.DataFrame | None = None, echo=print) -> dict[str, int]:
    """Run what is missing (``jobs`` processes at a time), then write the results; returns the counts."""
    todo = [r for r in grid.runs if status(r) != "done"]
    counts = {
        "runs": len(grid.runs),
        "skipped": len(grid.runs) - len(todo),
        "resumed": sum(status(r) == "interrupted" for r in todo),
        "executed": 0,
    }
    echo(
        f"grid: {len(grid.runs)} runs, {counts['skipped']} done already, {len(todo)} to run "
        f"({counts['resumed']} resumed)"
    )
    start = time.perf_counter()

    def report(run: Run, wall: float, p1: float) -> None:
        counts["executed"] += 1
        echo(f"[{counts['executed']}/{len(todo)}] {run.dataset}/{run.variant} {run.name} seed {run.seed}: "
             f"test P@1 {p1:.4f} ({wall:.0f} s)")  # fmt: skip

    if grid.jobs <= 1:
        for run in todo:
            report(*_execute(run, 0, progress=True))
    else:
        with multiprocessing.get_context("spawn").Pool(grid.jobs, maxtasksperchild=1) as pool:
            for done in pool.imap_unordered(_execute_one, todo):
                report(*done)
    frame = collect(grid)
    write_results(frame, grid.out, paper)
    echo(
        f"grid: {counts['executed']} executed, {counts['skipped']} skipped in {time.perf_counter() - start:.0f} s "
        f"-> {grid.out / 'results.md'}"
    )
    return counts


def _execute_one(run: Run) -> tuple[Run, float, float]:
    return _execute(run, 1)  # one thread per process: jobs processes share the cores


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}{k}.", v, row)
    else:
        row[prefix.rstrip(".")] = value


def collect(grid: Grid) -> pd.DataFrame:
    """One row per finished run: its coordinates, wall time and every metric of summary.json."""
    rows = []
    for run in grid.runs:
        if status(run) != "done":
            continue
        summary = json.loads((run.out / "summary.json").read_text())
        wall = json.loads((run.out / "grid.json").read_text()) if (run.out / "grid.json").is_file() else {}
        row = {
            "dataset": run.dataset,
            "variant": run.variant,
            "rate": run.rate,
            "method": run.method,
            "filter": run.filter,
            "run": run.name,
            "seed": run.seed,
            "wall_seconds": wall.get("wall_seconds"),
        }
        for key, value in summary.items():
            if key not in row and key not in ("dataset", "method", "filter", "seed"):
                _flatten(f"{key}.", value, row)
        rows.append(row)
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame, metric: str = "test.precision_at_1") -> tuple[list[str], list[str], dict]:
    """Rows (runs, in the grid's order), columns (dataset/variant) and (row, column) -> (mean, std, n) in %."""
    rows = list(dict.fromkeys(frame["run"]))
    cols = list(dict.fromkeys(frame["dataset"] + "/" + frame["variant"]))
    cells = {}
    for (run, col), group in frame.assign(col=frame["dataset"] + "/" + frame["variant"]).groupby(["run", "col"]):
        values = 100 * group[metric].to_numpy(dtype=float)
        cells[(run, col)] = (values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0, len(values))
    return rows, cols, cells


def markdown(frame: pd.DataFrame, metric: str = "test.precision_at_1", paper: pd.DataFrame | None = None) -> str:
    """The paper's table shape: methods as rows, noise settings as columns, mean +- std over seeds, best in bold."""
    rows, cols, cells = table(frame, metric)
    best = {c: max((cells[(r, c)][0] for r in rows if (r, c) in cells), default=None) for c in cols}
    lines = [f"| method | {' | '.join(cols)} |", "| --- |" + " --- |" * len(cols)]
    for r in rows:
        out = []
        for c in cols:
            if (r, c) not in cells:
                out.append("-")
                continue
            mean, std, n = cells[(r, c)]
            # one seed has no spread: its value alone, marked (n=1), never a "+- 0.00" that reads as measured
            text = f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} +- {std:.2f}" + (f" (n={n})" if n < 3 else "")
            out.append(f"**{text}**" if np.isclose(mean, best[c]) else text)
        lines.append(f"| {r} | {' | '.join(out)} |")
    text = "\n".join(lines) + "\n"
    if paper is not None:
        text += "\nPublished figures (not measured here; from the file given with --paper-table):\n\n"
        pcols = list(dict.fromkeys(paper["setting"]))
        text += f"| method | {' | '.join(pcols)} |\n| --- |" + " --- |" * len(pcols) + "\n"
        for method, group in paper.groupby("method", sort=False):
            values = dict(zip(group["setting"], group["precision_at_1"], strict=True))
            text += f"| {method} (published) | {' | '.join(str(values.get(c, '-')) for c in pcols)} |\n"
    return text


def read_paper_table(path: Path) -> pd.DataFrame:
    """A CSV of published figures: columns method, setting, precision_at_1."""
    if not path.is_file():
        raise NoisekitError(f"--paper-table {path} does not exist")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise NoisekitError(f"--paper-table {path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = {"method", "setting", "precision_at_1"} - set(frame.columns)
    if missing:
        raise NoisekitError(f"--paper-table {path}: missing column(s) {', '.join(sorted(missing))}")
    return frame


def write_results(frame: pd.DataFrame, out: Path, paper: pd.DataFrame | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.csv") as tmp:
        frame.to_csv(tmp, index=False)
    if frame.empty:
        return
    body = "Test Precision@1 (%), mean +- std over seeds; best per column in bold.\n\n" + markdown(frame, paper=paper)
    body += "\nTest MAP@R (%):\n\n" + markdown(frame, "test.mean_average_precision_at_r")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(body)
    plot(frame, out / "results.png")


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(frame["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        sub = frame[frame["dataset"] == dataset]
        for run, group in sub.groupby("run", sort=False):
            stats = group.groupby("rate")["test.precision_at_1"].agg(["mean", "std"]).fillna(0)
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=run)
        ax.set(xlabel="noise rate", ylabel="test P@1", title=dataset)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def load_grid(path: Path | None, flags: dict[str, Any]) -> Grid:
    """The grid from a YAML file and flags (flags win); checked before anything runs."""
    values = read_yaml(path, what="--grid") if path is not None else {}
    values.update({k: v for k, v in flags.items() if v not in (None, [], ())})
    return plan(values, where=str(path) if path is not None else "prism grid")


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` options for every run (values read as YAML scalars)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise NoisekitError(f"--set {pair!r}: expected KEY=VALUE, e.g. iterations=800")
        options[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return options

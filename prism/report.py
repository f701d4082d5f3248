"""The end of a run and its reading: validation and test retrieval on a split, the noise-detection report,
``summary.json``, the curves, and ``prism eval`` on a saved checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from noisekit.device import check_device
from noisekit.errors import NoisekitError
from noisekit.manifest import atomic_path, write_json
from noisekit.noise.run_report import is_flagged
from prism.checkpoint import RunState, load_checkpoint
from prism.config import TrainConfig, resolve
from prism.data import Images, TrainingData, eval_transform, prepare
from prism.dist import DistContext
from prism.evaluate import embed_loader, retrieval_metrics
from prism.models import build_model

if TYPE_CHECKING:  # train.py imports this module
    from prism.train import Parts

SELECTION_METRIC = "mean_average_precision_at_r"
SINGLE = DistContext()  # one process


def detection(flagged: np.ndarray, noisy: np.ndarray) -> dict[str, float | None]:
    """Precision and recall of ``flagged`` against known noise flags (-1 unknown), and the flagged fraction."""
    known = noisy >= 0
    flagged_known = flagged & known
    truth = (noisy == 1) & known
    hits = int((flagged_known & truth).sum())
    return {
        "precision": hits / int(flagged_known.sum()) if known.any() and flagged_known.any() else None,
        "recall": hits / int(truth.sum()) if truth.any() else None,
        "flagged_fraction": float(flagged.mean()) if len(flagged) else 0.0,
    }


def evaluate_split(
    model: torch.nn.Module,
    data: TrainingData,
    which: str,
    config: TrainConfig,
    device: torch.device,
    ctx: DistContext = SINGLE,
) -> dict[str, float]:
    """Retrieval metrics on a split with its training labels; where every clean label of the split is known and
    they differ somewhere from the training labels (synthetic noise), also against the clean labels, as ``clean_*``.
    The ``clean_*`` figures are a diagnostic: model selection never reads them.
    Under torchrun every rank embeds every world_size-th image and the shards are gathered."""
    split = getattr(data, which)
    dataset = eval_set(data, which, config)
    shard = list(range(ctx.rank, len(dataset), ctx.world_size))
    loader = DataLoader(Subset(dataset, shard), batch_size=256, num_workers=0 if data.small else config.workers)
    emb, _ = embed_loader(model, loader, device)
    if ctx.distributed:
        gathered = ctx.gather_rows(torch.from_numpy(emb).to(device)).cpu().numpy()
        order = np.concatenate([np.arange(r, len(dataset), ctx.world_size) for r in range(ctx.world_size)])
        emb = np.empty_like(gathered)
        emb[order] = gathered
    labels = split.labels
    metrics = retrieval_metrics(emb, labels)
    if (split.clean >= 0).all() and not np.array_equal(split.clean, split.labels):
        metrics |= {f"clean_{k}": v for k, v in retrieval_metrics(emb, split.clean).items()}
    return metrics


def eval_set(data: TrainingData, which: str, config: TrainConfig) -> Images:
    """A split's images without augmentation, built once per run (validation runs every eval_every iterations:
    small images are decoded and resized once)."""
    if which not in data.eval_sets:
        data.eval_sets[which] = Images(
            getattr(data, which),
            eval_transform(data.small, config.image_size),
            preload=config.image_size if data.small else None,
        )
    return data.eval_sets[which]


def train_features(
    model: torch.nn.Module, data: TrainingData, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's raw outputs (not normalised) and labels for every training image, without augmentation."""
    loader = DataLoader(
        eval_set(data, "train", config), batch_size=256, num_workers=0 if data.small else config.workers
    )
    feats, labels = embed_loader(model, loader, device, normalize=False)
    return torch.from_numpy(feats).to(device), torch.from_numpy(labels).to(device)


def selected_by(config: TrainConfig, data: TrainingData, state: RunState) -> str:
    if config.select != "val" or data.val is None:
        return "last"
    if state.best_score == -math.inf:
        return f"last (validation {SELECTION_METRIC} undefined: every validation class has one image)"
    return f"validation {SELECTION_METRIC}"


def finish(
    config: TrainConfig,
    data: TrainingData,
    state: RunState,
    parts: Parts,
    ctx: DistContext,
    out: Path,
    seconds: float,
) -> dict[str, Any]:
    model, tracker, method = parts.core, parts.tracker, parts.method
    best = load_checkpoint(out / "checkpoint.pt")
    model.load_state_dict(best["model"])
    test = evaluate_split(model, data, "test", config, ctx.device, ctx)

    seen = tracker.seen.cpu().numpy()
    flagged_count = tracker.flagged.cpu().numpy()
    flagged = is_flagged(seen, flagged_count)  # the rule `noisekit make cleaned` reads the report by
    drawn = seen > 0
    noise = (
        detection(flagged[drawn], data.train.noisy[drawn])
        if config.filtered
        else {"precision": None, "recall": None, "flagged_fraction": 0.0}
    )
    report = pd.DataFrame(
        {
            "image_id": data.train.image_ids,
            "label": data.train.labels,
            "clean_label": data.train.clean,
            "is_noisy": pd.array([None if v < 0 else bool(v) for v in data.train.noisy], dtype="boolean"),
            "times_seen": seen,
            "times_flagged": flagged_count,
            "last_p_clean": tracker.last_p.cpu().numpy(),
            "likely_label": tracker.likely.cpu().numpy(),  # the filter's most likely class at the last draw; -1
        }
    )
    truth = true_rate(data.train.noisy)
    # the warm-up never selects; with the authors' start-up the batch-only start does not either
    started = config.warmup if config.startup == "ours" else max(config.warmup, config.bank_start)
    summary = {
        "dataset": config.dataset,
        "method": config.method,
        "filter": config.filter,
        "loss": config.method,  # the older names of the two fields above
        "prism": config.filter == "prism",
        "seed": config.seed,
        "iterations": config.iterations,
        "warmup": config.warmup,
        # the first iteration whose batch PRISM filtered (null if it never did); before it every sample trained
        "selection_started": started if config.filtered and started < config.iterations else None,
        "best_iteration": state.best_iteration,
        "selected_by": selected_by(config, data, state),
        "validation": data.val_by,
        "test": test,
        "noise_detection": noise,
        "filter_rate": config.filter_rate,
        "rate_estimate": rate_record(state, truth),
        "train_seconds": round(seconds, 1),
        "processes": ctx.world_size,
        "backend": torch.distributed.get_backend() if ctx.distributed else None,
    }
    if method.report_key is not None:
        summary[method.report_key] = method.report(data.train.labels, data.train.clean)
    if not ctx.is_main:
        return summary
    with atomic_path(out / "noise_report.parquet") as tmp:
        report.to_parquet(tmp, index=False)
    write_json(out / "summary.json", summary)
    plot_curves(state, out / "curves.png", title=f"{config.dataset}  {run_name(config)}", true_rate=truth)
    return summary


def true_rate(noisy: np.ndarray) -> float | None:
    """The share of noisy labels among the training images whose flag is known (None: none known)."""
    known = noisy >= 0
    return float((noisy[known] == 1).mean()) if known.any() else None


def rate_record(state: RunState, truth: float | None) -> dict[str, Any]:
    """The filter's R over the run (``--filter-rate auto``: its estimate) at each log step, its final value, and the
    true share of noisy training labels where known (``truth``)."""
    rows = [(s["iteration"], s["rate"]) for s in state.steps if s.get("rate") is not None]
    return {
        "final": round(rows[-1][1], 4) if rows else None,
        "true": truth,
        "iterations": [it for it, _ in rows],
        "values": [round(v, 4) for _, v in rows],
    }


def run_name(config: TrainConfig) -> str:
    """``method`` or ``method + filter`` (``mcl + PRISM``)."""
    return config.method + {"none": "", "prism": " + PRISM"}.get(config.filter, f" + {config.filter}")


def plot_curves(state: RunState, path: Path, *, title: str, true_rate: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 3.6))
    its = [row["iteration"] for row in state.history]
    for key, name in (("precision_at_1", "P@1"), ("mean_average_precision_at_r", "MAP@R")):
        if state.history and key in state.history[0]:
            line = left.plot(
                its, [row[key] for row in state.history], marker="o", label=f"val {name} (training labels)"
            )
        if state.history and f"clean_{key}" in state.history[0]:
            left.plot(
                its,
                [row[f"clean_{key}"] for row in state.history],
                marker="o",
                linestyle="--",
                color=line[0].get_color(),
                label=f"val {name} (clean labels)",
            )
    left.set(xlabel="iteration", title="validation retrieval", ylim=(0, 1))
    if left.lines:  # no validation split (--val-fraction 0): an empty panel
        left.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)  # beside, not on, the curves
    steps = state.steps
    for key, name in (("flag_precision", "flagged precision"), ("flag_recall", "flagged recall"), ("kept", "kept")):
        right.plot([s["iteration"] for s in steps], [np.nan if s[key] is None else s[key] for s in steps], label=name)
    if any(s.get("rate") is not None for s in steps):  # the filter's R: fixed, or the auto estimate
        rates = [np.nan if s.get("rate") is None else s["rate"] for s in steps]
        right.plot([s["iteration"] for s in steps], rates, linestyle="--", color="black", label="filter rate R")
        if true_rate is not None:
            right.axhline(true_rate, linestyle=":", color="grey", label=f"true noise rate {true_rate:.2f}")
    right.set(xlabel="iteration", title="noise detection (per batch)", ylim=(0, 1.02))
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def evaluate_checkpoint(path: Path, dataset: str, *, split: str = "test", device: str = "cpu") -> dict[str, Any]:
    """Score a checkpoint's model on ``split`` of ``dataset``."""
    from prism.config import from_dict

    if split not in ("train", "val", "test"):
        raise NoisekitError(f"--split must be train, val or test, got {split!r}")
    target = check_device(device)
    payload = load_checkpoint(path)
    config = from_dict(payload["config"], where=str(path)).replace(dataset=dataset)
    data = prepare(dataset, val_fraction=config.val_fraction, seed=config.seed, root=config.root)
    if getattr(data, split) is None:
        raise NoisekitError(f"{dataset} has no {split} split under this checkpoint's --val-fraction")
    config = resolve(config, data.shape)  # checkpoints written before the defaults were resolved
    model = build_model(  # retrieval normalises every output: the same model serves raw-feature methods
        config.arch, embed_dim=config.embed_dim, weights="random", seed=config.seed, pooling=config.pooling
    )
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise NoisekitError(
            f"{path}: its weights do not fit a {config.arch} model for {dataset} ({str(exc).splitlines()[0][:100]})"
        ) from None
    metrics = evaluate_split(model.to(target), data, split, config, target)
    return {"checkpoint": str(path), "dataset": dataset, "split": split, "iteration": payload["iteration"], **metrics}

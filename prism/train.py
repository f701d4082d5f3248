"""``prism train``: one training run, read top to bottom.

Per iteration: a P x K batch -> embeddings -> PRISM keep-mask (or keep all) -> loss on the kept samples -> Adam step
-> the kept embeddings enter the bank -> centres of the kept classes refresh. Every ``eval_every`` iterations the
validation split (carved from train, never the test set) is scored and the best model kept; at the end the best
model is scored on the clean test split. The selection stays on the device; the host reads it back only at log and
evaluation steps.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from noisekit.errors import NoisekitError
from noisekit.manifest import atomic_path, write_json
from noisekit.progress import progress as progress_bar
from prism.config import TrainConfig, resolve, save_config
from prism.data import (
    EncodedImages,
    Images,
    PreloadedBatches,
    TrainingData,
    collate_encoded,
    decode_batch,
    eval_transform,
    prepare,
    train_transform,
)
from prism.dist import DistContext, setup, sync_batchnorm, teardown
from prism.evaluate import embed_loader, retrieval_metrics
from prism.losses import build_loss
from prism.memory import FeatureBank
from prism.models import build_model
from prism.samplers import make_sampler
from prism.selection import PrismSelector

# options that may differ between a run and its resumption; everything else must match the checkpoint
RESUMABLE = {"out", "device", "workers", "eval_every", "log_every", "stop_at", "trace", "compile"}
SELECTION_METRIC = "mean_average_precision_at_r"
SINGLE = DistContext()  # one process


@dataclass
class NoiseTracker:
    """Per training image: how often it was drawn, how often flagged, its last P_clean (on the device)."""

    seen: torch.Tensor
    flagged: torch.Tensor
    last_p: torch.Tensor

    @classmethod
    def create(cls, n: int, device: torch.device) -> NoiseTracker:
        return cls(
            torch.zeros(n, dtype=torch.long, device=device),
            torch.zeros(n, dtype=torch.long, device=device),
            torch.full((n,), float("nan"), device=device),
        )

    def update(self, rows: torch.Tensor, keep: torch.Tensor, p: torch.Tensor | None) -> None:
        self.seen.index_add_(0, rows, torch.ones_like(rows))
        self.flagged.index_add_(0, rows, (~keep).long())
        if p is not None:
            self.last_p.index_copy_(0, rows, p.float())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"seen": self.seen.clone(), "flagged": self.flagged.clone(), "last_p": self.last_p.clone()}


@dataclass
class RunState:
    iteration: int = 0
    best_score: float = -math.inf
    best_iteration: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per evaluation
    steps: list[dict[str, float]] = field(default_factory=list)  # one row per log step


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
    if which not in data.eval_sets:  # validation runs every eval_every iterations: decode (small) images once
        data.eval_sets[which] = Images(
            split, eval_transform(data.small, config.image_size), preload=config.image_size if data.small else None
        )
    dataset = data.eval_sets[which]
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


def checkpoint_payload(
    config: TrainConfig, state: RunState, model, loss, optimizer, scheduler, bank, selector, tracker
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "iteration": state.iteration,
        "best_score": state.best_score,
        "best_iteration": state.best_iteration,
        "history": json.dumps(state.history),
        "steps": json.dumps(state.steps),
        "model": model.state_dict(),
        "loss": loss.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "bank": bank.state_dict(),
        "selector": selector.state_dict() if selector is not None else {},
        "tracker": tracker.state_dict(),
    }


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NoisekitError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises zip, pickle and runtime errors for a damaged file
        raise NoisekitError(
            f"{path}: not a readable prism checkpoint ({type(exc).__name__}); is it corrupted?"
        ) from None
    if not isinstance(payload, dict) or "config" not in payload or "model" not in payload:
        raise NoisekitError(f"{path}: not a prism checkpoint (no config or model inside)")
    return payload


def check_same_config(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    now = config.to_dict()
    diff = [k for k in now if k not in RESUMABLE and saved.get(k) != now[k]]
    if diff:
        k = diff[0]
        raise NoisekitError(
            f"{path} was written by another config ({k}: {saved.get(k)!r} there, {now[k]!r} now); "
            "use a fresh --out or the same options"
        )


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training; write the run's outputs into ``config.out``; return the summary.

    Under ``torchrun`` every rank runs this function; only rank 0 writes files.
    """
    ctx = setup(config.device)
    try:
        return _train(config, ctx, resume=resume, progress=progress and ctx.is_main)
    finally:
        teardown(ctx)


def _train(config: TrainConfig, ctx: DistContext, *, resume: bool, progress: bool) -> dict[str, Any]:
    out = Path(config.out)
    device = ctx.device
    data = prepare(config.dataset, val_fraction=config.val_fraction, seed=config.seed)
    config = resolve(config, data.shape)
    core = build_model(
        config.arch, embed_dim=config.embed_dim, weights=config.weights, seed=config.seed, pooling=config.pooling
    ).to(device)
    if ctx.distributed:  # batch statistics over the global batch, as one process would compute them
        core = sync_batchnorm(core, device)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if device.type == "cuda" and config.channels_last else torch.contiguous_format
    core = core.to(memory_format=memory_format)
    if config.compile:
        core.backbone.compile()  # in place: checkpoint keys stay those of the plain module
    model = (
        DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
        if ctx.distributed
        else core
    )
    loss_fn = build_loss(
        config.loss,
        num_classes=data.num_classes,
        embed_dim=config.embed_dim,
        memory_weight=config.memory_weight,
        seed=config.seed,
        mcl_norm=config.mcl_norm,
        filtered=config.prism,
    ).to(device)
    groups = [{"params": list(core.parameters())}]
    if list(loss_fn.parameters()):  # SoftTriple's centres: their own rate, no weight decay (the authors' CENTER_LR)
        groups.append({"params": list(loss_fn.parameters()), "lr": config.proxy_lr, "weight_decay": 0.0})
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations)
    bank = FeatureBank(
        max(config.bank_size or len(data.train.files), config.batch_size),
        config.embed_dim,
        num_classes=data.num_classes if config.prism else 0,
        device=device,
    )
    selector = (
        PrismSelector(
            data.num_classes,
            config.embed_dim,
            rate=config.filter_rate,
            window=config.window,
            mode=config.mode,
            startup=config.startup,
            device=device,
        )
        if config.prism
        else None
    )
    tracker = NoiseTracker.create(len(data.train.files), device)
    state = RunState()

    last = out / "last.pt"
    if resume:
        payload = load_checkpoint(last)
        check_same_config(payload["config"], config, last)
        core.load_state_dict(payload["model"])
        loss_fn.load_state_dict(payload["loss"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        bank.load_state_dict(payload["bank"])
        if selector is not None:
            selector.load_state_dict(payload["selector"])
        tracker = NoiseTracker(**{k: v.to(device) for k, v in payload["tracker"].items()})
        state = RunState(
            payload["iteration"],
            payload["best_score"],
            payload["best_iteration"],
            json.loads(payload["history"]),
            json.loads(payload["steps"]),
        )
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")

    def save(path: Path) -> None:
        if ctx.is_main:
            payload = checkpoint_payload(config, state, core, loss_fn, optimizer, scheduler, bank, selector, tracker)
            save_checkpoint(payload, path)

    sampler = make_sampler(
        config.sampler,
        data.train.labels,
        p=config.classes_per_batch,
        k=config.samples_per_class,
        seed=config.seed,
        start=state.iteration,
        stop=config.stop_at or config.iterations,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    on_device = config.decode == "device" and not data.small
    dataset = (
        EncodedImages(data.train, config.image_size, config.crop_scale)
        if on_device
        else Images(
            data.train,
            train_transform(data.small, config.image_size, config.crop_scale),
            preload=config.image_size if data.small else None,
        )
    )
    loader = (
        PreloadedBatches(dataset, sampler)
        if data.small
        else DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_encoded if on_device else None,
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if config.workers else None,
        )
    )
    noisy_all = torch.as_tensor(data.train.noisy, device=device)
    window_stats: list[torch.Tensor] = []
    trace: list[dict[str, torch.Tensor]] = []
    start_time = time.perf_counter()
    bar = progress_bar(total=len(sampler), desc="train", unit="it", disable=not progress, leave=False)

    model.train()
    for images, labels, rows in loader:
        it = state.iteration
        if on_device:
            images = decode_batch(images, config.image_size, device)
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        labels, rows = labels.to(device, non_blocking=True), rows.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            local = model(images)
        # every rank sees the whole global batch; only its own share of the embeddings carries a gradient
        emb = ctx.gather_with_grad(local.float())
        labels, rows = ctx.gather(labels), ctx.gather(rows)
        banked = it >= config.bank_start  # before it: the batch-only loss, no bank, no selection (XBM.START_ITERATION)
        if selector is not None and banked and it >= config.warmup:
            selection = selector(emb, labels, bank)
            keep, p, threshold = selection.keep, selection.p, selection.threshold
        else:
            keep, p, threshold = torch.ones_like(labels, dtype=torch.bool), None, torch.tensor(float("nan"))
        loss = loss_fn(emb, labels, keep, bank if loss_fn.uses_bank and banked else None)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the model's gradients over ranks, hence the factor; the loss's own parameters (SoftTriple's
        # centres) live outside DDP and see the full global-batch gradient on every rank, hence the division
        (loss * ctx.world_size).backward()
        for param in loss_fn.parameters():
            if param.grad is not None:
                param.grad /= ctx.world_size
        optimizer.step()
        scheduler.step()
        if banked:
            bank.enqueue(emb.detach(), labels, keep)
            if selector is not None:
                selector.update_centres(bank, labels, keep)
        tracker.update(rows, keep, p)
        if config.trace:
            trace.append(
                {
                    "keep": keep.cpu(),
                    "bank_feats": bank.feats.cpu().clone(),
                    "bank_labels": bank.labels.cpu().clone(),
                    "centres": selector.centres.cpu().clone() if selector is not None else torch.empty(0),
                }
            )

        noisy = noisy_all[rows]
        flagged = ~keep
        window_stats.append(
            torch.stack(
                [
                    loss.detach().float(),
                    keep.float().mean(),
                    threshold.float().to(device),
                    (flagged & (noisy == 1)).sum().float(),
                    (flagged & (noisy >= 0)).sum().float(),
                    (noisy == 1).sum().float(),
                ]
            )
        )
        state.iteration = it + 1
        bar.update(1)

        if state.iteration % config.log_every == 0 or state.iteration == config.iterations:
            s = torch.stack(window_stats).cpu().numpy()
            window_stats.clear()
            row = {
                "iteration": state.iteration,
                "seconds": round(time.perf_counter() - start_time, 3),  # since this (resumed) run's loop began
                "loss": float(s[:, 0].mean()),
                "kept": float(s[:, 1].mean()),
                "threshold": float(np.nanmean(s[:, 2])) if np.isfinite(s[:, 2]).any() else None,
                "flag_precision": float(s[:, 3].sum() / s[:, 4].sum()) if s[:, 4].sum() else None,
                "flag_recall": float(s[:, 3].sum() / s[:, 5].sum()) if s[:, 5].sum() else None,
            }
            state.steps.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", kept=f"{row['kept']:.2f}")

        if state.iteration % config.eval_every == 0 or state.iteration == config.iterations:
            metrics = evaluate_split(core, data, "val", config, device, ctx) if data.val is not None else {}
            model.train()
            state.history.append(
                {
                    "iteration": state.iteration,
                    "split": "val",
                    **metrics,
                    **{
                        k: v
                        for k, v in (state.steps[-1] if state.steps else {}).items()
                        if k not in ("iteration", "seconds")
                    },
                }
            )
            # select=last, or no validation split: the newest model is the best one. A NaN score (every validation
            # class of one image: MAP@R is undefined) never beats a number; while every score is NaN, the newest wins
            score = metrics[SELECTION_METRIC] if config.select == "val" and metrics else float(state.iteration)
            score = -math.inf if math.isnan(score) else score
            if score > state.best_score or score == state.best_score == -math.inf:
                state.best_score, state.best_iteration = score, state.iteration
                save(out / "checkpoint.pt")
            save(last)
            if ctx.is_main:
                write_metrics(state, out)

        if config.stop_at and state.iteration >= config.stop_at:
            break
    bar.close()
    save(last)
    if ctx.is_main:
        write_metrics(state, out)
        if config.trace:
            save_checkpoint({"steps": trace}, out / "trace.pt")
    if ctx.distributed:
        torch.distributed.barrier()  # rank 0's checkpoints are on disk before anyone reads them
    if state.iteration < config.iterations:
        return {"stopped_at": state.iteration, "out": str(out)}
    return finish(config, data, state, core, tracker, ctx, out, time.perf_counter() - start_time)


def selected_by(config: TrainConfig, data: TrainingData, state: RunState) -> str:
    if config.select != "val" or data.val is None:
        return "last"
    if state.best_score == -math.inf:
        return f"last (validation {SELECTION_METRIC} undefined: every validation class has one image)"
    return f"validation {SELECTION_METRIC}"


def write_metrics(state: RunState, out: Path) -> None:
    with atomic_path(out / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in state.history))


def finish(
    config: TrainConfig,
    data: TrainingData,
    state: RunState,
    model: torch.nn.Module,
    tracker: NoiseTracker,
    ctx: DistContext,
    out: Path,
    seconds: float,
) -> dict[str, Any]:
    best = load_checkpoint(out / "checkpoint.pt")
    model.load_state_dict(best["model"])
    test = evaluate_split(model, data, "test", config, ctx.device, ctx)

    seen = tracker.seen.cpu().numpy()
    flagged_count = tracker.flagged.cpu().numpy()
    # an image counts as flagged when PRISM dropped it in most of the batches that drew it
    flagged = (seen > 0) & (flagged_count * 2 > seen)
    drawn = seen > 0
    noise = (
        detection(flagged[drawn], data.train.noisy[drawn])
        if config.prism
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
        }
    )
    summary = {
        "dataset": config.dataset,
        "loss": config.loss,
        "prism": config.prism,
        "seed": config.seed,
        "iterations": config.iterations,
        "warmup": config.warmup,
        # the first iteration whose batch PRISM filtered (null if it never did); before it every sample trained
        "selection_started": config.warmup if config.prism and config.warmup < config.iterations else None,
        "best_iteration": state.best_iteration,
        "selected_by": selected_by(config, data, state),
        "validation": data.val_by,
        "test": test,
        "noise_detection": noise,
        "train_seconds": round(seconds, 1),
        "processes": ctx.world_size,
        "backend": torch.distributed.get_backend() if ctx.distributed else None,
    }
    if not ctx.is_main:
        return summary
    with atomic_path(out / "noise_report.parquet") as tmp:
        report.to_parquet(tmp, index=False)
    write_json(out / "summary.json", summary)
    plot_curves(state, out / "curves.png", title=f"{config.dataset}  {config.loss}{' + PRISM' if config.prism else ''}")
    return summary


def plot_curves(state: RunState, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
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
        left.legend(loc="lower right", fontsize=8)
    steps = state.steps
    for key, name in (("flag_precision", "flagged precision"), ("flag_recall", "flagged recall"), ("kept", "kept")):
        right.plot([s["iteration"] for s in steps], [np.nan if s[key] is None else s[key] for s in steps], label=name)
    right.set(xlabel="iteration", title="PRISM noise detection (per batch)", ylim=(0, 1.02))
    right.legend(loc="lower right")
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
    payload = load_checkpoint(path)
    config = from_dict(payload["config"], where=str(path)).replace(dataset=dataset)
    data = prepare(dataset, val_fraction=config.val_fraction, seed=config.seed)
    if getattr(data, split) is None:
        raise NoisekitError(f"{dataset} has no {split} split under this checkpoint's --val-fraction")
    config = resolve(config, data.shape)  # checkpoints written before the defaults were resolved
    model = build_model(
        config.arch, embed_dim=config.embed_dim, weights="random", seed=config.seed, pooling=config.pooling
    )
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        raise NoisekitError(
            f"{path}: its weights do not fit a {config.arch} model for {dataset} ({str(exc).splitlines()[0][:100]})"
        ) from None
    metrics = evaluate_split(model.to(device), data, split, config, torch.device(device))
    return {"checkpoint": str(path), "dataset": dataset, "split": split, "iteration": payload["iteration"], **metrics}

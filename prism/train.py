"""``prism train``: one training run, read top to bottom.

Per iteration (:func:`train_step`): a P x K batch -> embeddings -> PRISM keep-mask (or keep all) -> loss on the kept
samples -> Adam step -> the kept embeddings enter the bank -> centres of the kept classes refresh. Every
``eval_every`` iterations the validation split (carved from train, never the test set) is scored and the kept model
saved (:func:`validate`); at the end the kept model is scored on the clean test split (``prism/report.py``). The
selection stays on the device; the host reads it back only at log and evaluation steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from noisekit.progress import progress as progress_bar
from prism.checkpoint import (
    RESUME_ONLY,
    RUN_FILES,
    NoiseTracker,
    RunState,
    check_out,
    check_same_config,
    checkpoint_payload,
    load_checkpoint,
    save_checkpoint,
    write_metrics,
)
from prism.config import TrainConfig, resolve, save_config
from prism.data import (
    EncodedImages,
    Images,
    PreloadedBatches,
    TrainingData,
    collate_encoded,
    decode_batch,
    prepare,
    train_transform,
)
from prism.dist import DistContext, setup, sync_batchnorm, teardown
from prism.filters import Filter, build_filter
from prism.memory import FeatureBank
from prism.methods import Context, Method, build_method, spec
from prism.methods.base import Twin, open_set
from prism.models import build_model
from prism.report import SELECTION_METRIC, evaluate_checkpoint, evaluate_split, finish, train_features
from prism.samplers import make_sampler

__all__ = ["evaluate_checkpoint", "load_checkpoint", "train"]


@dataclass
class Parts:
    """What a run trains and carries from step to step."""

    core: torch.nn.Module  # the plain model (checkpoint keys, evaluation)
    model: torch.nn.Module  # the one trained: ``core`` (and a method's second network), in DDP under torchrun
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    bank: FeatureBank
    selector: Filter | None
    tracker: NoiseTracker
    bf16: bool
    memory_format: torch.memory_format

    def payload(self, config: TrainConfig, state: RunState) -> dict[str, Any]:
        return checkpoint_payload(
            config, state, self.core, self.method, self.optimizer, self.scheduler, self.bank, self.selector,
            self.tracker,
        )  # fmt: skip


def method_context(config: TrainConfig, data: TrainingData) -> Context:
    return Context(
        num_classes=data.num_classes,
        embed_dim=config.embed_dim,
        seed=config.seed,
        iterations=config.iterations,
        warmup=config.warmup,
        batch_size=config.batch_size,
        train_images=len(data.train.files),
        rate=config.filter_rate,
        options=config.to_dict(),
        noise=data.manifest.meta.noise,
        open_set=open_set(data.manifest),
    )


def build_parts(config: TrainConfig, data: TrainingData, ctx: DistContext) -> Parts:
    device = ctx.device
    core = build_model(
        config.arch,
        embed_dim=config.embed_dim,
        weights=config.weights,
        seed=config.seed,
        pooling=config.pooling,
        normalize=spec(config.method).normalized,
        freeze_bn=bool(config.freeze_bn),
    ).to(device)
    method = build_method(config.method, method_context(config, data)).to(device)
    nhwc = config.channels_last == "always" or (config.channels_last == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if nhwc else torch.contiguous_format
    if ctx.distributed:  # batch statistics over the global batch, as one process would compute them
        core = sync_batchnorm(core, device)
        if method.partner is not None:
            method.second = sync_batchnorm(method.partner, device)
    core = core.to(memory_format=memory_format)
    if config.compile:
        core.backbone.compile()  # in place: checkpoint keys stay those of the plain module
    network = core if method.partner is None else Twin(core, method.partner.to(memory_format=memory_format))
    model = (
        DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
        if ctx.distributed
        else network
    )
    # proxies and centres: their own rate, no weight decay (SoftTriple: the authors' CENTER_LR and separate Adam)
    proxies = {id(p) for p in method.proxy_parameters()}
    groups = [{"params": list(network.parameters()) + [p for p in method.head_parameters() if id(p) not in proxies]}]
    if proxies:
        groups.append({"params": method.proxy_parameters(), "lr": config.proxy_lr, "weight_decay": 0.0})
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    bank = FeatureBank(
        max(config.bank_size or len(data.train.files), config.batch_size) if config.filtered or method.uses_bank else 1,
        config.embed_dim,
        num_classes=data.num_classes if config.filtered else 0,
        device=device,
    )
    selector = None
    if config.filtered:
        selector = build_filter(config.filter, data.num_classes, config.embed_dim, config, device, method)
    return Parts(
        core=core,
        model=model,
        method=method,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations),
        bank=bank,
        selector=selector,
        tracker=NoiseTracker.create(len(data.train.files), device),
        bf16=config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"),
        memory_format=memory_format,
    )


def restore(parts: Parts, config: TrainConfig, path: Path) -> RunState:
    """Load ``path`` (``last.pt``) into the run's parts; the options must be those it was written with."""
    payload = load_checkpoint(path)
    check_same_config(payload["config"], config, path)
    parts.core.load_state_dict(payload["model"])
    parts.method.load_state_dict(payload["loss"])
    parts.optimizer.load_state_dict(payload["optimizer"])
    parts.scheduler.load_state_dict(payload["scheduler"])
    parts.bank.load_state_dict(payload["bank"])
    if parts.selector is not None:
        parts.selector.load_state_dict(payload["selector"])
    tracked = {k: v.to(parts.tracker.seen.device) for k, v in payload["tracker"].items()}
    tracked.setdefault("likely", parts.tracker.likely)  # checkpoints before the likely class was tracked
    parts.tracker = NoiseTracker(**tracked)
    return RunState.from_payload(payload)


def make_loader(config: TrainConfig, data: TrainingData, ctx: DistContext, start: int) -> tuple[Any, bool]:
    """The training batches from iteration ``start`` on, and whether the device decodes them."""
    sampler = make_sampler(
        config.sampler,
        data.train.labels,
        p=config.classes_per_batch,
        k=config.samples_per_class,
        seed=config.seed,
        start=start,
        stop=config.stop_at or config.iterations,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    on_device = config.decode == "device" and not data.small
    if on_device:
        dataset = EncodedImages(data.train, config.image_size, config.crop_scale)
    else:
        transform = train_transform(data.small, config.image_size, config.crop_scale)
        dataset = Images(data.train, transform, preload=config.image_size if data.small else None)
    if data.small:
        return PreloadedBatches(dataset, sampler), False
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_encoded if on_device else None,
        num_workers=config.workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if config.workers else None,
    )
    return loader, on_device


def train_step(
    parts: Parts,
    config: TrainConfig,
    data: TrainingData,
    ctx: DistContext,
    it: int,
    batch: tuple,
    noisy_all: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One iteration; returns its statistics (on the device: loss, kept share, threshold, flag counts) and the trace
    row (``--trace``)."""
    images, labels, rows = batch
    device = ctx.device
    # a two-stage method (F-correction) reads the training split's features when its stage ends
    parts.method.stage(it, lambda: train_features(parts.core, data, config, device))
    images = images.to(device, non_blocking=True, memory_format=parts.memory_format)
    labels, rows = labels.to(device, non_blocking=True), rows.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=parts.bf16):
        local = parts.model(images)
    # every rank sees the whole global batch; only its own share of the embeddings carries a gradient
    emb = ctx.gather_with_grad(local.float())
    labels, rows = ctx.gather(labels), ctx.gather(rows)
    # before --bank-start the loss is batch-only (XBM's START_ITERATION). The filter's bank fills from the first step
    # (--startup ours) or, as in the authors' code, from the bank start too (--startup authors)
    banked = it >= config.bank_start
    selector, bank = parts.selector, parts.bank
    filling = banked or (selector is not None and config.startup == "ours")
    likely = None
    if selector is not None and filling and it >= config.warmup:
        selection = selector(emb, labels, bank)
        keep, p, threshold, likely = selection.keep, selection.p, selection.threshold, selection.likely
    else:
        keep, p, threshold = torch.ones_like(labels, dtype=torch.bool), None, torch.tensor(float("nan"))
    loss = parts.method(emb, labels, keep, bank if parts.method.uses_bank and banked else None, it)
    noisy = noisy_all[rows]
    parts.method.observe(noisy)
    parts.optimizer.zero_grad(set_to_none=True)
    # DDP averages the networks' gradients over ranks, hence the factor; the method's own parameters (proxies,
    # classifiers) live outside DDP and see the full global-batch gradient on every rank, hence the division
    (loss * ctx.world_size).backward()
    for param in parts.method.head_parameters():
        if param.grad is not None:
            param.grad /= ctx.world_size
    parts.optimizer.step()
    parts.scheduler.step()
    if filling and (selector is not None or parts.method.uses_bank):
        bank.enqueue(emb.detach(), labels, None if selector is not None and selector.enqueue_all else keep)
        # the authors' loss builds no centres before its warm-up ends (NOISE.WARM_UP); ours starts from those built
        if selector is not None and (it >= config.warmup or config.startup == "ours"):
            selector.update(bank, labels, keep)
    parts.tracker.update(rows, keep, p, likely)
    trace = {}
    if config.trace:
        trace = {
            "keep": keep.cpu(),
            "bank_feats": bank.feats.cpu().clone(),
            "bank_labels": bank.labels.cpu().clone(),
            "centres": selector.centres.cpu().clone() if selector is not None else torch.empty(0),
        }
    flagged = ~keep
    stats = torch.stack(
        [
            loss.detach().float(),
            keep.float().mean(),
            threshold.float().to(device),
            (flagged & (noisy == 1)).sum().float(),
            (flagged & (noisy >= 0)).sum().float(),
            (noisy == 1).sum().float(),
            rate_estimate(parts).float().to(device),
        ]
    )
    return stats, trace


def rate_estimate(parts: Parts) -> torch.Tensor:
    """() the R the filter (or Co-teaching) cuts at now: ``--filter-rate auto``'s estimate or the fixed R; NaN
    without either."""
    if parts.selector is not None:
        return parts.selector.rate.current()
    return parts.method.rate_estimate()


def log_row(iteration: int, seconds: float, stats: list[torch.Tensor]) -> dict[str, Any]:
    """One row of ``state.steps``: the means of the steps since the last log."""
    s = torch.stack(stats).cpu().numpy()
    return {
        "iteration": iteration,
        "seconds": round(seconds, 3),  # since this (resumed) run's loop began
        "loss": float(s[:, 0].mean()),
        "kept": float(s[:, 1].mean()),
        "threshold": float(np.nanmean(s[:, 2])) if np.isfinite(s[:, 2]).any() else None,
        "flag_precision": float(s[:, 3].sum() / s[:, 4].sum()) if s[:, 4].sum() else None,
        "flag_recall": float(s[:, 3].sum() / s[:, 5].sum()) if s[:, 5].sum() else None,
        "rate": float(s[-1, 6]) if np.isfinite(s[-1, 6]) else None,  # the filter's R at the row's last step
    }


def validate(
    parts: Parts, config: TrainConfig, data: TrainingData, ctx: DistContext, state: RunState, out: Path
) -> None:
    """Score the validation split, record it, and save the kept model and ``last.pt``."""
    metrics = evaluate_split(parts.core, data, "val", config, ctx.device, ctx) if data.val is not None else {}
    parts.model.train()
    latest = {k: v for k, v in (state.steps[-1] if state.steps else {}).items() if k not in ("iteration", "seconds")}
    state.history.append({"iteration": state.iteration, "split": "val", **metrics, **latest})
    # select=last, or no validation split: the newest model is the best one. A NaN score (every validation class
    # of one image: MAP@R is undefined) never beats a number; while every score is NaN, the newest wins
    score = metrics[SELECTION_METRIC] if config.select == "val" and metrics else float(state.iteration)
    score = -math.inf if math.isnan(score) else score
    kept = score > state.best_score or score == state.best_score == -math.inf
    if kept:
        state.best_score, state.best_iteration = score, state.iteration
    if ctx.is_main:
        payload = parts.payload(config, state)  # one copy of the state serves both files
        if kept:  # the optimiser's moments (twice the weights) serve only --resume, which reads last.pt
            save_checkpoint({k: v for k, v in payload.items() if k not in RESUME_ONLY}, out / "checkpoint.pt")
        save_checkpoint(payload, out / "last.pt")
        write_metrics(state, out)


def train(
    config: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) training; write the run's outputs into ``config.out``; return the summary.

    Under ``torchrun`` every rank runs this function; only rank 0 writes files.
    """
    out = Path(config.out)
    check_out(out, resume=resume, overwrite=overwrite)
    created = not out.exists()
    ctx = setup(config.device)
    try:
        return _train(config, ctx, resume=resume, progress=progress and ctx.is_main)
    except BaseException:
        # failed or interrupted before the first checkpoint: leave no folder that looks like a run but holds none
        if ctx.is_main and not (out / "last.pt").is_file():
            (out / "config.yaml").unlink(missing_ok=True)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        raise
    finally:
        teardown(ctx)


def _train(config: TrainConfig, ctx: DistContext, *, resume: bool, progress: bool) -> dict[str, Any]:
    out = Path(config.out)
    data = prepare(config.dataset, val_fraction=config.val_fraction, seed=config.seed, root=config.root)
    config = resolve(config, data.shape)
    parts = build_parts(config, data, ctx)
    state = restore(parts, config, out / "last.pt") if resume else RunState()
    if ctx.is_main:
        if not resume:  # --overwrite: nothing of the replaced run may be mistaken for this one's
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    loader, on_device = make_loader(config, data, ctx, state.iteration)
    noisy_all = torch.as_tensor(data.train.noisy, device=ctx.device)
    window: list[torch.Tensor] = []
    trace: list[dict[str, torch.Tensor]] = []
    state.started = time.perf_counter()
    bar = progress_bar(total=len(loader), desc="train", unit="it", disable=not progress, leave=False)
    parts.model.train()
    for images, labels, rows in loader:
        if on_device:
            images = decode_batch(images, config.image_size, ctx.device)
        stats, row = train_step(parts, config, data, ctx, state.iteration, (images, labels, rows), noisy_all)
        window.append(stats)
        if row:
            trace.append(row)
        state.iteration += 1
        bar.update(1)
        if state.iteration % config.log_every == 0 or state.iteration == config.iterations:
            state.steps.append(log_row(state.iteration, time.perf_counter() - state.started, window))
            window.clear()
            bar.set_postfix(loss=f"{state.steps[-1]['loss']:.3f}", kept=f"{state.steps[-1]['kept']:.2f}")
        if state.iteration % config.eval_every == 0 or state.iteration == config.iterations:
            validate(parts, config, data, ctx, state, out)
        if config.stop_at and state.iteration >= config.stop_at:
            break
    bar.close()
    if ctx.is_main:
        save_checkpoint(parts.payload(config, state), out / "last.pt")
        write_metrics(state, out)
        if config.trace:
            save_checkpoint({"steps": trace}, out / "trace.pt")
    if ctx.distributed:
        torch.distributed.barrier()  # rank 0's checkpoints are on disk before anyone reads them
    if state.iteration < config.iterations:
        return {"stopped_at": state.iteration, "out": str(out)}
    return finish(config, data, state, parts, ctx, out, state.elapsed())

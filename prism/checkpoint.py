"""A run's state and its checkpoints: what ``last.pt`` / ``checkpoint.pt`` hold, reading them back safely, and the
check that a resumed run uses the options it was started with."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from noisekit.errors import NoisekitError
from noisekit.manifest import atomic_path
from prism.config import TrainConfig, canonical

# what only last.pt carries: the state that continues training, not the model that checkpoint.pt shares
RESUME_ONLY = ("optimizer", "scheduler")
# options that may differ between a run and its resumption; everything else must match the checkpoint
RESUMABLE = {"out", "device", "workers", "eval_every", "log_every", "stop_at", "trace", "compile"}


@dataclass
class NoiseTracker:
    """Per training image: how often it was drawn, how often flagged, its last P_clean and the class its filter found
    most likely at that draw (-1: none; on the device)."""

    seen: torch.Tensor
    flagged: torch.Tensor
    last_p: torch.Tensor
    likely: torch.Tensor

    @classmethod
    def create(cls, n: int, device: torch.device) -> NoiseTracker:
        return cls(
            torch.zeros(n, dtype=torch.long, device=device),
            torch.zeros(n, dtype=torch.long, device=device),
            torch.full((n,), float("nan"), device=device),
            torch.full((n,), -1, dtype=torch.long, device=device),
        )

    def update(
        self, rows: torch.Tensor, keep: torch.Tensor, p: torch.Tensor | None, likely: torch.Tensor | None = None
    ) -> None:
        self.seen.index_add_(0, rows, torch.ones_like(rows))
        self.flagged.index_add_(0, rows, (~keep).long())
        if p is not None:
            self.last_p.index_copy_(0, rows, p.float())
        if likely is not None:
            self.likely.index_copy_(0, rows, likely.long())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "seen": self.seen.clone(),
            "flagged": self.flagged.clone(),
            "last_p": self.last_p.clone(),
            "likely": self.likely.clone(),
        }


@dataclass
class RunState:
    iteration: int = 0
    best_score: float = -math.inf
    best_iteration: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per evaluation
    steps: list[dict[str, float]] = field(default_factory=list)  # one row per log step
    seconds_before: float = 0.0  # training seconds of the sessions before this one (a resumed run)
    started: float = field(default_factory=time.perf_counter)  # when this session's loop began

    def elapsed(self) -> float:
        """Training seconds of the whole run, every session together."""
        return self.seconds_before + time.perf_counter() - self.started

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RunState:
        return cls(
            payload["iteration"],
            payload["best_score"],
            payload["best_iteration"],
            json.loads(payload["history"]),
            json.loads(payload["steps"]),
            float(payload.get("seconds", 0.0)),  # checkpoints before this field: the sessions' time is lost
        )


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
        "seconds": state.elapsed(),
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
    """Every option outside RESUMABLE must match; an option newer than the checkpoint counts as its default."""
    now = config.to_dict()
    # options newer than the checkpoint: what a run of that time did (BatchNorm statistics trained), else the default
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | {"freeze_bn": False}
    saved = canonical(saved, where=str(path))
    saved = {k: saved.get(k, defaults[k]) for k in now}
    diff = [k for k in now if k not in RESUMABLE and saved[k] != now[k]]
    if diff:
        k = diff[0]
        raise NoisekitError(
            f"{path} was written by another config ({k}: {saved.get(k)!r} there, {now[k]!r} now); "
            "use a fresh --out or the same options"
        )


def write_metrics(state: RunState, out: Path) -> None:
    with atomic_path(out / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in state.history))


RUN_FILES = ("config.yaml", "last.pt", "checkpoint.pt", "metrics.jsonl", "summary.json", "curves.png", "trace.pt")


def check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """One rule for a run's folder, as noisekit's for a variant: a folder that holds a run (``last.pt``) is continued
    with ``resume`` or replaced with ``overwrite``, never silently; ``resume`` needs a checkpoint to continue."""
    if out.exists() and not out.is_dir():
        raise NoisekitError(f"--out {out} is a file; expected a folder for the run's outputs")
    last = out / "last.pt"
    if resume and not last.is_file():
        raise NoisekitError(
            f"--resume: {out} holds no last.pt (the run stopped before its first checkpoint, or never ran there); "
            "run again without --resume to start it"
        )
    if not resume and last.is_file() and not overwrite:
        raise NoisekitError(
            f"--out {out} holds a run (last.pt); pass --resume to continue it or --overwrite to replace it"
        )

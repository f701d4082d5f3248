"""The ``--device`` check both tools share: a torch device string that names hardware this machine has."""

from __future__ import annotations

import torch

from noisekit.errors import NoisekitError


def check_device(device: str, *, option: str = "--device") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a :class:`torch.device`, refused in one line when it is not a
    device string or when the device is not there (rather than a CUDA traceback at the first tensor moved)."""
    try:
        target = torch.device(device)
    except (RuntimeError, ValueError):
        raise NoisekitError(f"{option} {device}: expected cpu, cuda, cuda:N or mps") from None
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = f"torch {torch.__version__}" + (" built without CUDA" if torch.version.cuda is None else "")
            raise NoisekitError(f"{option} {device}: no CUDA device is available ({built}); use --device cpu")
        if target.index is not None and target.index >= count:
            raise NoisekitError(
                f"{option} {device}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
            )
    elif target.type == "mps" and not torch.backends.mps.is_available():
        raise NoisekitError(f"{option} {device}: no MPS device is available; use --device cpu")
    elif target.type not in ("cpu", "cuda", "mps"):
        raise NoisekitError(f"{option} {device}: expected cpu, cuda, cuda:N or mps")
    return target

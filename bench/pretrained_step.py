"""Images/s of a real pretrained fine-tuning run against the model-only step at the same size, run by hand (issue 21).

Run: ``prism train`` with the pretrained-cpu preset (the offline ImageNet EfficientNet-Lite0 at 64 px, P x K = 16 x 4,
channels_last, fp32) and MCL + PRISM on omniglot at 50% symmetric noise, for ``--iterations`` with one validation at
the end; its rate is read from the run's own step log (log rows after the first, so start-up, preloading and the
final scoring are not counted): everything a step costs in the loop (sampler, batch assembly, augmentation, the
filter, the bank, logging).
Peer: the model-only step (bench/cpu_paths.py's: forward, MCL loss, backward, Adam on a batch of 64 already in
memory) of the same backbone, size, memory format and frozen BatchNorm statistics (the preset's default for a
pretrained backbone; with batch statistics the step is slower, so that peer would flatter the run).
Prints both rates and their ratio.

    python bench/pretrained_step.py [--iterations 100] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from cpu_paths import _step_time

from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build
from prism.config import load_config
from prism.train import train

BATCH = 64  # the preset's 16 x 4


def run_rate(iterations: int) -> tuple[float, int]:
    """(images/s over the run's log rows after the first, the number of steps they span)."""
    _, clean = build("omniglot", overwrite=True)
    path, _ = save_variant(symmetric(clean.manifest, rate=0.5, seed=0), overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        options = {
            "dataset": f"omniglot/{path.stem}",
            "filter": "prism",
            "filter_rate": 0.5,
            "iterations": iterations,
            "eval_every": iterations,
            "out": str(Path(tmp) / "run"),
        }
        train(load_config(None, options, preset="pretrained-cpu"), overwrite=True, progress=False)
        payload = torch.load(Path(tmp) / "run" / "last.pt", map_location="cpu", weights_only=True)
    rows = json.loads(payload["steps"])[:-1]  # the last row's interval holds the final validation
    first, last = rows[0], rows[-1]
    steps = last["iteration"] - first["iteration"]
    return steps * BATCH / (last["seconds"] - first["seconds"]), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20, help="timed model-only steps")
    args = parser.parse_args()
    print(f"CPU: {torch.get_num_threads()} threads; efficientnet_lite0 at 64 px, batch {BATCH}, channels_last, fp32")
    _, per = _step_time(
        "efficientnet_lite0", bf16=False, channels_last=True, compiled=False, steps=args.steps, freeze_bn=True
    )
    peer = BATCH / per
    print(f"model-only step (peer): {per * 1000:.1f} ms/step, {peer:.1f} img/s", flush=True)
    rate, steps = run_rate(args.iterations)
    print(f"prism train, pretrained-cpu, MCL + PRISM: {rate:.1f} img/s over {steps} steps")
    print(f"run / model-only: {rate / peer:.2f}")


if __name__ == "__main__":
    main()

"""The GPU code paths in their CPU form (issue 23): bf16 autocast, torch.compile and channels_last train on the CPU,
so a crash there cannot wait for a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prism.cli import app
from prism.config import TrainConfig
from prism.models import build_model
from prism.train import load_checkpoint, train

FAST = dict(classes_per_batch=5, samples_per_class=4, eval_every=6, val_fraction=0.2, workers=0)


@pytest.mark.parametrize(("method", "filter_"), [("mcl", "prism"), ("fastap", "none")])
def test_bf16_on_the_cpu_trains_and_keeps_bank_and_centres_float32(
    noisy_digits: str, tmp_path: Path, method: str, filter_: str
) -> None:
    runs = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(
            dataset=noisy_digits, method=method, filter=filter_, iterations=12, warmup=4, bank_start=0,
            precision=precision, out=str(tmp_path / precision), **FAST,
        )  # fmt: skip
        runs[precision] = train(config, progress=False)
    payload = load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert payload["bank"]["feats"].dtype == torch.float32
    if filter_ == "prism":
        assert payload["bank"]["class_sum"].dtype == torch.float64
        floats = [v for v in payload["selector"].values() if torch.is_tensor(v) and v.is_floating_point()]
        assert floats and all(v.dtype in (torch.float32, torch.float64) for v in floats)
    assert all(v.dtype != torch.bfloat16 for v in payload["model"].values())  # autocast casts copies, not weights
    # autocast was on: the same seed and the same batches give other embeddings, so the logged losses differ
    assert _losses(tmp_path / "fp32") != _losses(tmp_path / "bf16")
    assert all(0.0 <= run["test"]["precision_at_1"] <= 1.0 for run in runs.values())


def _losses(run: Path) -> list[float]:
    return [step["loss"] for step in json.loads(load_checkpoint(run / "last.pt")["steps"])]


def test_compile_on_the_cpu_trains_and_resumes(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "compiled"
    base = ["train", "--dataset", noisy_digits, "--iterations", "8", "--eval-every", "4", "--workers", "0",
            "-P", "5", "-K", "4", "--compile", "--out", str(out)]  # fmt: skip
    stopped = runner.invoke(app, [*base, "--stop-at", "4"])
    assert stopped.exit_code == 0, stopped.output
    resumed = runner.invoke(app, ["train", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 8 and load_checkpoint(out / "last.pt")["iteration"] == 8
    keys = load_checkpoint(out / "checkpoint.pt")["model"].keys()
    assert not any("_orig_mod" in k for k in keys)  # compiled in place: the plain module's keys
    plain = build_model("small_cnn", embed_dim=128, weights="random", seed=0)
    assert set(keys) == set(plain.state_dict())


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_channels_last_on_the_cpu_gives_the_same_embeddings(arch: str) -> None:
    model = build_model(arch, embed_dim=32, weights="random", seed=0).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(images)
        nhwc = model.to(memory_format=torch.channels_last)(images.to(memory_format=torch.channels_last))
    assert torch.allclose(plain, nhwc, atol=1e-5)


def test_channels_last_on_trains_a_resnet_on_the_cpu(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "nhwc"
    result = runner.invoke(app, [
        "train", "--dataset", noisy_digits, "--arch", "resnet18", "--weights", "random", "--image-size", "32",
        "--iterations", "4", "--eval-every", "2", "--workers", "0", "-P", "5", "-K", "4", "--channels-last", "always",
        "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["config"]["channels_last"] == "always"
    wrong = runner.invoke(app, ["train", "--dataset", noisy_digits, "--channels-last", "yes", "--out", str(out)])
    assert wrong.exit_code == 2 and "--channels-last must be one of auto, always, never, got 'yes'" in wrong.output


def test_a_checkpoint_of_the_old_boolean_option_still_reads() -> None:
    from prism.config import from_dict

    assert from_dict({"channels_last": True}, where="old.yaml").channels_last == "auto"
    assert from_dict({"channels_last": False}, where="old.yaml").channels_last == "never"

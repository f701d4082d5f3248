"""prism's backbones beyond its own (issue 21): any timm model and the offline ImageNet EfficientNet-Lite0 train
through the CLI, the embedder normalises with its trunk's statistics, a pretrained backbone derives the authors'
learning rate, and a timm model's missing weights offline are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from prism.cli import app
from prism.config import DataShape, load_config, resolve
from prism.models import build_model
from prism.train import load_checkpoint
from tests.cli_checks import one_line_error

FAST = ["--iterations", "5", "--eval-every", "5", "--image-size", "32", "-P", "5", "-K", "4", "--workers", "0"]


@pytest.mark.parametrize(
    ("arch", "weights", "extra"),
    [("timm:resnet18", "random", []), ("efficientnet_lite0", "imagenet", ["--channels-last", "always"])],
)
def test_a_timm_backbone_trains_and_evaluates(
    runner, noisy_digits: str, tmp_path: Path, arch: str, weights: str, extra: list[str]
) -> None:
    out = tmp_path / "run"
    args = ["train", "--dataset", noisy_digits, "--arch", arch, "--weights", weights, *FAST, *extra]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 5 and 0.0 <= summary["test"]["precision_at_1"] <= 1.0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["arch"], saved["lr"]) == (arch, 3e-4 if weights == "random" else 3e-5)
    # prism eval rebuilds the same model from the checkpoint's config and scores it as training's test did
    scored = runner.invoke(app, ["eval", "--checkpoint", str(out / "checkpoint.pt"), "--dataset", noisy_digits])
    assert scored.exit_code == 0, scored.output
    test = json.loads(scored.output)
    assert test["precision_at_1"] == pytest.approx(summary["test"]["precision_at_1"], abs=1e-6)


@pytest.mark.parametrize(
    ("arch", "mean", "std"),
    [("efficientnet_lite0", (0.5,) * 3, (0.5,) * 3), ("resnet18", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
)
def test_the_embedder_normalises_with_its_trunks_statistics(arch: str, mean: tuple, std: tuple) -> None:
    model = build_model(arch, embed_dim=8, weights="random", seed=0).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    with torch.no_grad():
        model(torch.full((1, 3, 16, 16), 204, dtype=torch.uint8))
    expected = torch.tensor([(0.8 - m) / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
    assert torch.allclose(seen[0], expected.expand(1, 3, 16, 16), atol=1e-6, rtol=0)


def test_an_unknown_timm_model_is_one_line(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--dataset", noisy_digits, "--arch", "timm:no_such_net", "--out", str(out)])
    one_line_error(result, "--arch timm:no_such_net: timm", "has no model 'no_such_net'")
    assert not out.exists()


def test_offline_without_cached_weights_names_the_model_and_the_cache(noisy_digits: str, tmp_path: Path) -> None:
    # a real process: huggingface_hub reads HF_HOME once, when imported
    hf_home, out = tmp_path / "hf", tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
    args = ["--dataset", noisy_digits, "--arch", "timm:resnet18", "--weights", "imagenet", *FAST, "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "prism", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: timm:resnet18 --weights imagenet: the pretrained weights are not in")
    assert str(hf_home / "hub") in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "lr", "size", "pretrained"),
    [
        ([], 3e-4, 8, False),  # small_cnn at the digits' side
        (["--arch", "timm:resnet18", "--weights", "random"], 3e-4, 224, False),
        (["--arch", "timm:resnet18"], 3e-5, 224, True),  # imagenet weights: the authors' rate
        (["--arch", "efficientnet_lite0"], 3e-5, 224, True),
        (["--arch", "efficientnet_lite0", "--lr", "1e-4"], 1e-4, 224, True),  # an explicit rate wins
    ],
)
def test_the_learning_rate_is_derived_from_the_backbone(
    runner, noisy_digits: str, flags: list[str], lr: float, size: int, pretrained: bool
) -> None:
    result = runner.invoke(app, ["train", "--dataset", noisy_digits, *flags, "--print-config"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert (config["lr"], config["image_size"]) == (lr, size)
    assert (config["warmup"] == 0 == config["bank_start"]) is pretrained


def test_unresolved_config_names_the_learning_rate_rule(runner, home: Path) -> None:
    result = runner.invoke(app, ["train", "--dataset", "omniglot/symmetric-0.5", "--print-config"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("lr:"))
    rule = "3e-5 pretrained (the authors'); from scratch (small_cnn or --weights random) 3e-4"
    assert line == f"lr: null  # derived from the data: {rule}"


def test_a_checkpoint_that_stored_the_old_default_rate_resumes(runner, noisy_digits: str, tmp_path: Path) -> None:
    """Before issue 21 every run stored lr 3e-4, pretrained ones included; such a run resumes with its own rate."""
    weights, out = tmp_path / "trunk.pt", tmp_path / "run"
    torch.save(build_model("timm:resnet18", embed_dim=8, weights="random", seed=1).backbone.state_dict(), weights)
    args = ["train", "--dataset", noisy_digits, "--arch", "timm:resnet18", "--weights", str(weights), *FAST]
    stopped = runner.invoke(app, [*args, "--out", str(out), "--stop-at", "2"])
    assert stopped.exit_code == 0, stopped.output
    # what the code before issue 21 wrote for this run: its default rate, resolved, in both files
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["config"]["lr"] == 3e-5
    payload["config"]["lr"] = 3e-4
    torch.save(payload, out / "last.pt")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**saved, "lr": 3e-4}))
    resumed = runner.invoke(app, ["train", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last.pt")["iteration"] == 5
    assert load_checkpoint(out / "last.pt")["config"]["lr"] == 3e-4


def test_the_pretrained_cpu_preset_fine_tunes_the_offline_backbone(runner) -> None:
    listed = runner.invoke(app, ["presets"])
    line = next(line for line in listed.output.splitlines() if line.startswith("pretrained-cpu "))
    assert line.split(None, 1)[1].startswith(
        "fine-tune the offline ImageNet EfficientNet-Lite0 on the embedded Omniglot"
    )
    config = resolve(load_config(None, {}, preset="pretrained-cpu"), DataShape(side=105, classes=544, images=2176))
    assert (config.arch, config.weights, config.image_size, config.dataset) == (
        "efficientnet_lite0",
        "imagenet",
        64,
        "omniglot/symmetric-0.5",
    )
    assert (config.lr, config.warmup, config.bank_start, config.iterations, config.eval_every) == (1e-4, 0, 0, 250, 50)
    assert config.freeze_bn and config.channels_last == "always"
    assert config.batch_size == 64


def test_a_pretrained_backbone_keeps_its_batchnorm_statistics(runner, noisy_digits: str, tmp_path: Path) -> None:
    from prism.models import build_model as fresh

    runs = {}
    for flag in ("--freeze-bn", "--no-freeze-bn"):
        out = tmp_path / flag.strip("-")
        args = ["train", "--dataset", noisy_digits, "--arch", "efficientnet_lite0", "--weights", "imagenet", *FAST]
        result = runner.invoke(app, [*args, flag, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[flag] = load_checkpoint(out / "last.pt")
    start = fresh("efficientnet_lite0", embed_dim=128, weights="imagenet", seed=0).state_dict()
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * 49  # every BatchNorm layer of EfficientNet-Lite0
    frozen, trained = runs["--freeze-bn"]["model"], runs["--no-freeze-bn"]["model"]
    assert all(torch.equal(frozen[k], start[k]) for k in stats)  # the pretrained statistics, untouched
    assert not any(torch.equal(trained[k], start[k]) for k in stats[:4])  # without the switch they move
    assert not torch.equal(frozen["backbone.bn1.weight"], start["backbone.bn1.weight"])  # scale and shift still train
    assert runs["--freeze-bn"]["config"]["freeze_bn"] is True


@pytest.mark.parametrize(
    ("arch", "weights", "frozen"),
    [("small_cnn", "random", False), ("efficientnet_lite0", "imagenet", True), ("efficientnet_lite0", "random", False)],
)
def test_freeze_bn_is_derived_from_the_backbone(arch: str, weights: str, frozen: bool) -> None:
    shape = DataShape(side=105, classes=100, images=2000)
    config = resolve(load_config(None, {"dataset": "omniglot", "arch": arch, "weights": weights}), shape)
    assert config.freeze_bn is frozen


def test_an_old_checkpoint_resumes_with_trained_batchnorm(runner, noisy_digits: str, tmp_path: Path) -> None:
    out = tmp_path / "old"
    args = ["train", "--dataset", noisy_digits, "--arch", "timm:resnet18", "--weights", "random", *FAST]
    assert runner.invoke(app, [*args, "--iterations", "6", "--stop-at", "3", "--out", str(out)]).exit_code == 0
    payload = torch.load(out / "last.pt", weights_only=True)
    del payload["config"]["freeze_bn"]  # written before the option existed
    torch.save(payload, out / "last.pt")
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config["freeze_bn"]
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = runner.invoke(app, ["train", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output

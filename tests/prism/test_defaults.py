"""Defaults derived from the data: the rule on digits, omniglot and a CUB-sized dataset; explicit values win; a run
given only --dataset works on the embedded datasets; the warm-up is reported and respected."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from cli_checks import one_line_error

from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build
from prism.cli import app
from prism.config import DataShape, TrainConfig, option_defaults, resolve
from prism.data import prepare
from prism.train import train


def test_rule_on_the_real_digits_and_omniglot(home: Path) -> None:
    build("digits")
    build("omniglot")
    digits = prepare("digits", val_fraction=0.2, seed=0).shape
    omni = prepare("omniglot", val_fraction=0.2, seed=0).shape
    # digits: 5 training classes (validation carved by image), 721 training images of 8 px
    assert digits == DataShape(side=8, classes=5, images=721)
    # omniglot: 136 characters, 27 of them (20%) held out for validation: 109 x 20 images of 105 px
    assert omni == DataShape(side=105, classes=109, images=2180)
    d, o = resolve(TrainConfig(), digits), resolve(TrainConfig(), omni)
    assert (d.arch, d.image_size, d.classes_per_batch, d.samples_per_class) == ("small_cnn", 8, 5, 12)
    assert (d.iterations, d.eval_every, d.warmup) == (721, 72, 270)  # ceil(60 * 721 / 60); 0.375 of it
    assert (o.arch, o.image_size, o.classes_per_batch, o.samples_per_class) == ("small_cnn", 28, 16, 4)
    assert (o.iterations, o.eval_every, o.warmup) == (2044, 204, 766)  # ceil(60 * 2180 / 64)


def test_rule_on_a_cub_sized_dataset() -> None:
    cub = DataShape(side=500, classes=80, images=4_700)  # CUB's 100 training classes minus 20% for validation
    c = resolve(TrainConfig(), cub)
    assert (c.arch, c.weights, c.image_size, c.classes_per_batch, c.samples_per_class) == (
        "resnet50",
        "imagenet",
        224,
        16,
        4,
    )
    assert (c.iterations, c.eval_every, c.warmup) == (4000, 400, 0)  # pretrained: the authors' 4,000, no warm-up
    scratch = resolve(TrainConfig(weights="random"), cub)
    assert (scratch.iterations, scratch.warmup) == (4000, 1500)  # ceil(60 * 4700 / 64) = 4407, capped at 4,000
    tiny = resolve(TrainConfig(), DataShape(side=32, classes=3, images=30))
    assert (tiny.classes_per_batch, tiny.samples_per_class, tiny.iterations) == (3, 21, 400)  # the 400 floor


def test_explicit_values_win() -> None:
    shape = DataShape(side=105, classes=109, images=2180)
    given = TrainConfig(
        arch="resnet18",
        image_size=64,
        classes_per_batch=8,
        samples_per_class=6,
        iterations=30,
        eval_every=7,
        log_every=3,
        warmup=0,
        bank_start=0,
        lr=1e-4,
        freeze_bn=False,
    )
    assert resolve(given, shape) == given
    assert resolve(TrainConfig(iterations=100), shape).warmup == 38  # derived values follow the explicit ones
    assert resolve(resolve(TrainConfig(), shape), shape) == resolve(TrainConfig(), shape)


def test_only_dataset_works_on_digits_and_print_config_shows_the_rule(runner, home: Path, tmp_path: Path) -> None:
    _, clean = build("digits")
    save_variant(symmetric(clean.manifest, rate=0.5, seed=0))
    printed = runner.invoke(app, ["train", "--dataset", "digits/symmetric-0.5", "--print-config"])
    assert printed.exit_code == 0, printed.output
    shown = yaml.safe_load(printed.output)
    # 720: the noisy labels change how many images per class the validation carve takes
    assert (shown["classes_per_batch"], shown["samples_per_class"], shown["iterations"]) == (5, 12, 720)
    # no --dataset is refused in one line (issue 22); the dataset given, every other option at its default
    out = tmp_path / "run"
    refused = runner.invoke(app, ["train", "--iterations", "12", "--out", str(out)])
    assert refused.exit_code == 2 and "--dataset: which dataset?" in refused.output
    result = runner.invoke(app, ["train", "--dataset", "digits/symmetric-0.5", "--iterations", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["dataset"], saved["classes_per_batch"], saved["samples_per_class"]) == ("digits/symmetric-0.5", 5, 12)
    assert (saved["warmup"], saved["eval_every"]) == (4, 1)


def test_warmup_on_omniglot_is_reported_and_respected(home: Path, tmp_path: Path) -> None:
    _, clean = build("omniglot")
    save_variant(symmetric(clean.manifest, rate=0.5, seed=0))
    out = tmp_path / "run"
    config = TrainConfig(dataset="omniglot/symmetric-0.5", iterations=10, warmup=4, log_every=1, out=str(out))
    summary = train(config, progress=False)
    assert summary["warmup"] == 4 and summary["selection_started"] == 4
    assert json.loads((out / "summary.json").read_text())["selection_started"] == 4
    steps = json.loads(torch.load(out / "last.pt", weights_only=True)["steps"])
    kept = [s["kept"] for s in steps]
    assert kept[:4] == [1.0] * 4 and min(kept[4:]) < 1.0  # every sample trains before iteration 4, not after
    never = train(config.replace(warmup=10, out=str(tmp_path / "never")), progress=False)
    assert never["selection_started"] is None
    plain = train(config.replace(filter="none", out=str(tmp_path / "plain")), progress=False)
    assert plain["selection_started"] is None


def test_negative_warmup_is_one_line(runner) -> None:
    one_line_error(runner.invoke(app, ["train", "--warmup", "-1"]), "--warmup", ">= 0")


def test_train_help_says_every_default(runner) -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ --")}
    assert "Adam learning rate (default: derived from the backbone: 3e-5 pretrained (the authors')" in lines["--lr"]
    assert "(default: derived from the data: min(16, training classes))" in lines["--classes-per-batch"]
    assert "(default: derived from the method: " in lines["--proxy-lr"]
    assert "(default: 2)" in lines["--workers"] and "(default: false)" in lines["--compile"]
    # read from TrainConfig: every option it has a default for says it
    for name, default in option_defaults().items():
        flag = f"--{name.replace('_', '-')}"
        if flag in lines:
            assert f"(default: {default})" in lines[flag], flag

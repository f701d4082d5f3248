"""The ``prism`` command: parse, build a config, call one library function, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from noisekit.cli import HELP, user_errors

app = typer.Typer(
    name="prism",
    help="Train and evaluate PRISM and its baselines on noisekit datasets.\n\n"
    "Example: prism train --dataset omniglot/symmetric-0.5",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
@user_errors
def train(
    dataset: Annotated[
        str | None,
        typer.Option(help=f"{HELP['--dataset']}, a manifest path, a published folder or hub:OWNER/REPO:CONFIG"),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="A shipped configuration, e.g. paper-cars (prism presets lists them)")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="mcl, softtriple, contrastive or ms")] = None,
    prism: Annotated[bool | None, typer.Option("--prism/--no-prism", help="Filter noisy samples with PRISM")] = None,
    filter_rate: Annotated[float | None, typer.Option(help="R: share of each batch the rank cut removes")] = None,
    window: Annotated[int | None, typer.Option(help="tau: TRMs averaged into the threshold")] = None,
    mode: Annotated[str | None, typer.Option(help="centre (Eq. 6/7) or exact (Eq. 2/3)")] = None,
    startup: Annotated[
        str | None, typer.Option(help="PRISM before centres exist: ours (keep centreless classes) or authors")
    ] = None,
    bank_start: Annotated[
        int | None, typer.Option(help="Iterations on the batch-only loss before the bank and PRISM start")
    ] = None,
    mcl_norm: Annotated[
        str | None, typer.Option(help="MCL normalisation: kept (by kept samples) or authors (bank term by batch)")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Training iterations")] = None,
    seed: Annotated[int | None, typer.Option(help=f"{HELP['--seed']} of model init, batches and augmentation")] = None,
    device: Annotated[str | None, typer.Option(help=HELP["--device"])] = None,
    out: Annotated[str | None, typer.Option(help=f"{HELP['--out']}: the run's outputs")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of options (flags override it)")] = None,
    arch: Annotated[str | None, typer.Option(help="auto, small_cnn, resnet18, resnet50 or bninception")] = None,
    pooling: Annotated[str | None, typer.Option(help="Global pooling of the backbone: avg or max")] = None,
    embed_dim: Annotated[int | None, typer.Option(help="Embedding dimension")] = None,
    weights: Annotated[str | None, typer.Option(help=HELP["--weights"])] = None,
    classes_per_batch: Annotated[int | None, typer.Option("--classes-per-batch", "-P", help="P")] = None,
    samples_per_class: Annotated[int | None, typer.Option("--samples-per-class", "-K", help="K")] = None,
    sampler: Annotated[
        str | None, typer.Option(help="uniform (P classes uniformly) or authors (XBM's chunk sampler)")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Adam weight decay of the model")] = None,
    proxy_lr: Annotated[
        float | None, typer.Option(help="Learning rate of a loss's own parameters (SoftTriple: 0.1), no weight decay")
    ] = None,
    crop_scale: Annotated[float | None, typer.Option(help="Smallest area share of the random resized crop")] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="Share of training classes held out for validation (0: select the last model)")
    ] = None,
    select: Annotated[str | None, typer.Option(help="Checkpoint kept: val (best validation MAP@R) or last")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Iterations between validations")] = None,
    warmup: Annotated[int | None, typer.Option(help="Iterations before selection starts")] = None,
    bank_size: Annotated[int | None, typer.Option(help="Feature bank slots (0: training set size)")] = None,
    image_size: Annotated[int | None, typer.Option(help=HELP["--image-size"])] = None,
    workers: Annotated[int | None, typer.Option(help=HELP["--workers"])] = None,
    stop_at: Annotated[int | None, typer.Option(help="Stop after this iteration, resumable")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32 or bf16")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the backbone")] = None,
    decode: Annotated[
        str | None, typer.Option(help="Who decodes training JPEGs: workers (CPU) or device (nvJPEG on CUDA)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint")] = False,
    print_config: Annotated[
        bool, typer.Option(help="Print the resolved config (the dataset's defaults filled in) as YAML and exit")
    ] = False,
) -> None:
    """Train an embedding (optionally with PRISM) and evaluate it on the clean test split.

    Options left out come from --preset, then --config, then the dataset (see the README's defaults rule);
    --print-config shows the result.

    Example: prism train --preset paper-cars --dataset cars/symmetric-0.5 --device cuda
    """
    options = {k: v for k, v in locals().items() if k not in ("config", "resume", "print_config", "preset")}
    from prism.config import load_config
    from prism.train import train as run_train

    cfg = load_config(config, options, preset=preset)
    if print_config:
        from prism.config import dump, resolve
        from prism.data import prepare

        typer.echo(
            dump(resolve(cfg, prepare(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed).shape)), nl=False
        )
        return
    summary = run_train(cfg, resume=resume)
    if "stopped_at" in summary:
        typer.echo(f"stopped at iteration {summary['stopped_at']}; resume with --resume --out {cfg.out}")
        return
    test, noise = summary["test"], summary["noise_detection"]
    flagged = (
        ""
        if noise["precision"] is None
        else (f", flagged precision {noise['precision']:.3f} recall {noise['recall']:.3f}")
    )
    typer.echo(
        f"{cfg.dataset} {cfg.loss}{' + PRISM' if cfg.prism else ''}: test P@1 {test['precision_at_1']:.4f} "
        f"MAP@R {test['mean_average_precision_at_r']:.4f}{flagged} in {summary['train_seconds']}s -> {cfg.out}"
    )


@app.command()
@user_errors
def presets() -> None:
    """List the shipped presets (prism train --preset NAME; --print-config shows every value).

    Example: prism presets
    """
    from prism.config import PRESETS
    from prism.config import presets as shipped

    for name, about in shipped().items():
        typer.echo(f"{name:<16} {about}")
    typer.echo(f"files: {PRESETS}")


@app.command("eval")
@user_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint.pt written by prism train")],
    dataset: Annotated[str, typer.Option(help=f"{HELP['--dataset']}, a manifest path or a published folder")],
    split: Annotated[str, typer.Option(help="test, val or train")] = "test",
    device: Annotated[str, typer.Option(help=HELP["--device"])] = "cpu",
) -> None:
    """Score a checkpoint on a split of a dataset; prints one JSON object.

    Example: prism eval --checkpoint runs/cub-sc50/checkpoint.pt --dataset cub
    """
    from prism.report import evaluate_checkpoint

    typer.echo(json.dumps(evaluate_checkpoint(checkpoint, dataset, split=split, device=device), indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The ``prism`` command: parse, build a config, call one library function, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperOption

from noisekit.cli import HELP, user_errors
from noisekit.errors import NotBuilt

app = typer.Typer(
    name="prism",
    help="Train and evaluate PRISM and its baselines on noisekit datasets.\n\n"
    "Example: prism train --dataset omniglot/symmetric-0.5",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


# the longer option declarations of `prism train`, named so that its signature stays readable
_DATASET = Annotated[
    str | None,
    typer.Option(help=f"{HELP['--dataset']}, a manifest path, a published DIR/CONFIG or hub:OWNER/REPO:CONFIG"),
]
_ROOT = Annotated[
    str | None,
    typer.Option(help=f"{HELP['--root']}: the local images of a dataset published --labels-only (its paths' root)"),
]
_PRESET = Annotated[
    str | None, typer.Option(help="A shipped configuration, e.g. paper-cars (prism presets lists them)")
]
_METHOD = Annotated[
    str | None, typer.Option("--method", "--loss", help="The method (prism methods lists them; --loss: old name)")
]
_FILTER = Annotated[
    str | None,
    typer.Option(
        help="Which samples train: none, prism, batch-positive or memory-positive (default: prism "
        "where the method takes a filter)"
    ),
]
_FILTER_RATE = Annotated[
    str | None,
    typer.Option(
        help="R: share of each batch the rank cut removes (Co-teaching: forget rate), or auto: estimated online"
    ),
]
_TRANSITION = Annotated[
    str | None, typer.Option(help="F-correction's matrix: estimate (anchor points) or known (symmetric noise)")
]
_STARTUP = Annotated[
    str | None, typer.Option(help="PRISM before centres exist: ours (keep centreless classes) or authors")
]
_BANK_START = Annotated[
    int | None, typer.Option(help="Iterations on the batch-only loss before the bank and PRISM start")
]
_MCL_NORM = Annotated[
    str | None, typer.Option(help="MCL normalisation: kept (by kept samples) or authors (bank term by batch)")
]
_ARCH = Annotated[
    str | None,
    typer.Option(help="auto, small_cnn, resnet18, resnet50, bninception, efficientnet_lite0 or timm:NAME (any timm)"),
]
_SAMPLER = Annotated[str | None, typer.Option(help="uniform (P classes uniformly) or authors (XBM's chunk sampler)")]
_PROXY_LR = Annotated[
    float | None,
    typer.Option(help="Learning rate of proxies and centres, no weight decay"),
]
_VAL_FRACTION = Annotated[
    float | None, typer.Option(help="Share of training classes held out for validation (0: select the last model)")
]
_DECODE = Annotated[
    str | None, typer.Option(help="Who decodes training JPEGs: workers (CPU) or device (nvJPEG on CUDA)")
]
_PRINT_CONFIG = Annotated[
    bool, typer.Option(help="Print the resolved config (the dataset's defaults filled in) as YAML and exit")
]


_NOT_OPTIONS = (
    "config",
    "resume",
    "overwrite",
    "print_config",
    "preset",
)  # train's flags that are no TrainConfig field


class TrainCommand(TyperCommand):
    """``prism train``: every option is None in its signature, since a preset, --config or the data may set it;
    its help says the default that applies when none does (from prism.config.option_defaults)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from prism.config import option_defaults

        defaults = option_defaults()
        for param in self.params:
            if isinstance(param, TyperOption) and param.name in defaults:
                param.help = f"{param.help} (default: {defaults[param.name]})"


@app.command(cls=TrainCommand)
@user_errors
def train(
    dataset: _DATASET = None,
    root: _ROOT = None,
    preset: _PRESET = None,
    method: _METHOD = None,
    filter: _FILTER = None,
    prism: Annotated[bool | None, typer.Option("--prism/--no-prism", help="--filter prism / --filter none")] = None,
    filter_rate: _FILTER_RATE = None,
    window: Annotated[int | None, typer.Option(help="tau: TRMs averaged into the threshold (1: TRM)")] = None,
    transition: _TRANSITION = None,
    mode: Annotated[str | None, typer.Option(help="centre (Eq. 6/7) or exact (Eq. 2/3)")] = None,
    startup: _STARTUP = None,
    bank_start: _BANK_START = None,
    mcl_norm: _MCL_NORM = None,
    iterations: Annotated[int | None, typer.Option(help="Training iterations")] = None,
    seed: Annotated[int | None, typer.Option(help=f"{HELP['--seed']} of model init, batches and augmentation")] = None,
    device: Annotated[str | None, typer.Option(help=HELP["--device"])] = None,
    out: Annotated[str | None, typer.Option(help=f"{HELP['--out']}: the run's outputs")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of options (flags override it)")] = None,
    arch: _ARCH = None,
    pooling: Annotated[str | None, typer.Option(help="Global pooling of the backbone: avg or max")] = None,
    embed_dim: Annotated[int | None, typer.Option(help="Embedding dimension")] = None,
    weights: Annotated[str | None, typer.Option(help=HELP["--weights"])] = None,
    classes_per_batch: Annotated[int | None, typer.Option("--classes-per-batch", "-P", help="P")] = None,
    samples_per_class: Annotated[int | None, typer.Option("--samples-per-class", "-K", help="K")] = None,
    sampler: _SAMPLER = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Adam weight decay of the model")] = None,
    proxy_lr: _PROXY_LR = None,
    crop_scale: Annotated[float | None, typer.Option(help="Smallest area share of the random resized crop")] = None,
    val_fraction: _VAL_FRACTION = None,
    select: Annotated[str | None, typer.Option(help="Checkpoint kept: val (best validation MAP@R) or last")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Iterations between validations")] = None,
    warmup: Annotated[int | None, typer.Option(help="Iterations before selection starts")] = None,
    bank_size: Annotated[int | None, typer.Option(help="Feature bank slots (0: training set size)")] = None,
    image_size: Annotated[int | None, typer.Option(help=HELP["--image-size"])] = None,
    workers: Annotated[int | None, typer.Option(help=HELP["--workers"])] = None,
    stop_at: Annotated[int | None, typer.Option(help="Stop after this iteration, resumable")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), fp32 or bf16")] = None,
    channels_last: Annotated[str | None, typer.Option(help="NHWC memory: auto (GPU only), always or never")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the backbone")] = None,
    freeze_bn: Annotated[
        bool | None, typer.Option("--freeze-bn/--no-freeze-bn", help="Keep the backbone's BatchNorm statistics")
    ] = None,
    decode: _DECODE = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its last checkpoint, with its config.yaml")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run that --out already holds")] = False,
    print_config: _PRINT_CONFIG = False,
) -> None:
    """Train an embedding (optionally with PRISM) and evaluate it on the clean test split.

    Options left out come from --preset, then --config, then the dataset (see the README's defaults rule);
    --print-config shows the result.

    Example: prism train --preset paper-cars --dataset cars/symmetric-0.5 --device cuda
    """
    options = {k: v for k, v in locals().items() if k not in _NOT_OPTIONS}
    from prism.config import load_config
    from prism.report import run_name
    from prism.train import train as run_train

    if resume and out is not None and config is None and (Path(out) / "config.yaml").is_file():
        config = Path(out) / "config.yaml"  # the run's own options; flags given now still override them
        options["stop_at"] = stop_at or 0  # the stop that interrupted it is not one of them
    cfg = load_config(config, options, preset=preset, require_dataset=not print_config)
    if print_config:
        from prism.config import dump, dump_unresolved, resolve
        from prism.data import prepare

        try:
            data = prepare(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed, root=cfg.root)
        except NotBuilt as exc:
            typer.echo(dump_unresolved(cfg, why=str(exc)), nl=False)  # a preset prints before its data exists
            return
        typer.echo(dump(resolve(cfg, data.shape)), nl=False)
        return
    try:
        summary = run_train(cfg, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        if (Path(cfg.out) / "last.pt").is_file():
            raise KeyboardInterrupt(f"interrupted; resume with prism train --resume --out {cfg.out}") from None
        raise KeyboardInterrupt("interrupted before the first checkpoint; nothing was written") from None
    if "stopped_at" in summary:
        typer.echo(f"stopped at iteration {summary['stopped_at']}; resume with --resume --out {cfg.out}")
        return
    test, noise = summary["test"], summary["noise_detection"]
    said = [f"{k} {noise[k]:.3f}" for k in ("precision", "recall") if noise.get(k) is not None]
    flagged = f", flagged {' '.join(said)}" if said else ""  # recall is undefined on clean labels
    typer.echo(
        f"{cfg.dataset} {run_name(cfg)}: test P@1 {test['precision_at_1']:.4f} "
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


@app.command()
@user_errors
def methods(as_json: Annotated[bool, typer.Option("--json", help="One JSON list instead of a table")] = False) -> None:
    """List the methods prism train --method runs: kind, reference, the pytorch-metric-learning class used, and
    whether a filter (--filter) applies.

    Example: prism methods --json
    """
    from prism.methods import METHODS

    rows = [m.row() for m in METHODS.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = [("method", "kind", "filter", "uses", "reference")]
    table += [(r["name"], r["kind"], "yes" if r["filter"] else "no", r["uses"], r["reference"]) for r in rows]
    _echo_table(table)


def _echo_table(table: list[tuple[str, ...]]) -> None:
    """Columns sized from the content, so they never run together; the last one runs free."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        typer.echo("".join(f"{cell:<{w + 2}}" for cell, w in zip(row, widths, strict=False)) + row[-1])


@app.command()
@user_errors
def filters(as_json: Annotated[bool, typer.Option("--json", help="One JSON list instead of a table")] = False) -> None:
    """List the filters prism train --filter runs: reference, what --filter-rate means to each (R, R or auto, or
    "not needed": it needs no rate) and which methods take it.

    Example: prism filters --json
    """
    from prism.filters import FILTERS

    rows = [f.row() for f in FILTERS.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _echo_table(
        [("filter", "rate", "applies to", "reference")]
        + [(r["name"], r["rate"], r["applies"], r["reference"]) for r in rows]
    )


@app.command()
@user_errors
def grid(
    grid_file: Annotated[
        Path | None,
        typer.Option(
            "--grid", help="YAML file: datasets, variants, methods, filters, seeds, filter_rate, options, out, jobs"
        ),
    ] = None,
    dataset: Annotated[list[str] | None, typer.Option(help=f"{HELP['--dataset']} (repeat for more)")] = None,
    variant: Annotated[list[str] | None, typer.Option(help="A noise variant, or clean (repeat for more)")] = None,
    method: Annotated[list[str] | None, typer.Option(help="A method, or all (repeat for more)")] = None,
    filter: Annotated[
        list[str] | None,
        typer.Option(
            help="none, prism, batch-positive, memory-positive (repeat; methods that take no filter run with none)"
        ),
    ] = None,
    seed: Annotated[list[int] | None, typer.Option(help=f"{HELP['--seed']} (repeat for more)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE: a prism train option for every run")
    ] = None,
    filter_rate: Annotated[
        str | None, typer.Option(help="variant (the variant's noise rate, as the authors set R), auto or a number")
    ] = None,
    out: Annotated[str | None, typer.Option(help=f"{HELP['--out']}: one folder per run, results.*")] = None,
    jobs: Annotated[int | None, typer.Option(help="Runs at a time (one thread each when more than one)")] = None,
    paper_table: Annotated[
        Path | None,
        typer.Option(
            help="CSV of published figures (method, setting, precision_at_1) shown beside ours, marked as published"
        ),
    ] = None,
) -> None:
    """Run a grid of datasets x variants x methods x filters x seeds, skipping finished runs and resuming
    interrupted ones; writes results.csv, results.md (the paper's table shape) and results.png.

    Example: prism grid --dataset omniglot --variant clean --variant symmetric-0.5 --method all --seed 0 --seed 1
    """
    from prism.grid import load_grid, parse_sets, read_paper_table, run_grid

    options = parse_sets(set_ or [])
    flags = {"datasets": dataset, "variants": variant, "methods": method, "filters": filter, "seeds": seed,
             "out": out, "jobs": jobs, "filter_rate": filter_rate}  # fmt: skip
    if method == ["all"]:
        flags["methods"] = "all"
    plan = load_grid(grid_file, flags | ({"options": options} if options else {}))
    paper = read_paper_table(paper_table) if paper_table is not None else None
    try:
        run_grid(plan, paper=paper, echo=typer.echo)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            "interrupted; run the same command again to continue (finished runs are kept, a checkpointed one resumes)"
        ) from None


@app.command("eval")
@user_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint.pt written by prism train")],
    dataset: Annotated[
        str, typer.Option(help=f"{HELP['--dataset']}, a manifest path, a published DIR/CONFIG or hub:OWNER/REPO:CONFIG")
    ],
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

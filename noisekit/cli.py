"""The ``noisekit`` command: parse, call one library function, print. Errors are one line, exit status 2."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from noisekit.errors import NoisekitError, one_line

F = TypeVar("F", bound=Callable[..., Any])

OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace what exists with other content (refused without it)")
]

app = typer.Typer(
    name="noisekit",
    help="Build noisy-label deep metric learning benchmarks, add label noise, publish them.\n\n"
    "Example: noisekit make small-cluster --dataset cub --rate 0.5",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


INTERRUPTED = "interrupted; nothing was written"


def user_errors(func: F) -> F:
    """Turn :class:`NoisekitError` into ``error: <message>`` on stderr and exit status 2, and Ctrl-C into one line
    and exit status 130, with no traceback. A command that can be continued raises ``KeyboardInterrupt(line)``
    saying how; the others write through temporary files, so an interruption leaves nothing of theirs behind."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NoisekitError as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            typer.echo(str(exc) or INTERRUPTED, err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def build(
    dataset: Annotated[str, typer.Argument(help="cars, cub, sop, food101n, digits, omniglot or cars98n")],
    root: Annotated[Path | None, typer.Option(help="Folder of the raw files (or where --download puts them)")] = None,
    download: Annotated[bool, typer.Option(help="Fetch the official archive if it is not under --root")] = False,
    strict: Annotated[bool, typer.Option(help="Fail if a listed image is absent instead of dropping it")] = False,
    food101_root: Annotated[Path | None, typer.Option(help="food101n: the Food-101 folder (test split)")] = None,
    crawl: Annotated[Path | None, typer.Option(help="cars98n: the folder `noisekit crawl` wrote")] = None,
    cars_root: Annotated[Path | None, typer.Option(help="cars98n: the CARS196 folder (test split)")] = None,
    mirror: Annotated[str | None, typer.Option(help="With --download: base URL of a mirror of the archives")] = None,
    full: Annotated[
        bool, typer.Option(help="omniglot: the full background/evaluation sets, not the shipped small subsets")
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build DATASET's clean manifest (standard DML split) into the data home.

    Example: noisekit build cub --root ~/data --download
    """
    from noisekit.info import render, summary
    from noisekit.sources.build import BuildOptions
    from noisekit.sources.build import build as run_build

    start = time.perf_counter()
    options = BuildOptions(root, download, strict, food101_root, crawl, cars_root, mirror, full)
    path, result = run_build(dataset, options, overwrite=overwrite)
    if result.missing:
        shown = ", ".join(result.missing[:3])
        typer.echo(f"warning: {len(result.missing)} listed image(s) absent and left out (first: {shown})", err=True)
    for note in result.notes:
        typer.echo(note)
    typer.echo(render(summary(result.manifest)))
    typer.echo(f"built {dataset}: {len(result.manifest):,} images in {time.perf_counter() - start:.1f}s -> {path}")


@app.command()
@user_errors
def info(
    name: Annotated[str, typer.Argument(help="NAME, NAME/VARIANT or a manifest path")],
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Show images and classes per split and the noise figures of a manifest.

    Example: noisekit info cub/small_cluster-0.5 --json
    """
    from noisekit.info import info as get_info
    from noisekit.info import render, to_json

    data = get_info(name)
    typer.echo(to_json(data) if json_ else render(data))


make_app = typer.Typer(
    help="Add label noise to a built dataset's training split.\n\n"
    "Example: noisekit make symmetric --dataset cub --rate 0.5",
    no_args_is_help=True,
)
app.add_typer(make_app, name="make")

# One vocabulary for noisekit and prism: an option of the same name means the same thing in every command; its help
# starts with this text (tests/test_layout.py checks both CLIs)
HELP = {
    "--seed": "Random seed",
    "--device": "Torch device: cpu, cuda, cuda:1, ...",
    "--workers": "DataLoader worker processes that read and decode images (0: the main process)",
    "--out": "Folder this command writes",
    "--dataset": "A built dataset, NAME or NAME/VARIANT",
    "--image-size": "Side in pixels of the square crop fed to the network",
    "--weights": "Backbone weights: imagenet, random or a state-dict FILE",
    "--root": "Folder of the raw files",
}
DatasetOpt = Annotated[
    str, typer.Option("--dataset", help=f"{HELP['--dataset']} (VARIANT only clean: noise goes on the clean manifest)")
]
RateOpt = Annotated[float, typer.Option("--rate", help="Requested noise rate in [0, 1)")]
SeedOpt = Annotated[
    int, typer.Option("--seed", help=f"{HELP['--seed']}; the same seed gives a byte-identical manifest")
]
BackboneOpt = Annotated[str, typer.Option(help="Feature model: resnet18 (the paper's), resnet50, efficientnet_lite0 "
                        "(ImageNet weights offline) or timm:NAME; its native size (224 for the named ones) is "
                        "--image-size's default")]  # fmt: skip
VariantOpt = Annotated[str | None, typer.Option("--variant", help="Variant name (default MODEL-RATE)")]


def _variant(value: str | None) -> str | None:
    """Refuse a reserved or unsafe --variant before any work is done."""
    from noisekit.paths import check_variant

    return None if value is None else check_variant(value)


@make_app.command("symmetric")
@user_errors
def make_symmetric(
    dataset: DatasetOpt, rate: RateOpt, seed: SeedOpt = 0, variant: VariantOpt = None, overwrite: OverwriteOpt = False
) -> None:
    """Move round(R * N) training images (floor or ceil of R * n_c per class) to uniformly drawn other classes.

    Example: noisekit make symmetric --dataset cars --rate 0.2 --seed 0
    """
    from noisekit.noise.common import load_clean, save_variant
    from noisekit.noise.report import variant_line
    from noisekit.noise.symmetric import rounding_warning, symmetric

    start = time.perf_counter()
    noisy = symmetric(load_clean(dataset), rate=rate, seed=seed, variant=_variant(variant))
    path, report = save_variant(noisy, overwrite=overwrite)
    typer.echo(variant_line(path, report, time.perf_counter() - start))
    warning = rounding_warning(report, report["train_images"])
    if warning:
        typer.echo(warning, err=True)


@make_app.command("small-cluster")
@user_errors
def make_small_cluster(
    dataset: DatasetOpt,
    rate: RateOpt,
    seed: SeedOpt = 0,
    backbone: BackboneOpt = "resnet18",
    weights: Annotated[str, typer.Option(help=f"{HELP['--weights']} (of --backbone)")] = "imagenet",
    device: Annotated[str, typer.Option(help=HELP["--device"])] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per feature batch")] = 64,
    workers: Annotated[int, typer.Option(min=0, help=HELP["--workers"])] = 2,
    image_size: Annotated[int | None, typer.Option(min=32, help=f"{HELP['--image-size']} (default: native)")] = None,
    variant: VariantOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Dissolve random classes into k-means clusters of a pretrained backbone's features merged into other classes.

    Example: noisekit make small-cluster --dataset omniglot --rate 0.5 --backbone efficientnet_lite0 --image-size 64
    """
    from noisekit.device import check_device
    from noisekit.noise.common import load_clean, save_variant
    from noisekit.noise.features import FeatureOptions, train_features
    from noisekit.noise.report import dissolved_line, variant_line
    from noisekit.noise.small_cluster import plan, small_cluster

    start = time.perf_counter()
    variant = _variant(variant)
    check_device(device)
    # a backbone that does not exist is refused before the dataset is read or any feature computed
    options = FeatureOptions(weights, image_size, batch_size, workers, device, backbone).resolved()
    clean = load_clean(dataset)
    the_plan = plan(clean, rate=rate, seed=seed)  # refuses impossible rates before computing features
    features, provenance, note = train_features(clean, options)
    typer.echo(note)
    noisy, figures = small_cluster(
        clean, features, rate=rate, seed=seed, the_plan=the_plan, variant=variant, provenance=provenance
    )
    path, report = save_variant(noisy, figures, overwrite=overwrite)
    typer.echo(variant_line(path, report, time.perf_counter() - start))
    typer.echo(dissolved_line(figures))


@make_app.command("cleaned")
@user_errors
def make_cleaned(
    dataset: Annotated[str, typer.Option("--dataset", help=f"{HELP['--dataset']}: the variant the run trained on")],
    run: Annotated[Path, typer.Option("--from", help="The run folder (--out) of `prism train --dataset` on it")],
    relabel: Annotated[bool, typer.Option(help="Relabel flagged images with their likeliest class instead")] = False,
    variant: Annotated[str | None, typer.Option(help="Variant name (default VARIANT-cleaned or -relabelled)")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Drop the training images a prism run flagged as noisy (or relabel them): a new variant of the one it trained on.

    Example: noisekit make cleaned --dataset omniglot/symmetric-0.5 --from runs/omniglot-prism
    """
    from noisekit.noise.cleaned import clean_variant, summary_line
    from noisekit.noise.common import save_variant

    start = time.perf_counter()
    manifest, figures = clean_variant(dataset, run, relabel=relabel, variant=_variant(variant))
    path, report = save_variant(manifest, figures, overwrite=overwrite)
    typer.echo(summary_line(path, report, time.perf_counter() - start))


@app.command("import-lists")
@user_errors
def import_lists(
    dataset: DatasetOpt,
    list_: Annotated[Path, typer.Option("--list", help="The authors' noisy list (absolute_path,label per line)")],
    variant: Annotated[str, typer.Option("--variant", help="Name of the variant to write")],
    cleaned: Annotated[
        Path | None, typer.Option("--cleaned", help="The authors' cleaned list: the rows whose label is true")
    ] = None,
    skip_unmapped: Annotated[
        bool, typer.Option(help="Drop rows that match no training image instead of failing; report their count")
    ] = False,
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            help="auto, ids (label k is the dataset's class k: the authors' symmetric lists) or learn (re-indexed "
            "labels, learned from --cleaned or by vote: Small Cluster lists)",
        ),
    ] = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Import the PRISM authors' noisy label list as a variant (training split = the list's rows).

    Example: noisekit import-lists --dataset cars --list CARS_0.1noised_train.csv --variant official-symmetric-0.1
    """
    from noisekit.noise.common import load_clean, save_variant
    from noisekit.noise.official_lists import import_lists as run_import
    from noisekit.noise.official_lists import report_extra
    from noisekit.noise.report import import_notes, variant_line

    start = time.perf_counter()
    _variant(variant)
    manifest = run_import(
        load_clean(dataset),
        list_path=list_,
        cleaned_path=cleaned,
        variant=variant,
        skip_unmapped=skip_unmapped,
        labels=labels,
    )
    for line in import_notes(manifest.meta.noise or {}, list_.name, dataset):
        typer.echo(line)
    path, report = save_variant(manifest, report_extra(manifest), overwrite=overwrite)
    typer.echo(variant_line(path, report, time.perf_counter() - start))


@app.command()
@user_errors
def publish(
    name: Annotated[str, typer.Argument(help="A built dataset (noisekit build NAME)")],
    out: Annotated[Path, typer.Option("--out", help=f"{HELP['--out']}: the dataset repository folder, new or updated")],
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="A variant to publish; repeat for more (default: all)")
    ] = None,
    push: Annotated[str | None, typer.Option("--push", help="Then upload the folder to the Hub as OWNER/REPO")] = None,
    labels_only: Annotated[bool, typer.Option(help="Ids, paths and labels without the image bytes")] = False,
    max_shard_size: Annotated[str, typer.Option(help="Largest Parquet shard, e.g. 500MB or 2GB")] = "500MB",
    overwrite: Annotated[bool, typer.Option(help="Replace configurations that exist with different content")] = False,
) -> None:
    """Write NAME's variants as a Hugging Face dataset folder (one configuration each) with a dataset card.

    Example: noisekit publish cub --out ~/hf/cub-noisy --push me/cub-noisy
    """
    from noisekit.hub.cards import images_allowed
    from noisekit.hub.publish import PublishOptions, parse_size
    from noisekit.hub.publish import publish as run_publish
    from noisekit.hub.repo import check_repo_id, require_token
    from noisekit.hub.repo import push as push_folder

    start = time.perf_counter()
    size = parse_size(max_shard_size)
    if push is not None:  # refuse a bad id or a missing token before anything is written
        check_repo_id(push)
        require_token()
    result = run_publish(name, out, PublishOptions(tuple(variant or ()), labels_only, size, overwrite, push))
    if not labels_only and not images_allowed(name):
        typer.echo(
            f"warning: the licence of {name}'s images does not allow public redistribution; keep the repository "
            "private or publish --labels-only",
            err=True,
        )
    what = f"wrote {', '.join(result.written)}" if result.written else "nothing to write"
    kept = f"; unchanged: {', '.join(result.unchanged)}" if result.unchanged else ""
    typer.echo(
        f"published {name}: {what}{kept}; {len(result.configs)} configuration(s), {result.files} files, "
        f"{result.bytes / 1e6:,.1f} MB in {time.perf_counter() - start:.1f}s -> {result.out}"
    )
    if push is not None:
        typer.echo(f"pushed {result.out.name} to {push}: {push_folder(result.out, push)}")


@app.command()
@user_errors
def load(
    repo_or_dir: Annotated[
        str,
        typer.Argument(
            help="DIR/CONFIG (a configuration of a published folder) or hub:OWNER/REPO:CONFIG, as prism train "
            "--dataset takes them; or the folder or OWNER/REPO with --config"
        ),
    ],
    config: Annotated[str | None, typer.Option(help="The configuration (variant) to load")] = None,
) -> None:
    """Load one configuration with datasets and summarise it: splits, rows, features, noise rate.

    Example: noisekit load ~/hf/cub-noisy/symmetric-0.5
    """
    from noisekit.hub.repo import render, summary

    typer.echo(render(summary(repo_or_dir, config)))


@app.command()
@user_errors
def crawl(
    manifest: Annotated[
        Path, typer.Argument(help="url,label list: headerless CSV, CSV/TSV with a header, JSONL or Parquet")
    ],
    out: Annotated[Path, typer.Option("--out", help=f"{HELP['--out']}: the images and the record crawl.parquet")],
    threads: Annotated[int, typer.Option("--threads", help="Download threads")] = 16,
    old_workers: Annotated[int | None, typer.Option("--workers", hidden=True, help="Older name of --threads")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to connect and per read (a body gets 4x in all)")] = 10.0,
    retries: Annotated[int, typer.Option(help="Retries of connection errors, 429 and 5xx (backoff, Retry-After)")] = 3,
    max_bytes: Annotated[int, typer.Option(help="Largest body accepted, in bytes")] = 20 * 2**20,
    max_pixels: Annotated[int, typer.Option(help="Largest image in pixels (decompression bombs)")] = 89_478_485,
    max_per_host: Annotated[int, typer.Option(help="Requests in flight to one host at most")] = 16,
    resume: Annotated[bool, typer.Option(help="Continue a crawl in --out: skip the rows already finished")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Continue a crawl in --out, fetching failed rows again")] = False,
    url_rewrite: Annotated[
        list[str] | None, typer.Option("--url-rewrite", help="FROM=TO: replace FROM in each URL; repeatable")
    ] = None,
) -> None:
    """Download every image of a URL list into --out, verify it, and record each row's outcome.

    Example: noisekit crawl CARS_98N_list.csv --out ~/data/cars98n-crawl --threads 32
    """
    from noisekit.crawl.crawler import CrawlOptions
    from noisekit.crawl.crawler import crawl as run_crawl
    from noisekit.crawl.url_list import parse_rewrite

    rewrites = tuple(parse_rewrite(spec) for spec in url_rewrite or ())
    options = CrawlOptions(
        threads=threads if old_workers is None else old_workers,
        timeout=timeout,
        retries=retries,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_per_host=max_per_host,
        resume=resume,
        retry_failed=retry_failed,
        url_rewrites=rewrites,
    )
    try:
        typer.echo(run_crawl(manifest, out, options).line())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"interrupted; continue with the same command and --resume (rows done in {out} are kept)"
        ) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""The ``noisekit`` command: parse, call one library function, print. Errors are one line, exit status 2."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from noisekit.errors import NoisekitError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="noisekit",
    help="Build noisy-label deep metric learning benchmarks, add label noise, publish them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def user_errors(func: F) -> F:
    """Turn :class:`NoisekitError` into ``error: <message>`` on stderr and exit status 2, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NoisekitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def build(
    dataset: Annotated[str, typer.Argument(help="cars, cub, sop, food101n, digits or cars98n")],
    root: Annotated[Path | None, typer.Option(help="Folder of the raw files (or where --download puts them)")] = None,
    download: Annotated[bool, typer.Option(help="Fetch the official archive if it is not under --root")] = False,
    strict: Annotated[bool, typer.Option(help="Fail if a listed image is absent instead of dropping it")] = False,
    food101_root: Annotated[Path | None, typer.Option(help="food101n: the Food-101 folder (test split)")] = None,
    crawl: Annotated[Path | None, typer.Option(help="cars98n: the folder `noisekit crawl` wrote")] = None,
    cars_root: Annotated[Path | None, typer.Option(help="cars98n: the CARS196 folder (test split)")] = None,
    mirror: Annotated[str | None, typer.Option(help="With --download: base URL of a mirror of the archives")] = None,
) -> None:
    """Build DATASET's clean manifest (standard DML split) into the data home."""
    from noisekit.build import BuildOptions
    from noisekit.build import build as run_build
    from noisekit.info import render, summary

    start = time.perf_counter()
    options = BuildOptions(root, download, strict, food101_root, crawl, cars_root, mirror)
    path, result = run_build(dataset, options)
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
    """Show images and classes per split and the noise figures of a manifest."""
    from noisekit.info import info as get_info
    from noisekit.info import render, to_json

    data = get_info(name)
    typer.echo(to_json(data) if json_ else render(data))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

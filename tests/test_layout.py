"""The layout the README promises: noisekit's stages as folders with imports only along the data flow, size limits,
one option vocabulary across both CLIs, and an example line in every command's help."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest
import typer

from noisekit.cli import HELP
from noisekit.cli import app as noisekit_app
from prism.cli import app as prism_app

ROOT = Path(__file__).resolve().parents[1]
# the data flow: a crawl feeds CARS-98N's source, sources build clean manifests, noise makes variants, hub publishes
STAGES = ("crawl", "sources", "noise", "hub")
TOP_LEVEL = {"__init__", "__main__", "cli", "manifest", "paths", "errors", "download", "progress", "info", "device"}
SHARED = ("backbones",)  # helper packages beside the stages (pretrained models for noise and prism); import no stage


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_noisekit_top_level_keeps_only_the_contract() -> None:
    top = {p.stem for p in (ROOT / "noisekit").glob("*.py")}
    assert top == TOP_LEVEL and len(top) <= 10
    packages = {p.name for p in (ROOT / "noisekit").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(STAGES) | set(SHARED)
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((ROOT / "noisekit" / stage / "__init__.py").read_text())) or ""
        assert "In:" in doc and "Out:" in doc and "Open" in doc, stage


def test_stages_import_only_earlier_stages() -> None:
    for stage_index, stage in enumerate(STAGES):
        for path in _modules(f"noisekit/{stage}"):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "prism" or (parts[0] == "noisekit" and len(parts) > 1 and parts[1] == "cli"):
                    pytest.fail(f"{path.relative_to(ROOT)} imports {module}: stages never import the CLI or prism")
                if parts[0] == "noisekit" and len(parts) > 1 and parts[1] in STAGES:
                    assert STAGES.index(parts[1]) <= stage_index, f"{path.relative_to(ROOT)} imports {module}"
    for name in TOP_LEVEL - {"__init__", "cli", "info"}:  # the contract and shared helpers import no stage
        stages = {m.split(".")[1] for m in _imports(ROOT / "noisekit" / f"{name}.py") if m.startswith("noisekit.")}
        assert not stages & set(STAGES), name
    for path in (p for shared in SHARED for p in _modules(f"noisekit/{shared}")):
        stages = {m.split(".")[1] for m in _imports(path) if m.startswith("noisekit.") and "." in m}
        assert not stages & set(STAGES), path


@pytest.mark.parametrize("package", ["noisekit", "prism"])
def test_files_and_functions_stay_small(package: str) -> None:
    for path in _modules(package):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path.relative_to(ROOT)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno < 100, f"{path.relative_to(ROOT)}: {node.name}"


def _commands(app: typer.Typer, name: str) -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(app)
    out = [(name, root)]
    for sub_name, sub in getattr(root, "commands", {}).items():
        out.append((f"{name} {sub_name}", sub))
        out += [(f"{name} {sub_name} {n}", c) for n, c in getattr(sub, "commands", {}).items()]
    return out


COMMANDS = _commands(noisekit_app, "noisekit") + _commands(prism_app, "prism")


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_has_an_example_and_renders_its_help(runner, name: str, command: click.Command) -> None:
    app = noisekit_app if name.startswith("noisekit") else prism_app
    result = runner.invoke(app, [*name.split()[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert f"Example: {name.split()[0]} " in result.output


def test_one_vocabulary() -> None:
    seen: dict[str, list[str]] = {}
    for name, command in COMMANDS:
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts:
                    if opt in HELP:
                        assert (param.help or "").startswith(HELP[opt]), f"{name} {opt}: {param.help!r}"
                        seen.setdefault(opt, []).append(name)
    # every shared option really is shared by both tools
    for opt, where in seen.items():
        assert any(w.startswith("noisekit") for w in where) and any(w.startswith("prism") for w in where), opt

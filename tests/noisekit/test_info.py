"""``noisekit info``: the JSON contract and the table, through the CLI."""

from __future__ import annotations

import json

from noisekit.cli import app


def test_info_json_contract(runner) -> None:
    assert runner.invoke(app, ["build", "digits"]).exit_code == 0
    result = runner.invoke(app, ["info", "digits", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["dataset"] == "digits" and data["variant"] == "clean"
    assert data["splits"] == {"train": 901, "test": 896}
    assert data["classes"] == {"train": 5, "test": 5}
    assert data["noise"] == {"model": None, "requested_rate": None, "realised_rate": None, "seed": None}


def test_info_table(runner) -> None:
    runner.invoke(app, ["build", "digits"])
    result = runner.invoke(app, ["info", "digits"])
    assert result.exit_code == 0
    assert "train          901         5" in result.output and "test           896         5" in result.output


def test_info_by_manifest_path(runner, home) -> None:
    runner.invoke(app, ["build", "digits"])
    result = runner.invoke(app, ["info", str(home / "digits" / "clean.parquet"), "--json"])
    assert json.loads(result.output)["splits"]["train"] == 901


def test_info_errors(runner) -> None:
    result = runner.invoke(app, ["info", "cub"])
    assert result.exit_code == 2 and "not built" in result.output and "noisekit build cub" in result.output
    runner.invoke(app, ["build", "digits"])
    result = runner.invoke(app, ["info", "digits/symmetric-0.5"])
    assert result.exit_code == 2 and "variant 'symmetric-0.5' of 'digits' does not exist" in result.output

"""One spelling of published data in noisekit and prism (``DIR/CONFIG``, ``hub:OWNER/REPO:CONFIG``; ``noisekit load``
also ``DIR --config CONFIG``), and a Hub reference that cannot be reached failing at once, through both CLIs."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from cli_checks import one_line_error
from typer.testing import CliRunner

from noisekit.cli import app
from noisekit.hub.publish import PublishOptions, publish
from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build
from prism.cli import app as prism_app

HUB = "hub:someone/digits-noisy:symmetric-0.5"


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits' clean and symmetric-0.5 configurations published with images into one folder."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOISEKIT_HOME", str(home))
        _, result = build("digits")
        save_variant(symmetric(result.manifest, rate=0.5, seed=0))
        out = home.parent / "digits-noisy"
        publish("digits", out, PublishOptions())
    return out


def test_one_spelling_in_both_tools(folder: Path, runner: CliRunner, tmp_path: Path) -> None:
    spelled = runner.invoke(app, ["load", f"{folder}/symmetric-0.5"])
    assert spelled.exit_code == 0, spelled.output
    head = f"{folder}/symmetric-0.5  (configs: clean, symmetric-0.5)\n"
    assert head in spelled.output
    assert "train noise rate 0.5006 (451 noisy of 901 known; 0 unknown)" in spelled.output
    option = runner.invoke(app, ["load", str(folder), "--config", "symmetric-0.5"])
    assert option.exit_code == 0, option.output
    assert head + spelled.output.split(head)[1].strip() in option.output  # the same summary

    hint = f"{folder} has 2 configurations (clean, symmetric-0.5); name one as {folder}/CONFIG"
    one_line_error(runner.invoke(app, ["load", str(folder)]), hint)
    run = tmp_path / "run"
    one_line_error(runner.invoke(prism_app, ["train", "--dataset", str(folder), "--out", str(run)]), hint)
    printed = runner.invoke(prism_app, ["train", "--dataset", f"{folder}/clean", "--print-config"])
    assert printed.exit_code == 0, printed.output  # the hint's spelling is what prism takes
    assert f"dataset: {folder}/clean" in printed.output and "arch: small_cnn" in printed.output

    unknown = f"{folder}/nope: no configuration 'nope' (have: clean, symmetric-0.5)"
    one_line_error(runner.invoke(app, ["load", f"{folder}/nope"]), unknown)
    one_line_error(runner.invoke(app, ["load", str(folder), "--config", "nope"]), unknown)
    one_line_error(runner.invoke(prism_app, ["train", "--dataset", f"{folder}/nope", "--out", str(run)]), unknown)
    both = runner.invoke(app, ["load", f"{folder}/clean", "--config", "symmetric-0.5"])
    one_line_error(both, "name two configurations; give one", f"({folder}/symmetric-0.5)")
    assert not run.exists()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "closed port"])
def test_an_unreachable_hub_fails_at_once(how: str, runner: CliRunner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        reason = "offline (HF_HUB_OFFLINE is set)"
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        endpoint = f"http://127.0.0.1:{closed_port()}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        reason = f"offline (cannot reach {endpoint}: "
    run = tmp_path / "run"
    for tool, args in ((prism_app, ["train", "--dataset", HUB, "--out", str(run)]), (app, ["load", HUB])):
        start = time.perf_counter()
        result = runner.invoke(tool, args)
        assert time.perf_counter() - start < 5, result.output  # datasets alone retries for about 28 s
        one_line_error(result, f"{HUB}: {reason}", "give a local published folder instead (DIR/CONFIG")
    assert not run.exists()


def test_offline_a_kept_copy_trains(folder: Path, home: Path, runner: CliRunner, monkeypatch) -> None:
    """The images and manifest an earlier run materialised from a Hub reference serve it offline."""
    online = runner.invoke(prism_app, ["train", "--dataset", f"{folder}/symmetric-0.5", "--print-config"])
    assert online.exit_code == 0, online.output
    kept = next((home / "hub").glob("local--*/symmetric-0.5"))
    shutil.copytree(kept, home / "hub" / "someone--digits-noisy" / "symmetric-0.5")  # as the Hub run leaves it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    offline = runner.invoke(prism_app, ["train", "--dataset", HUB, "--print-config"])
    assert offline.exit_code == 0, offline.output
    assert time.perf_counter() - start < 5
    assert f"dataset: {HUB}" in offline.output and "classes_per_batch: 5" in offline.output

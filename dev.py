#!/usr/bin/env python3
"""The project's two set-up commands, runnable on a fresh machine with only Python 3.11 and pip.

    python3 dev.py demo   # build omniglot, add noise, train baseline and PRISM, print the comparison
    python3 dev.py test   # lint and the whole test suite

Each creates ./.venv and installs the project into it (editable, with its dev tools) when that is missing or
pyproject.toml changed since.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if code:
        sys.exit(code)


def ensure_venv() -> None:
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == want:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(want)


def demo() -> None:
    run(BIN / "python", "-m", "prism.demo", *sys.argv[2:])


def test() -> None:
    run(BIN / "ruff", "check", "noisekit", "prism", "tests", "bench", "dev.py")
    run(BIN / "python", "-m", "pytest", *(sys.argv[2:] or ["-q"]))


if __name__ == "__main__":
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(commands)}}} [args...]")
    ensure_venv()
    commands[sys.argv[1]]()

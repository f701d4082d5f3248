"""Fixtures of the prism tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisekit.noise.common import save_variant
from noisekit.noise.symmetric import symmetric
from noisekit.sources.build import build


@pytest.fixture
def noisy_digits(home: Path) -> str:
    """The real digits with 50% symmetric noise (seed 0), built into this test's data home."""
    _, result = build("digits")
    save_variant(symmetric(result.manifest, rate=0.5, seed=0))
    return "digits/symmetric-0.5"

"""The assertion every bad-input test makes of a CLI result: exit status 2 and one line ``error: ...`` naming
what is wrong, with no traceback."""

from __future__ import annotations

from click.testing import Result


def one_line_error(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]

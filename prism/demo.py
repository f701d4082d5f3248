"""The README's main job on the embedded digits default: build digits and show what was built."""

from __future__ import annotations

from noisekit.build import build
from noisekit.info import render, summary


def main() -> None:
    path, result = build("digits")
    print(render(summary(result.manifest)))
    print(f"demo: built digits ({len(result.manifest):,} images) -> {path}")


if __name__ == "__main__":
    main()

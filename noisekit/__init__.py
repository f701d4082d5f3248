"""noisekit: build noisy-label deep metric learning benchmarks reproducibly and publish them."""

__version__ = "0.1.0"

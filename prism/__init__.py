"""prism: train and evaluate PRISM (Liu et al., CVPR 2021) and its baselines on noisekit manifests."""

__version__ = "0.1.0"

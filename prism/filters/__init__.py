"""Per-sample clean-probability criteria that PRISM's selection can use in place of its centre softmax."""

"""Training as the posts train: ``python -m conformance train`` and its data."""

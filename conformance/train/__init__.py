"""Training as d2l and Hongpu Liu's lecture train: ``python -m conformance train`` and its data."""

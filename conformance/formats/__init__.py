"""Checkpoints in and out: the format registry, naming schemes, and ``port``."""

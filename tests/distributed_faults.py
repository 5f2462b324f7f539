"""Broken data-parallel ports, the negative controls of ``check --distributed``: each
makes a framework's distributed Trainer (``impl_*/distributed.py``) wrong through the
two seams every one has, ``shard`` and ``loss_weight``, and runs in the engine's real
worker processes (the job names it, ``train.worker.trainer_class`` imports it there).

``FAULTS`` maps each fault to the ``"module:callable"`` that a ``steps`` job names.
"""

from __future__ import annotations

from typing import Any


def summed(trainer: type[Any]) -> type[Any]:
    """Gradients summed across the workers where they should be averaged: each replica's
    loss weighted N times too much, as a port that forgot the engine's 1 / N would."""

    class Summed(trainer):
        def loss_weight(self, rows: int, replica: int) -> float:
            return super().loss_weight(rows, replica) * self.world.workers

    return Summed


def same_shard(trainer: type[Any]) -> type[Any]:
    """Every replica trains on replica 0's rows of each global batch, as a port that forgot
    to shard by rank would."""

    class SameShard(trainer):
        def shard(self, rows: int, replica: int) -> tuple[int, int]:
            return super().shard(rows, 0)

    return SameShard


FAULTS = {
    "sum": f"{__name__}:{summed.__name__}",
    "same-shard": f"{__name__}:{same_shard.__name__}",
}

"""Where a data-parallel worker stands: how many workers there are, which one it is,
which rows of each global batch it takes, and how it must weight its loss.

Framework-free, so the launcher, the training loop, the distributed check and the
three ``impl_*/distributed.py`` share one definition. ``--batch`` is the global
batch: every worker sees the same global batch, in the single-process run's order,
and takes a contiguous shard of it, so N workers compute what one process computes.
"""

from __future__ import annotations

from dataclasses import dataclass


class WorldError(RuntimeError):
    """A worker that cannot join, or a peer that is gone: one line, no traceback.
    ``detail`` says what worker 0 kept (train fills it in, as for an interrupt)."""

    detail = ""


@dataclass(frozen=True)
class World:
    workers: int = 1
    rank: int = 0  # the engine's rank (MXNet's scheduler assigns it: known after joining)
    address: str = "127.0.0.1"  # the rendezvous: torch's MASTER_ADDR, MXNet's DMLC_PS_ROOT_URI
    port: int = 0  # torch's MASTER_PORT, MXNet's DMLC_PS_ROOT_PORT
    timeout: float = 120.0  # seconds to wait for every worker to join

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"--workers: expected a positive integer, got {self.workers}")
        if not 0 <= self.rank < self.workers:
            raise ValueError(f"rank {self.rank} is not one of the {self.workers} workers")

    def bounds(self, n: int, rank: int | None = None) -> tuple[int, int]:
        """Rows [start, stop) of a global batch of ``n`` that worker ``rank`` (default:
        this one) takes: contiguous, in order, sizes differing by at most one (the
        split ``numpy.array_split`` makes)."""
        r = self.rank if rank is None else rank
        small, extra = divmod(n, self.workers)
        start = r * small + min(r, extra)
        return start, start + small + (r < extra)

    def weight(self, n: int, rank: int | None = None) -> float:
        """The factor a worker multiplies the mean loss of its shard by, so that the
        workers' gradients, averaged, are the gradient of the global batch's mean loss:
        ``workers * shard / n`` (1 when the shards are equal)."""
        start, stop = self.bounds(n, rank)
        return self.workers * (stop - start) / n

    def check_batch(self, n: int, option: str = "--batch") -> None:
        """Refuse a global batch that leaves a worker without an image."""
        if n < self.workers:
            raise ValueError(
                f"{option}: a global batch of {n} leaves a worker of the {self.workers} without an image; "
                f"pass at least {self.workers}"
            )

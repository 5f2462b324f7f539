"""Work on each framework at once where each framework has a process of its own: the
threads here only wait on the children's pipes, so as many run at a time as there are
cores; in one process the work runs one framework after another, in this thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .. import limits
from ..frameworks import usable_cores
from .results import Timer

T = TypeVar("T")


def at_once(backends: Mapping[str, Any], names: list[str], work: limits.Work) -> int:
    """How many of ``names`` may work at a time: one per core when every one runs in a
    process of its own (:class:`~conformance.check.processes.Child`), else one; and no
    more than the machine holds ``work`` at once, the bound its options were checked
    against for one (:func:`conformance.limits.check_work`)."""
    if not all(getattr(backends[fw], "in_own_process", False) for fw in names):
        return 1
    return max(1, min(usable_cores(), limits.machine_memory() // work.bytes))


def longest_first(names: list[str], timer: Timer) -> list[str]:
    """``names``, the one that has taken longest so far first: started first, it leaves
    the shorter to fill the other cores around it instead of running alone at the end."""
    return sorted(names, key=lambda fw: -sum(timer.seconds.get(fw, {}).values()))


@contextlib.contextmanager
def each(
    work: Callable[[str], T], names: list[str], workers: int, first: list[str] | None = None
) -> Iterator[Iterator[tuple[str, T]]]:
    """(name, ``work(name)``) for each name, in the order of ``names``; with ``workers``
    above 1, that many run at a time in threads, started in the order of ``first``, and
    those still waiting when the caller stops (a signal) are left to end with their
    processes."""
    if workers == 1:  # in this thread, where a signal interrupts the work itself
        yield ((name, work(name)) for name in names)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="check")
    try:
        started = {name: pool.submit(work, name) for name in first or names}
        yield ((name, started[name].result()) for name in names)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

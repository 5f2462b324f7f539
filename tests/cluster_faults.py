"""Faults on the two hosts' network (``tests/netns.py``) during the README's cluster
commands (``tests/cluster.py``): the link taken down or the peer black-holed, made at a
chosen moment of a run, healed, and the run resumed and compared with one process's."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .cluster import Ended, Job, Outcome, Parity, error_line, parity, results, run, single
from .netns import Host, wait_reachable

# The fault lands in epoch 2, after epoch 1's checkpoint. The timeout covers worker 0's
# evaluation and writing after epoch 1, which its peers wait for in their next step.
FAULTY = Job(limit=8, epochs=2, timeout=60.0)


FAULTS = {
    "link-down": "the veth link taken down (ip link set LINK down on host0)",
    "blackhole": "host0's address black-holed on host1 (ip route add blackhole HOST0/32): packets vanish",
}


def _worker0(logs: Path, framework: str) -> list[list[str]]:
    """The lines of each worker log (worker 0's is whichever has its lines)."""
    return [log.read_text(errors="replace").splitlines() for log in logs.glob(f"{framework}-*.log")]


def mid_epoch(logs: Path, framework: str, epoch: int) -> bool:
    """Whether worker 0 has saved ``epoch - 1`` (its checkpoint line): a fault made now
    lands in ``epoch``, before at least its last step's exchange. (Waiting for a step of
    ``epoch`` instead left a race: with two steps an epoch, a fault made after worker 0
    had pushed its last gradients came after every exchange of the run, see
    :func:`after_last_step`.)"""
    return any(line.startswith(f"epoch {epoch - 1}/") for lines in _worker0(logs, framework) for line in lines)


def after_last_step(logs: Path, framework: str, epoch: int, steps: int) -> bool:
    """Whether worker 0 has reported the last of ``steps`` steps of ``epoch``: a fault made
    now lands after every exchange of the run, while the workers leave the group."""
    for lines in _worker0(logs, framework):
        done = [i for i, line in enumerate(lines) if line.startswith(f"epoch {epoch - 1}/")]
        last = f"train: epoch {epoch}/"  # train's progress line, ending "(2/2 batches)" at the last step
        later = lines[done[-1] + 1 :] if done else []
        if any(line.startswith(last) and line.endswith(f"({steps}/{steps} batches)") for line in later):
            return True
    return False


def make_fault(kind: str, hosts: Sequence[Host], ready: Callable[[], bool]) -> Callable[[], float | None]:
    """A ``run`` fault: ``kind`` (FAULTS), made once ``ready()``."""

    def fault() -> float | None:
        if not ready():
            return None
        if kind == "link-down":
            hosts[0].ip("link", "set", hosts[0].link, "down")
        elif kind == "blackhole":
            hosts[1].ip("route", "add", "blackhole", f"{hosts[0].address}/32")
        else:
            raise ValueError(f"fault: expected one of {', '.join(FAULTS)}, got {kind!r}")
        return time.monotonic()

    return fault


def heal(kind: str, hosts: Sequence[Host]) -> None:
    """Undo ``kind``: the link up again, or the black-hole route removed."""
    if kind == "link-down":
        hosts[0].ip("link", "set", hosts[0].link, "up")
    else:
        hosts[1].ip("route", "del", "blackhole", f"{hosts[0].address}/32")


def error_lines(ended: Sequence[Ended]) -> dict[str, str]:
    """Each worker's one-line error, by command name ("" if none)."""
    return {e.command.name: error_line(e.log) for e in ended if e.command.worker}


@dataclass
class FaultRun:
    kind: str
    outcome: Outcome
    errors: dict[str, str]  # each worker's one line
    resumed: Outcome | None
    rows: list[Parity]  # the resumed run's weights against one process's uninterrupted run
    reference_code: int


def fault_run(
    framework: str,
    kind: str,
    hosts: Sequence[Host],
    tmp: Path,
    job: Job = FAULTY,
    limit: float = 900,
    reference: Path | None = None,
) -> FaultRun:
    """The cluster command with ``kind`` made in the middle of epoch 2, the network
    healed, the same command with ``--resume``, and one process's uninterrupted run (in
    ``reference``, default ``tmp/single``)."""
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    outcome = run(
        framework,
        hosts,
        job,
        tmp / "runs",
        logs,
        limit,
        fault=make_fault(kind, hosts, lambda: mid_epoch(logs, framework, job.epochs)),
    )
    if outcome.fault_at is not None:
        heal(kind, hosts)
    errors = error_lines(outcome.ended)
    resumed = None
    rows: list[Parity] = []
    reference = reference or tmp / "single"
    code = single(framework, job, reference, tmp / f"{framework}-single.log")
    if outcome.fault_at is not None:
        wait_reachable(hosts[1], hosts[0])
        resumed = run(framework, hosts, job, tmp / "runs", logs, limit, resume=True)
        if code == 0 and all(e.code == 0 for e in resumed.workers()):
            got = results(framework, tmp / "runs", job.epochs)
            ref = results(framework, reference, job.epochs)
            rows = parity(ref, got)
    return FaultRun(kind, outcome, errors, resumed, rows, code)

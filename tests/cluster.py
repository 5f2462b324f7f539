"""docs/two_hosts.md's cluster commands, run on two hosts
(``tests/netns.py``): what each host runs, and the run's outcome.

The commands are docs/two_hosts.md's, with HOST0 and HOST1 the namespaces' addresses, one
worker per host (two cores), ``googlenet_d2l`` and a small generated set:

* PyTorch: ``torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d
  --rdzv-endpoint HOST0:PORT -m conformance train ... --workers 2`` on each host;
* Keras: ``TF_CONFIG`` listing ``HOST0:PORT`` and ``HOST1:PORT``, each host its own
  index, ``python -m conformance train ... --workers 2``;
* MXNet: the scheduler and the server on HOST0 (``python -c "import impl_mxnet"`` with
  ``DMLC_ROLE``), a worker on each host.

Both hosts pass the same ``--out``, a directory both see (a cluster's shared disk): only
worker 0 writes, and which host holds worker 0 is the engine's choice (torchrun's
rendezvous, MXNet's scheduler); ``--resume`` reads the run's state on every worker, so
without a shared disk worker 0's files must be copied to the others first.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from conformance.check.compare import Agreement
from conformance.check.training import train_row

from .helpers import command
from .netns import Host

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "googlenet_d2l"
PORT = 29500  # docs/two_hosts.md's ports: one address per namespace, so nothing else holds them
TF_PORT = 12345
PS_PORT = 9091
FRAMEWORKS = ("torch", "keras", "mxnet")


@dataclass(frozen=True)
class Job:
    """What the cluster trains: ``train`` options, the same for one process."""

    batch_size: int = 4
    limit: int = 8  # images: limit / batch_size steps an epoch
    epochs: int = 1
    timeout: float = 30.0  # seconds the engine waits for a peer (train --timeout)
    momentum: float = 0.9

    def options(self, out: Path, resume: bool = False) -> list[str]:
        return [
            "--variant",
            VARIANT,
            "--batch",
            str(self.batch_size),
            "--limit",
            str(self.limit),
            "--epochs",
            str(self.epochs),
            "--momentum",
            str(self.momentum),
            "--out",
            str(out),
            *(["--resume"] if resume else []),
        ]

    def train(self, framework: str, out: Path, resume: bool = False) -> list[str]:
        return command("train", "--framework", framework, *self.options(out, resume))


@dataclass(frozen=True)
class Command:
    host: int  # 0: HOST0, 1: HOST1
    name: str  # "worker on host0", "scheduler", ...
    argv: tuple[str, ...]
    env: Mapping[str, str]
    worker: bool = True  # the run is over when every worker is (the others are the engine's helpers)


def environment() -> dict[str, str]:
    """This process's environment with the repository first on the path, and no engine
    variable of an outer run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMLC_", "TF_CONFIG", "MASTER_", "TORCHELASTIC"))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def commands(framework: str, hosts: Sequence[Host], job: Job, out: Path, resume: bool) -> list[Command]:
    """What each host runs for ``framework`` (docs/two_hosts.md's cluster command)."""
    host0 = hosts[0].address
    env = environment()
    train = [[*job.train(framework, out, resume), "--workers", "2", "--timeout", f"{job.timeout:g}"] for i in (0, 1)]
    if framework == "torch":
        run = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
        run += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{host0}:{PORT}", "--max-restarts", "0"]
        # the worker arguments after "-m conformance", as torchrun passes them on
        return [Command(i, f"torchrun on host{i}", (*run, "-m", *train[i][2:]), env) for i in (0, 1)]
    if framework == "keras":
        cluster = [f"host{i}:{TF_PORT}" for i in (0, 1)]  # docs/two_hosts.md's names: each host's /etc/hosts has them
        return [
            Command(
                i,
                f"worker {i} on host{i}",
                tuple(train[i]),
                {
                    **env,
                    "TF_CONFIG": json.dumps({"cluster": {"worker": cluster}, "task": {"type": "worker", "index": i}}),
                },
            )
            for i in (0, 1)
        ]
    if framework == "mxnet":
        ps = {"DMLC_PS_ROOT_URI": host0, "DMLC_PS_ROOT_PORT": str(PS_PORT), "DMLC_NUM_SERVER": "1"}
        ps |= {"DMLC_NUM_WORKER": "2"}
        serve = (sys.executable, "-c", "import impl_mxnet")
        return [
            Command(0, "scheduler", serve, {**env, **ps, "DMLC_ROLE": "scheduler"}, worker=False),
            Command(0, "server", serve, {**env, **ps, "DMLC_ROLE": "server"}, worker=False),
            *(Command(i, f"worker on host{i}", tuple(train[i]), {**env, **ps, "DMLC_ROLE": "worker"}) for i in (0, 1)),
        ]
    raise ValueError(f"framework: expected one of {', '.join(FRAMEWORKS)}, got {framework!r}")


@dataclass
class Ended:
    command: Command
    code: int | None  # None: still running when the run was given up (then killed)
    log: Path
    at: float | None = None  # seconds after the fault this worker ended (None: no fault, or not ended)

    def lines(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if line.strip()]


@dataclass
class Outcome:
    ended: list[Ended]
    seconds: float  # from the start to the last worker's end
    fault_at: float | None = None  # seconds after the start the fault was made
    last_worker_at: float = 0.0  # seconds after the fault the last worker ended (or was ended)
    said_at: float | None = None  # seconds after the fault the last worker's error line appeared
    notes: list[str] = field(default_factory=list)

    def workers(self) -> list[Ended]:
        return [e for e in self.ended if e.command.worker]

    def figures(self) -> dict[str, object]:
        """The run's times (seconds after the fault) and each process's exit status."""
        return {
            "fault_at": self.fault_at,
            "said_at": self.said_at,
            "last_worker_at": self.last_worker_at,
            "ended": {e.command.name: {"code": e.code, "at": e.at, "error": error_line(e.log)} for e in self.ended},
        }


GRACE = 10.0  # the launcher's: SIGTERM, then SIGKILL after this
# seconds beyond the engine's timeout and the grace for the engine to notice: a step in
# flight when the link went down may have started up to a step's time before
DETECTION_MARGIN = 60.0


def run(
    framework: str,
    hosts: Sequence[Host],
    job: Job,
    out: Path,
    logs: Path,
    limit: float,
    resume: bool = False,
    fault: Callable[[], float | None] | None = None,
) -> Outcome:
    """Start every host's commands, wait until every worker ended (at most ``limit``
    seconds: then each is killed and its code is None). ``fault``: called every 0.2 s
    while the workers run; it makes the fault when it decides to and returns the time
    it did (else None). After a fault, a worker that printed its error line but has not
    ended GRACE seconds later is ended as a cluster's launcher would (its code None):
    torchrun's agent, cut off from the rendezvous store, does not end by itself."""
    started: list[tuple[Command, subprocess.Popen[bytes], Path]] = []
    began = time.monotonic()
    fault_at: float | None = None
    out.mkdir(parents=True, exist_ok=True)
    ends: dict[int, float] = {}
    said: dict[int, float] = {}  # when each worker's log first had its error line
    try:
        for c in commands(framework, hosts, job, out, resume):
            log = logs / f"{framework}-{c.name.replace(' ', '-')}{'-resume' if resume else ''}.log"
            started.append((c, hosts[c.host].start(c.argv, c.env, log), log))
            if not c.worker:
                time.sleep(0.5)  # ps-lite: the scheduler listens before the others connect
        workers = [i for i, (c, _, _) in enumerate(started) if c.worker]
        while time.monotonic() - began < limit:
            now = time.monotonic()
            for i in workers:
                c, popen, log = started[i]
                if i not in ends and popen.poll() is not None:
                    ends[i] = now
                if fault_at is not None and i not in said and error_line(log):
                    said[i] = now
            if all(i in ends for i in workers):
                break
            if len(said) == len(workers) and now - max(said.values()) > GRACE:
                break
            if fault is not None and fault_at is None:
                made = fault()
                fault_at = None if made is None else made - began
            time.sleep(0.2)
    finally:
        for _, popen, _ in started:
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for _, popen, _ in started:
            try:
                popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
    last = max(ends.values(), default=time.monotonic())
    after = (lambda moment: moment - began - fault_at) if fault_at is not None else (lambda moment: 0.0)
    ended = [
        Ended(
            c,
            popen.returncode if i in ends or not c.worker else None,
            log,
            after(ends[i]) if i in ends and fault_at is not None else None,
        )
        for i, (c, popen, log) in enumerate(started)
    ]
    outcome = Outcome(
        ended,
        last - began,
        fault_at,
        after(last),
        after(max(said.values())) if len(said) == len(ended) - sum(not e.command.worker for e in ended) else None,
    )
    # beside the logs, so a failure's figures are kept with its evidence
    (logs / f"{framework}-outcome{'-resume' if resume else ''}.json").write_text(
        json.dumps(outcome.figures(), indent=1)
    )
    return outcome


def error_line(log: Path) -> str:
    """A worker's one-line error (``error:`` or ``FAIL:``) in its log, or ""."""
    text = log.read_text(errors="replace") if log.exists() else ""
    said = [line for line in text.splitlines() if line.startswith(("error:", "FAIL:"))]
    return said[-1] if said else ""


def single(framework: str, job: Job, out: Path, log: Path) -> int:
    """The same ``train`` in one process on this machine (the reference); its exit code.
    A reference already in ``out`` (its history written last) is reused: 0."""
    if (out / f"{VARIANT}-{framework}.json").is_file():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        done = subprocess.run(
            job.train(framework, out), env=environment(), stdout=sink, stderr=subprocess.STDOUT, check=False
        )
    return done.returncode


def results(framework: str, out: Path, epoch: int) -> dict[str, np.ndarray]:
    """What ``check --distributed`` compares, from a run's files: ``loss/epoch E`` (each
    epoch's mean loss, from the history) and ``weights/<key>`` after the last step."""
    history = json.loads((out / f"{VARIANT}-{framework}.json").read_text())
    got = {f"loss/epoch {e['epoch']}": np.array([e["loss"]]) for e in history["epochs"]}
    weights = load_file(str(out / f"{VARIANT}-{framework}-epoch{epoch}.safetensors"))
    got.update({f"weights/{k}": v for k, v in weights.items()})
    return got


@dataclass
class Parity:
    quantity: str
    keys: int
    worst: str
    agreement: Agreement

    def line(self) -> str:
        a = self.agreement
        verdict = "PASS" if a.passed else "FAIL"
        figures = f"max abs {a.max_abs:.1e}  max rel {a.max_rel:.1e}"
        return f"{self.quantity:<8} {self.keys:>4} keys  {figures}  worst {self.worst}  {verdict}"


def parity(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> list[Parity]:
    """Loss and weights key by key, as ``check --distributed`` compares them
    (``training.train_row``: every key on both sides, relative to 1e-4)."""
    rows = []
    for quantity, prefix in (("loss", "loss/"), ("weights", "weights/")):
        a = {k: v for k, v in ref.items() if k.startswith(prefix)}
        b = {k: v for k, v in got.items() if k.startswith(prefix)}
        worst, agreement = train_row(quantity, a, b, {})
        rows.append(Parity(quantity, len(a), worst.removeprefix(prefix), agreement))
    return rows


PARITY = Job()  # two steps of 4 images: check --distributed's global batch


@dataclass
class ParityRun:
    outcome: Outcome
    rows: list[Parity]
    reference_code: int

    @property
    def passed(self) -> bool:
        codes = [e.code for e in self.outcome.workers()]
        return codes == [0] * len(codes) and self.reference_code == 0 and all(r.agreement.passed for r in self.rows)


def parity_run(
    framework: str,
    hosts: Sequence[Host],
    tmp: Path,
    job: Job = PARITY,
    limit: float = 900,
    reference: Path | None = None,
) -> ParityRun:
    """docs/two_hosts.md's cluster command on both hosts and the same train in one process
    (in ``reference``, default ``tmp/single``): loss and weights after ``job``'s steps."""
    outcome = run(framework, hosts, job, tmp / "runs", tmp, limit)
    reference = reference or tmp / "single"
    code = single(framework, job, reference, tmp / f"{framework}-single.log")
    rows: list[Parity] = []
    if code == 0 and all(e.code == 0 for e in outcome.workers()):
        rows = parity(
            results(framework, reference, job.epochs),
            results(framework, tmp / "runs", job.epochs),
        )
    return ParityRun(outcome, rows, code)

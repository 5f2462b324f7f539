"""Start the processes of a data-parallel run on this machine, and end them together.

Each framework's engine wants its own processes (the table below). The launcher picks
a free port (or takes ``--port``), starts them with the engine's own variables (the
ones ``torchrun`` or a cluster sets, so the same worker code runs there), relays the
first worker's output, and watches them all: when one fails, or a rendezvous is not
reached in time, every process is ended within a bounded time and the run ends with
one line that names the worker and what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from .. import interrupts
from ..world import World

ROOT = Path(__file__).resolve().parents[2]  # the directory holding conformance/ and impl_*/
GRACE = 10.0  # seconds a process gets to end after SIGTERM, before SIGKILL
POLL = 0.1


@dataclass(frozen=True)
class Process:
    name: str  # "worker 0", "scheduler", ...
    env: Mapping[str, str]
    worker: bool  # runs the job (else a helper process of the engine: ends when the workers do)
    argv: tuple[str, ...] = ()  # default: the worker entry on the job file


def free_port(address: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS picks it; a race with another program that
    takes it before the engine does is possible, which ``--port`` avoids)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _torch(world: World) -> list[Process]:
    # torchrun's variables (torch.distributed.run): the same worker runs under torchrun
    common = {"MASTER_ADDR": world.address, "MASTER_PORT": str(world.port), "WORLD_SIZE": str(world.workers)}
    return [
        Process(f"worker {r}", {**common, "RANK": str(r), "LOCAL_RANK": str(r)}, True) for r in range(world.workers)
    ]


def _mxnet(world: World) -> list[Process]:
    # ps-lite's variables (MXNet's tools/launch.py sets the same): one scheduler, one
    # server, N workers. The scheduler and the server only import MXNet, whose import
    # runs their loop (python/mxnet/kvstore_server.py) until the workers leave.
    common = {
        "DMLC_PS_ROOT_URI": world.address,
        "DMLC_PS_ROOT_PORT": str(world.port),
        "DMLC_NUM_SERVER": "1",
        "DMLC_NUM_WORKER": str(world.workers),
    }
    serve = (sys.executable, "-c", "import impl_mxnet")
    return [
        Process("scheduler", {**common, "DMLC_ROLE": "scheduler"}, False, serve),
        Process("server", {**common, "DMLC_ROLE": "server"}, False, serve),
        *(Process(f"worker {r}", {**common, "DMLC_ROLE": "worker"}, True) for r in range(world.workers)),
    ]


def _keras(world: World) -> list[Process]:
    # MirroredStrategy: one process, one replica per logical CPU device
    return [Process("worker 0", {}, True)]


PROCESSES: dict[str, Callable[[World], list[Process]]] = {"torch": _torch, "keras": _keras, "mxnet": _mxnet}

# Set by torchrun, or by a cluster's launcher: this process is one of the workers.
ENGINE_VARIABLES = {"torch": ("RANK", "WORLD_SIZE"), "mxnet": ("DMLC_ROLE",), "keras": ("TF_CONFIG",)}


def started_by_engine(framework: str) -> bool:
    """Whether the engine's variables say this process is already one of the workers."""
    return all(name in os.environ for name in ENGINE_VARIABLES[framework])


@dataclass
class Outcome:
    code: int  # 0: every worker succeeded; else the first failure's exit code
    failed: str | None = None  # the one line saying which process failed and how
    kept: str = ""  # what worker 0 said it kept when it was ended (its "interrupted" detail)
    said: str = ""  # the failed process's own last line


UNSUPPORTED = 4  # a worker's exit status: the engine cannot do what the job asks on this device


STARTUP = 60.0  # seconds an engine's import may take before its rendezvous starts


def _describe(name: str, code: int, last: str) -> str:
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    return f"{name} {how}" + (f" ({last})" if last else "")


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


def _last_line(path: Path) -> str:
    """A failed process's one-line error if it printed one, else its last line."""
    lines = _lines(path)
    errors = [line for line in lines if line.startswith(("error:", "FAIL:"))]
    return (errors or lines or [""])[-1][:300]


def _kept(path: Path) -> str:
    """What worker 0 said it kept when a signal ended it ("interrupted by X: <detail>")."""
    said = [line.split(": ", 1)[1] for line in _lines(path) if line.startswith("interrupted by ") and ": " in line]
    return said[-1] if said else ""


Running = list[tuple[Process, "subprocess.Popen[bytes]", Path]]


@dataclass
class _Relay:
    """Whose output reaches the user: worker 0's. The first worker started is taken until
    the engine has given ranks (MXNet's scheduler numbers the workers as they register)."""

    stop: threading.Event
    pid: int | None = None

    def follows(self, pid: int) -> bool:
        return pid == self.pid and not self.stop.is_set()


def run(
    framework: str,
    world: World,
    job: Mapping[str, Any],
    stdout: IO[str] = sys.stdout,
    stderr: IO[str] = sys.stderr,
    stop: threading.Event | None = None,
) -> Outcome:
    """Start ``framework``'s processes for ``world`` on ``job`` (handed to each worker as a
    JSON file) and wait for them. Worker 0's output is relayed; every worker's is kept,
    and only the failed one's last line shown if one fails. A signal to the launcher is
    passed on to the workers (worker 0 keeps what it has, as a run without workers does)
    and raised here with worker 0's detail. ``stop``: set by a caller that runs this in a
    thread (signals reach the main thread only), it ends the processes as a failure does."""
    if not world.port:
        world = World(world.workers, 0, world.address, free_port(world.address), world.timeout)
    procs = PROCESSES[framework](world)
    with tempfile.TemporaryDirectory(prefix="conformance-workers-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps({**job, "framework": framework, "world": asdict(world), "joined": tmp}))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        for name in (v for names in ENGINE_VARIABLES.values() for v in names):
            env.pop(name, None)  # the launcher's own, if it runs under an engine, are not the workers'
        running: Running = []
        relay = _Relay(threading.Event())
        threads: list[threading.Thread] = []
        try:
            for p in procs:
                running.append(_start(p, job_file, env, Path(tmp), (stdout, stderr), relay, threads))
            outcome = _watch(running, Path(tmp), world.timeout + STARTUP, relay, stop)
        except interrupts.Interrupted as e:
            relay.stop.set()  # worker 0's own "interrupted" line becomes the launcher's detail
            _end(running, e.signum)
            e.detail = _kept(_first(running, Path(tmp))) if running else ""
            raise
        except BaseException:
            relay.stop.set()
            _end(running)
            raise
        for t in threads:
            t.join(timeout=GRACE)
        return outcome


def _start(
    p: Process,
    job_file: Path,
    env: Mapping[str, str],
    tmp: Path,
    sinks: tuple[IO[str], IO[str]],
    relay: _Relay,
    threads: list[threading.Thread],
) -> tuple[Process, subprocess.Popen[bytes], Path]:
    """Start one process; a worker's stdout and stderr go to its log and, while it is
    worker 0, to the user."""
    log = tmp / f"{p.name.replace(' ', '-')}.log"
    argv = p.argv or (sys.executable, "-m", "conformance.train.worker", str(job_file))
    with open(log, "wb") as err:
        popen = subprocess.Popen(
            argv,
            env={**env, **p.env},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if p.worker else subprocess.DEVNULL,
            stderr=subprocess.PIPE if p.worker else err,
            start_new_session=True,  # a Ctrl-C reaches the launcher only, which passes it on
        )
    if p.worker:
        relay.pid = relay.pid or popen.pid
        assert popen.stdout is not None and popen.stderr is not None
        for source, sink in zip((popen.stdout, popen.stderr), sinks, strict=True):
            t = threading.Thread(target=_tee, args=(source, sink, log, relay, popen.pid), daemon=True)
            t.start()
            threads.append(t)
    return p, popen, log


def _tee(source: IO[bytes], sink: IO[str], log: Path, relay: _Relay, pid: int) -> None:
    """Copy a worker's stream to its log (for the failure line), and to the user while
    the worker is worker 0."""
    with open(log, "ab") as copy:
        for line in iter(source.readline, b""):
            copy.write(line)
            copy.flush()
            if relay.follows(pid):
                sink.write(line.decode(errors="replace"))
                sink.flush()


def _ranks(tmp: Path) -> dict[int, int]:
    """pid -> rank of the workers that joined (``joined`` writes its pid)."""
    found = {}
    for entry in tmp.glob("joined-*"):
        with contextlib.suppress(OSError, ValueError):
            found[int(entry.read_text())] = int(entry.name.removeprefix("joined-"))
    return found


def _first(running: Running, tmp: Path) -> Path:
    """Worker 0's log (by rank once known, else the first worker started)."""
    ranks = _ranks(tmp)
    zero = next((pid for pid, rank in ranks.items() if rank == 0), None)
    logs = [(popen.pid, log) for p, popen, log in running if p.worker]
    return next((log for pid, log in logs if pid == zero), logs[0][1])


def _name(p: Process, popen: subprocess.Popen[bytes], tmp: Path) -> str:
    rank = _ranks(tmp).get(popen.pid)
    return p.name if rank is None else f"worker {rank}"


def _joined(tmp: Path) -> int:
    return sum(1 for entry in tmp.iterdir() if entry.name.startswith("joined-"))


def _watch(running: Running, tmp: Path, join_limit: float, relay: _Relay, stop: threading.Event | None) -> Outcome:
    """Wait until every worker ended; at the first failure, a rendezvous not reached
    within ``join_limit`` seconds, or ``stop`` set, end them all."""
    workers = sum(p.worker for p, _, _ in running)
    started = time.monotonic()
    while True:
        zero = next((pid for pid, rank in _ranks(tmp).items() if rank == 0), None)
        relay.pid = zero or relay.pid  # from now on worker 0's output, whichever process it is
        failed = [(p, popen, log) for p, popen, log in running if popen.poll() not in (None, 0)]
        if failed:
            # a process a signal killed is the cause; a peer's error about it is the effect
            p, popen, log = min(failed, key=lambda f: (f[1].returncode or 0) >= 0)
            code, said = popen.returncode, _last_line(log)
            # a signal's victim said nothing about it: its last line would be a progress bar
            why = _describe(_name(p, popen, tmp), code, said if code > 0 else "")
            outcome = _fail(running, tmp, relay, why, code if code > 0 else 1)
            return dataclasses.replace(outcome, said=said)
        if all(popen.poll() == 0 for p, popen, _ in running if p.worker):
            _end(running)  # the engine's helper processes, if they linger
            return Outcome(0)
        if _joined(tmp) < workers and time.monotonic() - started > join_limit:
            why = f"{workers - _joined(tmp)} of {workers} workers did not join within {join_limit:.0f} s"
            return _fail(running, tmp, relay, why, 1)
        if stop is not None and stop.is_set():
            return _fail(running, tmp, relay, "stopped by the launcher's caller", 1)
        time.sleep(POLL)


def _fail(running: Running, tmp: Path, relay: _Relay, why: str, code: int) -> Outcome:
    relay.stop.set()
    _end(running)
    time.sleep(POLL)  # the last lines of worker 0's log
    return Outcome(code, why, _kept(_first(running, tmp)))


def _end(running: Running, signum: int = signal.SIGTERM) -> None:
    """``signum`` to every process still running (workers first, so worker 0 keeps what
    it has), then SIGKILL to any still there after GRACE seconds."""
    alive = [(p, popen) for p, popen, _ in running if popen.poll() is None]
    alive.sort(key=lambda item: not item[0].worker)
    for _, popen in alive:
        _signal(popen, signum)
    deadline = time.monotonic() + GRACE
    for _, popen in alive:
        try:
            popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(popen, signal.SIGKILL)
            popen.wait()


def _signal(popen: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signum)  # the worker and any process it started


def joined(job: Mapping[str, Any], rank: int) -> None:
    """A worker tells the launcher it passed the rendezvous (a file in the job's directory)."""
    if job.get("joined"):
        Path(job["joined"], f"joined-{rank}").write_text(str(os.getpid()))

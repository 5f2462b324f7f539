"""The README's cluster commands on two hosts (two network namespaces, ``tests/netns.py``):
each engine trains across them as one process does, and a network that fails in the
middle of an epoch ends the run in bounded time, with one line on each host, and
``--resume`` finishes it. Root only (CI runs as root): elsewhere they skip, saying why.

Selected with ``-m two_hosts``; figures in docs/two_hosts.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from . import cluster, cluster_faults, netns

pytestmark = pytest.mark.two_hosts

WHY = netns.unavailable()
needs_namespaces = pytest.mark.skipif(WHY is not None, reason=WHY or "")

STARTUP = 120.0  # seconds: importing the framework and tracing the first step, on a loaded CI machine


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """One process's runs, made once per framework and job and shared by the tests."""
    root = tmp_path_factory.mktemp("single")
    return lambda framework, job: root / f"{framework}-{job.epochs}-{job.limit}-{job.batch_size}"


_PARITY: dict[str, cluster.ParityRun] = {}  # torch's parity run, which the negative control reuses


# cluster.FRAMEWORKS, each in its own xdist group. CI runs these tests with ``-n 3 --dist
# loadgroup`` (the fault tests mostly wait out a peer's timeout): a group's tests run in one
# worker, in order, so torch's parity run is there for the negative control, and an engine's
# two faults (blackhole selected too) share its reference.
ENGINES = [pytest.param(f, marks=pytest.mark.xdist_group(f)) for f in cluster.FRAMEWORKS]


@pytest.fixture
def hosts():
    """Two hosts with their own addresses, removed afterwards whatever happens."""
    if WHY is not None:
        pytest.skip(WHY)
    with netns.two_hosts() as pair:
        yield pair


@needs_namespaces
def test_only_the_other_host_is_reachable(hosts):
    host0, host1 = hosts
    assert netns.wait_reachable(host0, host1) < 10
    assert netns.wait_reachable(host1, host0) < 10
    # the machine outside is not: its loopback is not the namespace's, and no route leads out
    outside = subprocess.run(
        host0.argv([sys.executable, "-c", "import socket; socket.create_connection(('10.0.0.1', 22), timeout=1)"]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert outside.returncode != 0 and "unreachable" in outside.stderr.lower()
    # negative control: the link taken down, the probe says the peer is gone
    host0.ip("link", "set", host0.link, "down")
    with pytest.raises(OSError, match="cannot reach"):
        netns.wait_reachable(host0, host1, seconds=1.0)


@needs_namespaces
@pytest.mark.parametrize("how", ["error", "signal"])
def test_namespaces_are_removed(tmp_path, how):
    """An error in the block, or SIGTERM to the process holding them: both namespaces
    (and the /etc/netns files) are gone afterwards."""
    # the child holds the namespaces until told to go on (a line on stdin), or signalled
    then = "sys.stdin.readline(); raise RuntimeError('boom')" if how == "error" else "time.sleep(60)"
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from tests import netns\n"
        "with netns.two_hosts() as hosts:\n"
        "    print(' '.join(h.namespace for h in hosts), flush=True)\n"
        f"    {then}\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parents[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    names = child.stdout.readline().split()
    assert len(names) == 2 and all(n in netns._namespaces() for n in names)
    if how == "signal":
        child.send_signal(signal.SIGTERM)
    else:
        child.stdin.write("go on\n")
        child.stdin.flush()
    child.wait(timeout=60)
    assert child.returncode == (-signal.SIGTERM if how == "signal" else 1)
    assert not set(names) & set(netns._namespaces())
    assert not any((netns.NETNS_ETC / n).exists() for n in names)


@needs_namespaces
def test_stale_namespaces_of_a_killed_owner_are_removed():
    """SIGKILL runs no cleanup: the next two_hosts removes what the dead owner left."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = f"{netns.PREFIX}{child.pid}a"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    child.kill()
    child.wait()
    with netns.two_hosts():
        assert stale not in netns._namespaces()


@needs_namespaces
@pytest.mark.parametrize("framework", ENGINES)
def test_parity_across_two_hosts(hosts, tmp_path, framework, references):
    """The README's cluster command on both hosts: the loss and weights after two steps
    equal one process's on the global batch."""
    result = cluster.parity_run(framework, hosts, tmp_path, reference=references(framework, cluster.PARITY))
    _PARITY[framework] = result
    logs = "\n".join(f"{e.command.name}: {e.code}: {e.lines()[-3:]}" for e in result.outcome.ended)
    assert [e.code for e in result.outcome.workers()] == [0, 0], logs
    assert result.reference_code == 0
    assert [r.quantity for r in result.rows] == ["loss", "weights"]
    assert all(r.agreement.passed for r in result.rows), [r.line() for r in result.rows]


@needs_namespaces
@pytest.mark.xdist_group("torch")
def test_parity_fails_against_another_run(hosts, tmp_path, references):
    """Negative control: the same comparison against one process that stepped on the
    same 8 images in batches of 2, half the global batch (as if each step had used one
    worker's shard), fails."""
    if "torch" not in _PARITY:  # run alone: make the cluster run here
        _PARITY["torch"] = cluster.parity_run("torch", hosts, tmp_path, reference=references("torch", cluster.PARITY))
    result = _PARITY["torch"]
    assert result.passed
    half = cluster.Job(batch_size=2)
    assert cluster.single("torch", half, tmp_path / "half", tmp_path / "half.log") == 0
    got = cluster.results("torch", result.outcome.ended[0].log.parent / "runs", 1)
    rows = cluster.parity(cluster.results("torch", tmp_path / "half", 1), got)
    assert not all(r.agreement.passed for r in rows)
    assert rows[1].agreement.max_rel > 1e-3


@needs_namespaces
@pytest.mark.parametrize("kind", list(cluster_faults.FAULTS))
@pytest.mark.parametrize("framework", ENGINES)
def test_network_fault_ends_the_run_and_resume_finishes_it(hosts, tmp_path, framework, kind, references):
    """The fault in the middle of epoch 2: every worker ends within the engine's timeout
    plus the launcher's grace, each host says in one line which peer it lost and what
    worker 0 kept, and --resume after healing ends with one process's weights."""
    job = cluster_faults.FAULTY
    result = cluster_faults.fault_run(framework, kind, hosts, tmp_path, job, reference=references(framework, job))
    o = result.outcome
    assert o.fault_at is not None, "worker 0 never reached the middle of epoch 2"
    codes = [(e.command.name, e.code) for e in o.workers()]
    assert all(e.code != 0 for e in o.workers()), codes
    assert o.said_at is not None and o.said_at < job.timeout + cluster.GRACE + cluster.DETECTION_MARGIN
    if framework != "torch":  # torchrun's agent cut off from its store hangs (docs/two_hosts.md): it is ended
        assert all(e.code is not None for e in o.workers()), codes
        assert o.last_worker_at < job.timeout + cluster.GRACE + cluster.DETECTION_MARGIN
    for name, line in result.errors.items():
        assert line.startswith("error:"), (name, line)
        assert "worker" in line and ("lost" in line or "peer" in line), (name, line)
        assert "epoch 1 of 2" in line and "--resume" in line, (name, line)
    assert result.resumed is not None
    assert [e.code for e in result.resumed.workers()] == [0, 0]
    assert all(r.agreement.passed for r in result.rows), [r.line() for r in result.rows]


@needs_namespaces
@pytest.mark.parametrize("kind", list(cluster_faults.FAULTS))
def test_mxnet_peer_lost_while_leaving_is_said(hosts, tmp_path, kind):
    """MXNet: the fault made after worker 0's last step, so every exchange of the run is
    done and only leaving the group (ps-lite's barrier, through the scheduler on host0)
    meets it. Each worker still ends within the bound, non-zero, with one line naming
    the group it lost; a barrier given up used to end a worker with status 1 and an empty
    log (the intermittent failure of the fault test, whose fault sometimes came this late)."""
    job = cluster_faults.FAULTY
    logs = tmp_path / "logs"
    logs.mkdir()
    steps = job.limit // job.batch_size
    late = cluster_faults.make_fault(
        kind, hosts, lambda: cluster_faults.after_last_step(logs, "mxnet", job.epochs, steps)
    )
    o = cluster.run("mxnet", hosts, job, tmp_path / "runs", logs, 900, fault=late)
    assert o.fault_at is not None, "worker 0 never reported the last step"
    report = [(e.command.name, e.code, e.at, e.lines()[-2:]) for e in o.workers()]
    assert all(e.code not in {0, None} for e in o.workers()), report
    assert o.said_at is not None and o.last_worker_at < job.timeout + cluster.GRACE + cluster.DETECTION_MARGIN, report
    for name, line in cluster_faults.error_lines(o.ended).items():
        assert line.startswith("error: worker ") and "lost the dist_sync group while leaving it" in line, (name, line)
        assert " of 2 " in line and " saved in " in line, (name, line)  # what the shared --out holds


def test_skips_without_root_say_why(monkeypatch):
    """Where the process is not root, the reason names it (the tests skip with it)."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert (netns.unavailable() or "").startswith(("not root", "no `ip`"))

"""Two hosts on one machine: two network namespaces joined by a veth pair, each with its
own address in a private /30 that exists only between them.

A process started in one namespace (``ip netns exec``) sees its loopback and the veth
end, nothing else: no route leads out of the pair, so whatever the engines send can
only reach the other namespace's address. Made by :func:`two_hosts` (a context manager
that always removes both namespaces, with every process still running in them: on
failure, on SIGTERM, SIGINT and SIGHUP too), used by ``tests/test_two_hosts.py`` and
``scripts/two_hosts.py``. Namespaces left by a process that was killed outright
(SIGKILL: nothing runs) are removed by the next :func:`two_hosts`, found by the owner's
process id in their name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

PREFIX = "cft"  # conformance two-hosts: namespaces and veth ends named PREFIX<pid><letter>
NETWORK = "10.213.0.{}"  # a /30 of 10/8, routed nowhere but between the two namespaces
PREFIX_LENGTH = 30
NETNS_ETC = Path("/etc/netns")  # ip netns exec: files here replace /etc's inside the namespace
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def unavailable() -> str | None:
    """Why two namespaces cannot be made here (a test's skip reason), or None."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2): cannot make network namespaces"
    if os.geteuid() != 0:
        return "not root: `ip netns add` needs CAP_SYS_ADMIN (CI runs as root)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode:
        return f"`ip netns` does not work here: {probe.stderr.strip() or probe.returncode}"
    return None


@dataclass(frozen=True)
class Host:
    namespace: str
    link: str  # this host's end of the veth pair
    address: str
    peer: str  # the other host's address
    hostname: str  # host0 or host1: its own hostname, and the name the other host knows it by

    def argv(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside this host's namespace, under this host's own hostname
        (a UTS namespace of its own: torchrun hands the workers rank 0's hostname as
        ``MASTER_ADDR``, so two hosts must not share one)."""
        named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname]
        return ["ip", "netns", "exec", self.namespace, *named, *command]

    def start(self, command: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
        """``command`` in this namespace, stdout and stderr to ``log``, in its own session
        (so the whole tree it starts can be signalled)."""
        with open(log, "wb") as out:
            return subprocess.Popen(
                self.argv(command),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ip(self, *args: str) -> None:
        """``ip ARGS`` inside this namespace (e.g. ``link set LINK down``)."""
        _ip("netns", "exec", self.namespace, "ip", *args)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _owner(namespace: str) -> int | None:
    digits = namespace.removeprefix(PREFIX)[:-1]
    return int(digits) if namespace.startswith(PREFIX) and digits.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _hosts_file(namespace: str, index: int, address: str, peer: str) -> None:
    """The namespace's /etc/hosts (``ip netns exec`` mounts /etc/netns/NAME/hosts over
    it): host0 and host1 are the two addresses, as a cluster's name service has them
    (torchrun decides by its hostname's address which host serves the rendezvous, and
    gloo binds to the address its hostname resolves to)."""
    names = {address: f"host{index}", peer: f"host{1 - index}"}
    text = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for a, n in sorted(names.items()))
    folder = NETNS_ETC / namespace
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts").write_text(text)


def remove(namespace: str) -> None:
    """End every process in ``namespace`` (SIGKILL: they belong to a run being torn down)
    and delete it; its veth end, and so the pair, goes with it. Never raises."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    for pid in pids.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for _ in range(50):  # a process being killed still holds the namespace for a moment
        gone = subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False).returncode == 0
        if gone or namespace not in _namespaces():
            break
        time.sleep(0.1)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


def remove_stale() -> list[str]:
    """Remove the namespaces of owners that no longer run (killed with SIGKILL)."""
    stale = [ns for ns in _namespaces() if (pid := _owner(ns)) is not None and pid != os.getpid() and not _alive(pid)]
    for ns in stale:
        remove(ns)
    return stale


class _Signalled(KeyboardInterrupt):
    """A signal ended the run: raised in the main thread so that the ``finally`` that
    removes the namespaces runs. A KeyboardInterrupt: no ``except Exception`` swallows
    it, and pytest, where a fixture holds the namespaces, ends the session on it (the
    fixture's teardown removing them) instead of failing one test and going on."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"{signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


@contextlib.contextmanager
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by a veth pair, addresses 10.213.0.1 and .2 (/30), loopback
    up in each; removed on the way out whatever happens. A signal in SIGNALS during the
    block removes them and is then re-raised with its default action (the process ends
    as the signal says)."""
    remove_stale()
    tag = f"{PREFIX}{os.getpid()}"
    names = (f"{tag}a", f"{tag}b")  # at most 15 characters: a veth end is named the same
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    caught: _Signalled | None = None
    try:
        for s in SIGNALS:
            signal.signal(s, _raise)
        for ns in names:
            _ip("netns", "add", ns)
        _ip("link", "add", names[0], "netns", names[0], "type", "veth", "peer", "name", names[1], "netns", names[1])
        hosts = []
        for i, ns in enumerate(names):
            address, peer = NETWORK.format(i + 1), NETWORK.format(2 - i)
            host = Host(ns, ns, address, peer, f"host{i}")
            _hosts_file(ns, i, address, peer)
            host.ip("addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", ns)
            host.ip("link", "set", ns, "up")
            host.ip("link", "set", "lo", "up")
            hosts.append(host)
        yield hosts[0], hosts[1]
    except _Signalled as e:
        caught = e
    finally:
        for ns in names:
            remove(ns)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught is not None:
        signal.signal(caught.signum, signal.SIG_DFL)
        os.kill(os.getpid(), caught.signum)


def wait_reachable(first: Host, second: Host, seconds: float = 10.0) -> float:
    """Until ``first`` opens a TCP connection to ``second`` (no ping here: a listener in
    ``second``'s namespace and a client in ``first``'s); the seconds it took."""
    began = time.monotonic()
    listen = (
        "import socket,sys; s=socket.create_server((sys.argv[1], 0)); print(s.getsockname()[1], flush=True); "
        "s.settimeout(float(sys.argv[2])); s.accept()"
    )
    server = subprocess.Popen(
        second.argv([sys.executable, "-c", listen, second.address, str(seconds)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        connect = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()"
        while time.monotonic() - began < seconds:
            probe = [sys.executable, "-c", connect, second.address, port]
            if subprocess.run(first.argv(probe), capture_output=True, check=False).returncode == 0:
                return time.monotonic() - began
            time.sleep(0.2)
    finally:
        server.kill()
        server.wait()
    raise OSError(f"{first.namespace} cannot reach {second.address} within {seconds:g} s")

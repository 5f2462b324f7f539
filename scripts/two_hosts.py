"""Two hosts on this machine (two network namespaces joined by a veth pair), for running
the README's cluster commands by hand, or the suite's two-host runs. Needs root and
iproute2 (``ip netns``); the namespaces are removed on the way out, on an error, Ctrl-C
or SIGTERM too (a run killed with SIGKILL leaves them: the next run removes them).

    python scripts/two_hosts.py shell                      # make them, say how to use them, wait for Ctrl-C
    python scripts/two_hosts.py parity torch               # the README's command on both hosts vs one process
    python scripts/two_hosts.py fault keras link-down      # a fault mid-epoch, then --resume
    python scripts/two_hosts.py fault mxnet blackhole --keep /tmp/two-hosts

See docs/two_hosts.md for what each run does and the figures measured here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import cluster, cluster_faults, netns


def _shell(args: argparse.Namespace) -> int:
    with netns.two_hosts() as hosts:
        for h in hosts:
            print(f"{h.hostname}: {h.address} (namespace {h.namespace}, link {h.link})")
        print(f"run a command on a host: ip netns exec {hosts[0].namespace} COMMAND")
        print(f"take the link down:      ip netns exec {hosts[0].namespace} ip link set {hosts[0].link} down")
        print("Ctrl-C removes both namespaces", flush=True)
        while True:
            time.sleep(3600)


def _print_outcome(title: str, outcome: cluster.Outcome) -> None:
    print(f"{title}: {outcome.seconds:.1f} s")
    for e in outcome.ended:
        status = "still running (killed)" if e.code is None else f"exit {e.code}"
        if e.at is not None:
            status += f" {e.at:.1f} s after the fault"
        print(f"  {e.command.name}: {status}; log {e.log}")


def _parity(args: argparse.Namespace, tmp: Path) -> int:
    with netns.two_hosts() as hosts:
        result = cluster.parity_run(args.framework, hosts, tmp)
    _print_outcome(f"{args.framework} on two hosts", result.outcome)
    print(f"  one process: exit {result.reference_code}")
    for row in result.rows:
        print(f"  {row.line()}")
    print("PASS" if result.passed else "FAIL")
    return 0 if result.passed else 1


def _fault(args: argparse.Namespace, tmp: Path) -> int:
    with netns.two_hosts() as hosts:
        result = cluster_faults.fault_run(args.framework, args.kind, hosts, tmp)
    o = result.outcome
    _print_outcome(f"{args.framework}, {cluster_faults.FAULTS[args.kind]}", o)
    if o.fault_at is None:
        print("  the fault was never made: worker 0 did not reach the middle of epoch 2")
        return 1
    said = "never" if o.said_at is None else f"{o.said_at:.1f} s after it"
    print(f"  fault at {o.fault_at:.1f} s; the last host's error line {said}; the last worker ended")
    print(f"  {o.last_worker_at:.1f} s after it (status None: still running, ended by this script)")
    for name, line in result.errors.items():
        print(f"  {name}: {line or '(no error line)'}")
    if result.resumed is not None:
        _print_outcome("--resume after healing", result.resumed)
    for row in result.rows:
        print(f"  resumed vs one process: {row.line()}")
    ok = bool(result.rows) and all(r.agreement.passed for r in result.rows)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("shell", help="make the two hosts and wait for Ctrl-C")
    parity = sub.add_parser("parity", help="the README's cluster command on both hosts against one process")
    parity.add_argument("framework", choices=cluster.FRAMEWORKS)
    fault = sub.add_parser("fault", help="a network fault in the middle of epoch 2, then --resume")
    fault.add_argument("framework", choices=cluster.FRAMEWORKS)
    fault.add_argument("kind", choices=list(cluster_faults.FAULTS))
    for p in (parity, fault):
        p.add_argument("--keep", type=Path, metavar="DIR", help="a new directory to keep the logs and outputs in")
    args = parser.parse_args(argv)
    why = netns.unavailable()
    if why is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if args.command == "shell":
        return _shell(args)
    keep: Path | None = args.keep
    if keep is not None and keep.exists():
        print(f"error: --keep {keep}: already exists; pass a new directory", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="two-hosts-"))
    try:
        return (_parity if args.command == "parity" else _fault)(args, tmp)
    finally:
        if keep is not None:
            shutil.move(str(tmp), keep)
            print(f"logs and outputs in {keep}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

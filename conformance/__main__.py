"""``python -m conformance check``, ``port``, ``init``, ``train``, ``bench``, ``spec``,
``pitfalls``, ``diff``, ``page`` and ``verify``: dispatch only. Each command's parser
and run function live beside the code it drives (``check/command.py``, ...).

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or input (an OS error
on a file included: the path and the reason, never a traceback), 3 a peer of a
data-parallel run was lost, 128 + N when signal N (SIGINT 130, SIGTERM 143) ended the
work: one line, temporary files removed. Every option is checked before a framework is
imported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys

from . import arguments, files, interrupts
from .bench import command as bench_command
from .check import command as check_command
from .formats import command as formats_command
from .formats.base import PortError
from .spec import command as spec_command
from .teach import command as teach_command
from .train import command as train_command
from .verify import command as verify_command
from .world import WorldError


def _version() -> str:
    try:
        return f"googlenet-conformance {importlib.metadata.version('googlenet-conformance')}"
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "googlenet-conformance (not installed)"


def _parser() -> tuple[arguments.Parser, dict[str, arguments.Parser]]:
    """The parser, and each command's own (which reports that command's usage)."""
    parser = arguments.Parser(
        prog="python -m conformance", description="GoogLeNet across PyTorch, Keras 3 and MXNet Gluon."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check_command.add_parser(sub)
    formats_command.add_parsers(sub)
    train_command.add_parser(sub)
    bench_command.add_parser(sub)
    spec_command.add_parser(sub)
    teach_command.add_parsers(sub)
    verify_command.add_parser(sub)
    return parser, sub.choices


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The options; an unknown one is reported by its command's parser."""
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        with files.signals():
            return args.run(args)
    except interrupts.Interrupted as e:
        print(f"interrupted by {e.name}: {e.detail or 'nothing was written'}", file=sys.stderr, flush=True)
        return e.exit_code
    except WorldError as e:  # a peer that cannot be reached or is gone (under torchrun or a cluster's launcher)
        print(f"error: {e}" + (f"; {e.detail}" if e.detail else ""), file=sys.stderr, flush=True)
        return 3
    except PortError as e:  # its command-line spelling: --force, not force=True
        print(f"error: {e.cli}", file=sys.stderr)
        return 2
    except ValueError as e:  # SpecError, OutputError, DataError, CanonicalError: bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the OS refused: its path and the reason
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{files.describe_os_error(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``python -m conformance bench``: its options (checked before any framework is
imported), then the measurement in child processes (:mod:`.run`, :mod:`.scaling`).
Exit codes as everywhere: 0 measured, 1 a runtime failed, 2 bad usage or input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import arguments, files, limits, spec
from ..files import check_output
from ..frameworks import FRAMEWORKS
from ..interface import MODE_SETS
from ..progress import Steps
from ..world import World
from . import markdown, report
from .run import run as measure
from .scaling import scaling
from .settings import Settings, check_settings


def _worker_counts(text: str) -> list[int]:
    """``1,2``: positive worker counts, in the order given, without repeats."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2; got {text!r}")
    return list(dict.fromkeys(counts))


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``bench`` subcommand on ``sub``."""
    names = ",".join(FRAMEWORKS)
    cmd = arguments.command(
        sub,
        "bench",
        "images/s of every framework and mode, and of ONNX Runtime, side by side, each in its own process",
        "Measure inference (and with --train, training) images per second of every framework in "
        "each of its modes and of ONNX Runtime, each in its own process, in alternating timed "
        "rounds so that no runtime is favoured by the machine's state; --workers adds "
        "data-parallel scaling.",
        [
            ("inference of torchvision's GoogLeNet in every runtime", "--json bench.json"),
            (
                "training of d2l's GoogLeNet on one and two workers",
                "--train --variant googlenet_d2l --input-size 96 --workers 1,2",
            ),
        ],
    )
    arguments.variant(cmd, "the network")
    cmd.add_argument("--batch", type=arguments.positive, default=8, help="images per call (default: 8)")
    cmd.add_argument(
        "--input-size", type=arguments.positive, default=224, metavar="PIXELS", help="square input size (default: 224)"
    )
    cmd.add_argument(
        *arguments.FRAMEWORK_FLAGS,
        dest="frameworks",
        default=f"{names},onnx",
        metavar="LIST",
        help=f"comma-separated subset of {names},onnx (default: all; onnx: ONNX Runtime on torch's export)",
    )
    cmd.add_argument("--train", action="store_true", help="also training images/s (one SGD step per call)")
    cmd.add_argument(
        "--workers",
        type=_worker_counts,
        metavar="LIST",
        help="with --train: data-parallel training images/s and scaling efficiency with each number of local "
        "workers, e.g. 1,2 (each framework's own engine; --batch is the global batch)",
    )
    cmd.add_argument(
        "--rounds", type=arguments.positive, default=5, help="timed rounds, alternating the runtimes (default: 5)"
    )
    cmd.add_argument(
        "--modes",
        choices=MODE_SETS,
        default="all",
        help="all: every mode, the compiled extras too (torch compile, keras xla, mxnet onednn: their first call "
        "compiles for up to minutes, shown as such); default: each framework's default and eager (default: all)",
    )
    cmd.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    cmd.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    cmd.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the Markdown tables of a file --json wrote (the docs' benchmark tables)",
    )
    cmd.set_defaults(run=run)
    return cmd


def run(args: argparse.Namespace) -> int:
    if args.markdown is not None:
        print(markdown.render(markdown.read(args.markdown)), end="", flush=True)
        return 0
    if args.json is not None:  # refuse before a minute of measuring
        check_output(args.json, args.force, "--json")
    names = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    settings = Settings(
        args.variant,
        args.batch,
        args.input_size,
        tuple(dict.fromkeys(names)),
        args.train,
        args.rounds,
        modes=args.modes,
    )
    check_settings(settings)  # before any framework is imported
    limits.check_work(limits.Work(spec.resolve(args.variant), args.input_size, args.batch, training=args.train))
    if args.workers:
        if not args.train:
            raise ValueError("--workers: measures training; pass --train too")
        limits.check_workers(max(args.workers))
        if args.batch < max(args.workers):
            World(max(args.workers)).check_batch(args.batch, "--batch")
        with Steps("bench") as progress:
            rows = scaling(settings, args.workers, progress=progress)
        print(report.render_scaling(settings, rows), flush=True)
        if args.json is not None:
            doc = report.scaling_json(settings, rows)
            files.atomic_write(args.json, json.dumps(doc, indent=1).encode(), overwrite=args.force)
            print(f"JSON written to {args.json}")
        return 1 if any(r.failed for r in rows) else 0
    try:
        with Steps("bench") as progress:
            result = measure(settings, progress)
    except RuntimeError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print(report.render(result), flush=True)
    if args.json is not None:
        report.write_json(result, args.json, overwrite=args.force)
        print(f"JSON written to {args.json}")
    return 0

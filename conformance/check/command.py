"""``python -m conformance check``: its options (checked before any framework is
imported), then one call into :mod:`.harness` or :mod:`.distributed`.
Exit codes as everywhere: 0 every check passed, 1 a check failed, 2 bad usage or input."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from .. import arguments, files, frameworks, limits, spec
from ..files import check_output
from ..frameworks import FRAMEWORKS
from ..interface import MODE_SETS
from ..progress import Steps
from . import judges
from .judges import JUDGES


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``check`` subcommand on ``sub``."""
    names = ",".join(frameworks.every_builtin())
    cmd = arguments.command(
        sub,
        "check",
        "prove that the frameworks agree, stage by stage",
        "Build each variant in every framework from one set of seeded weights, run the same "
        "inputs, and compare every stage's output with the reference (PyTorch), by absolute and "
        "relative error and top-1/top-5 agreement; --train also compares one training step, "
        "--distributed each framework's data-parallel engine against one process.",
        [
            (
                "one variant in two frameworks at a small size",
                "--variant googlenet --frameworks torch,keras --input-size 97",
            ),
            ("every variant, a training step too, and a JSON report", "--train --json report.json"),
        ],
    )
    cmd.add_argument(
        "--variant", action="append", choices=list(spec.VARIANTS), help="variant to check (repeatable; default: all)"
    )
    cmd.add_argument(
        *arguments.FRAMEWORK_FLAGS,
        dest="frameworks",
        default=",".join(FRAMEWORKS),
        metavar="LIST",
        help=f"comma-separated subset of {names}, and judges {','.join(JUDGES)} (ONNX Runtime on each "
        f"framework's ONNX export; needs .[onnx]) (default: {','.join(FRAMEWORKS)}; the others by name)",
    )
    cmd.add_argument(
        "--in-process",
        action="store_true",
        help="run every framework in this one process, one after another (for a debugger; keras-jax and "
        "keras-torch need a process of their own and are skipped) (default: a child process per framework)",
    )
    cmd.add_argument(
        "--require",
        metavar="LIST",
        default="",
        help="comma-separated frameworks that must be installed: exit 2 before checking if one is not (CI)",
    )
    cmd.add_argument(
        "--input-size",
        action="append",
        type=arguments.positive,
        metavar="PIXELS",
        help="square input size (repeatable; default: each variant's own and its odd sizes, 239 and 97 for most)",
    )
    cmd.add_argument("--batch", type=arguments.positive, default=2, help="images per input (default: 2)")
    cmd.add_argument("--seed", type=arguments.non_negative, default=0, help="seed of weights and inputs (default: 0)")
    cmd.add_argument(
        "--train",
        action="store_true",
        help="also check one training step: loss, gradients, SGD updates, BatchNorm statistics",
    )
    cmd.add_argument(
        "--distributed",
        action="store_true",
        help="check data-parallel training in each framework's own engine: N workers x 2 images == one process "
        "with 2N (no BatchNorm), each replica's BatchNorm statistics by the engine's rule (alone, or after "
        "--train's check)",
    )
    cmd.add_argument(
        "--workers", type=arguments.positive, default=2, metavar="N", help="workers of --distributed (default: 2)"
    )
    cmd.add_argument(
        "--modes",
        choices=MODE_SETS,
        default="default",
        help="which of each framework's inference modes to compare with its eager run: default, the mode a "
        "first call runs; all, the compiled extras too (torch compile, keras xla, mxnet onednn: minutes of "
        "compiling) (default: default)",
    )
    cmd.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON")
    cmd.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    cmd.add_argument(
        "--wide",
        action="store_true",
        help="every compared run in one table, however wide (default: fit the terminal, or 100 columns)",
    )
    cmd.set_defaults(run=run)
    return cmd


def run(args: argparse.Namespace) -> int:
    from . import inputs, processes

    if args.json is not None:  # refuse before spending a minute on the check
        check_output(args.json, args.force, "--json")
    names = frameworks.parse(args.frameworks, extra=judges.JUDGES)
    required = frameworks.parse(args.require, "--require") if args.require else []
    variants = list(dict.fromkeys(args.variant or spec.VARIANTS))
    sizes = list(dict.fromkeys(args.input_size)) if args.input_size else None  # None: each variant's own
    if sizes:
        inputs.check_input_sizes(variants, sizes)
    inputs.check_work(variants, sizes, args.batch, args.train)
    if args.distributed:
        limits.check_workers(args.workers)
    wanted = list(dict.fromkeys([*names, *required]))
    # --distributed starts each engine's own workers from in-process backends.
    with (
        contextlib.nullcontext(judges.load_with_judges(wanted))
        if args.in_process or args.distributed
        else processes.children(wanted)
    ) as (backends, skipped):
        missing = [fw for fw in required if fw not in backends]
        if missing:
            raise ValueError(f"--require: {missing[0]} is {skipped[missing[0]]}")
        backends = {fw: b for fw, b in backends.items() if fw in names}
        skipped = {fw: why for fw, why in skipped.items() if fw in names}
        return _check(args, variants, sizes, backends, skipped)


def _check(args: argparse.Namespace, variants, sizes, backends, skipped) -> int:
    from . import harness, report

    if args.distributed and not args.train:
        return _check_distributed(args, backends, args.variant, sizes)
    with Steps("check") as progress:
        result = harness.run(
            variants,
            backends,
            skipped,
            sizes,
            args.batch,
            args.seed,
            train=args.train,
            progress=progress,
            modes=args.modes,
        )
    print(report.render(result, report.columns(args.wide)), flush=True)
    if args.json is not None and not args.distributed:
        report.write_json(result, args.json, overwrite=args.force)
        print(f"JSON report written to {args.json}")
    if args.distributed:
        return max(0 if result.passed else 1, _check_distributed(args, backends, args.variant, sizes, result))
    return 0 if result.passed else 1


def _check_distributed(args: argparse.Namespace, backends, variants, sizes, result=None) -> int:
    """``check --distributed``: the data-parallel parity of each framework's engine."""
    from . import distributed, report

    variants = variants or [*distributed.VARIANTS, *distributed.BATCHNORM_VARIANTS]
    fixed = {v: sizes[0] for v in variants} if sizes else None
    print(f"data-parallel training, {args.workers} workers (each framework's own engine):", flush=True)
    print(distributed.rules([fw for fw in backends if fw in FRAMEWORKS]), flush=True)
    with Steps("check") as progress:
        cases = distributed.run(backends, variants, fixed, args.workers, args.seed, progress)
    print(distributed.render(cases), flush=True)
    passed = all(c.passed for c in cases)
    print(f"distributed: {'PASS' if passed else 'FAIL'} ({sum(c.passed for c in cases)}/{len(cases)} cases)")
    if args.json is not None:
        doc = {"distributed": distributed.as_json(cases), "passed": passed}
        if result is not None:
            doc = {**report.to_json(result), **doc, "passed": passed and result.passed}
        files.atomic_write(args.json, json.dumps(doc, indent=1).encode(), overwrite=args.force)
        print(f"JSON report written to {args.json}")
    return 0 if passed else 1

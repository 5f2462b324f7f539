"""``python -m conformance spec``: a variant's stages, layers, parameters and
multiply-adds, from the spec alone (no framework is imported).
Exit codes as everywhere: 0 printed, 2 bad usage or input.

It sits in the command layer, above :mod:`conformance.limits`, which bounds the size."""

from __future__ import annotations

import argparse
from typing import Any

from .. import arguments, limits, spec


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``spec`` subcommand on ``sub``."""
    cmd = arguments.command(
        sub,
        "spec",
        "print a variant's layers, shapes, parameters and multiply-adds",
        "Print a variant's stage output shapes at an input size, then each layer's parameters, "
        "BatchNorm statistics and multiply-adds, from the spec alone: what every framework's "
        "model of the variant must match.",
        [
            ("torchvision's GoogLeNet at an odd size, with its aux heads", "--input-size 225 --aux-logits"),
            ("the residual net of Liu's lecture", "--variant residual_mnist"),
        ],
    )
    arguments.variant(cmd, "the variant")
    cmd.add_argument(
        "--input-size",
        type=arguments.positive,
        default=None,
        metavar="PIXELS",
        help="square input (default: the variant's)",
    )
    cmd.add_argument("--num-classes", type=arguments.classes, default=None, help="classes (default: the variant's)")
    cmd.add_argument("--aux-logits", action="store_true", help="include the aux heads")
    cmd.set_defaults(run=run)
    return cmd


def run(args: argparse.Namespace) -> int:
    p = spec.resolve(args.variant, args.num_classes, args.aux_logits)
    v = p.variant
    size = args.input_size or p.input_size
    limits.check_size(p, size)
    shapes = spec.expected_shapes(p, size)
    print(f"{v.name}: {v.description}")
    print(f"input {p.in_channels} x {size} x {size}, {p.num_classes} classes, aux_logits={p.options.aux_logits}")
    print(f"\n{'stage':<14} {'output (C x H x W)':<20}")
    for name, shape in shapes.items():
        print(f"{name:<14} {' x '.join(map(str, shape[1:])):<20}")
    rows = spec.layer_counts(p, size)
    print(f"\n{'layer':<26} {'params':>11} {'BN stats':>9} {'mult-adds':>15}")
    for r in rows:
        print(f"{r.name:<26} {r.params:>11,} {r.stats:>9,} {r.macs:>15,}")
    trainable, stats = spec.count_params(p)
    print(f"{'total':<26} {trainable:>11,} {stats:>9,} {sum(r.macs for r in rows):>15,}")
    return 0

"""``python -m conformance port`` and ``init``: their options (checked before any
framework is imported), then one call into :mod:`.port`.
Exit codes as everywhere: 0 the written file verified, 1 it did not, 2 bad usage or input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import arguments, spec
from ..progress import Steps
from .registry import FORMATS

# --to offers what can be written; --from everything that can be read.
WRITABLE = [name for name, entry in FORMATS.items() if entry.writable]


def add_parsers(sub: Any) -> None:
    """The ``port`` and ``init`` subcommands on ``sub``."""
    readable = ", ".join(FORMATS)
    port = arguments.command(
        sub,
        "port",
        "convert a checkpoint to another framework's format, verified",
        "Read a checkpoint in one format, write it in another, then load the written file as "
        "its framework's users load it and verify that every tensor and the outputs agree with "
        "the source. The format of each file is inferred from its name unless --from/--to say it."
        f"\n\nReads: {readable}.\n\nWrites: {', '.join(WRITABLE)}.",
        [
            (
                "torchvision's weights to a Keras weights file",
                "googlenet.pth googlenet.weights.h5 --variant googlenet_bn",
            ),
            (
                "TF-slim's checkpoint (by its prefix) to a PyTorch state_dict, without the background class",
                "model.ckpt slim.pth --variant googlenet_slim --drop-background",
            ),
        ],
    )
    port.add_argument(
        "src", type=Path, metavar="SRC", help="checkpoint to read (a TensorFlow checkpoint by its prefix: model.ckpt)"
    )
    port.add_argument("dst", type=Path, metavar="DST", help="file to write (never overwritten without --force)")
    port.add_argument(
        "--variant",
        default=None,
        choices=list(spec.VARIANTS),
        help="the network the checkpoint holds (default: the one its tensors fit, when only one does)",
    )
    port.add_argument("--from", dest="src_format", choices=list(FORMATS), help="format of SRC (default: from its name)")
    port.add_argument(
        "--to",
        dest="dst_format",
        choices=WRITABLE,
        help="format of DST, one that can be written (default: from its name)",
    )
    port.add_argument(
        "--num-classes", type=arguments.classes, default=None, help="classes of the checkpoint (default: the variant's)"
    )
    port.add_argument("--transform-input", action="store_true", help=arguments.TRANSFORM_HELP)
    port.add_argument(
        "--drop-background",
        action="store_true",
        help="drop class 0 of a 1001-class classifier (TF-slim's background), leaving ImageNet's 1000",
    )
    port.add_argument("--force", action="store_true", help="overwrite DST")
    port.set_defaults(run=run_port)

    init = arguments.command(
        sub,
        "init",
        "write a first checkpoint: the suite's seeded weights of a variant, in any format port writes",
        "Write the suite's seeded weights of a variant (the ones check uses) in any format port "
        "writes, verified as port verifies: a first checkpoint to train from or to port.",
        [
            ("a PyTorch state_dict of torchvision's GoogLeNet", "googlenet.pth --variant googlenet_bn"),
            ("d2l's GoogLeNet as numpy arrays, another seed", "d2l.npz --variant googlenet_d2l --seed 1"),
        ],
    )
    init.add_argument("dst", type=Path, metavar="DST", help="file to write (never overwritten without --force)")
    init.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network")
    init.add_argument(
        "--to",
        dest="dst_format",
        choices=WRITABLE,
        help="format of DST, one that can be written (default: from its name)",
    )
    init.add_argument(
        "--num-classes", type=arguments.classes, default=None, help="classes of the classifier (default: the variant's)"
    )
    init.add_argument(
        "--seed", type=arguments.non_negative, default=0, help="seed of the weights (default: 0, as check's)"
    )
    init.add_argument(
        "--no-aux-logits", action="store_true", help="leave out the aux heads (default: the variant's, if it has them)"
    )
    init.add_argument("--transform-input", action="store_true", help=arguments.TRANSFORM_HELP)
    init.add_argument("--force", action="store_true", help="overwrite DST")
    init.set_defaults(run=run_init)


def run_port(args: argparse.Namespace) -> int:
    from .port import VerificationError, port

    try:
        with Steps("port") as progress:
            port(
                args.src,
                args.dst,
                args.variant,
                args.src_format,
                args.dst_format,
                args.num_classes,
                args.transform_input,
                args.force,
                log=lambda line: print(line, flush=True),
                drop_background=args.drop_background,
                progress=progress,
            )
    except VerificationError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


def run_init(args: argparse.Namespace) -> int:
    from .port import VerificationError, init

    try:
        with Steps("init") as progress:
            init(
                args.dst,
                args.variant,
                args.dst_format,
                args.num_classes,
                args.seed,
                False if args.no_aux_logits else None,
                args.transform_input,
                args.force,
                log=lambda line: print(line, flush=True),
                progress=progress,
            )
    except VerificationError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0

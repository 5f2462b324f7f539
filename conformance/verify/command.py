"""``python -m conformance verify MODEL``: its options (checked before any framework is
imported or the user's code is), then one call into :mod:`.verifying`.
Exit codes as everywhere: 0 every compared output agrees, 1 one does not, 2 bad usage
or input (a model whose tensors do not fit the variant included)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import arguments, frameworks, spec
from ..files import check_output
from ..formats import tfcheckpoint
from ..formats.registry import infer
from ..progress import Steps
from . import convention, load
from .options import check_options


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``verify`` subcommand on ``sub``."""
    cmd = arguments.command(
        sub,
        "verify",
        "check your own GoogLeNet against the suite's reference, stage by stage, and name the mistake",
        "Run your PyTorch, Keras or Gluon model (a module:callable, imported only now, or a saved "
        "file) and the suite's reference "
        "of the variant its tensors fit on the same seeded inputs, compare every stage, and when "
        "one differs replay the pitfall catalogue with your weights to name the likely mistake.",
        [
            (
                "d2l's GoogLeNet with a softmax left at its end: verify names the mistake",
                "tests/user_nets.py:d2l_softmax --input-size 96",
            ),
            (
                "d2l's GoogLeNet as d2l writes it (it agrees), the result as JSON too",
                "tests/user_nets.py:d2l --input-size 96 --json verify.json",
            ),
        ],
    )
    cmd.add_argument(
        "model",
        metavar="MODEL",
        help="module:callable or path/to/file.py:callable returning a torch.nn.Module, a keras.Model or "
        "a Gluon Block (imported only now); or an ONNX, .keras, TorchScript (.pt, .ts) or .pt2 file, "
        "a SavedModel directory, or a Gluon NAME-symbol.json beside its NAME-0000.params",
    )
    cmd.add_argument(
        "--variant",
        default="auto",
        choices=["auto", *spec.VARIANTS],
        help="the variant your model is (default: auto, the one whose tensors fit)",
    )
    cmd.add_argument("--weights", type=Path, metavar="CKPT", help="load this checkpoint (any format port reads) first")
    cmd.add_argument(
        "--input-size",
        action="append",
        type=arguments.positive,
        metavar="PIXELS",
        help="square input size (repeatable; default: the variant's own and an odd size it admits)",
    )
    cmd.add_argument("--batch", type=arguments.positive, default=2, help="images per input (default: 2)")
    cmd.add_argument("--seed", type=arguments.non_negative, default=0, help="seed of the inputs (default: 0)")
    cmd.add_argument(
        "--transform-input",
        action="store_true",
        help="your model applies the variant's input transform (default: its own transform_input flag)",
    )
    cmd.add_argument(
        "--bgr", action="store_true", help="your model takes its channels in BGR order (default: the variant's, RGB)"
    )
    cmd.add_argument(
        "--input-scale",
        metavar="S",
        help="your model takes pixels in 0-S (255 for 8-bit pixels; default: the variant's, 0-1)",
    )
    cmd.add_argument(
        "--input-mean",
        metavar="M[,M,M]",
        help="subtracted from your model's scaled pixels, per channel in your model's order (default: the variant's)",
    )
    cmd.add_argument(
        "--input-std",
        metavar="S[,S,S]",
        help="divides your model's scaled pixels less the mean, per channel (default: the variant's)",
    )
    cmd.add_argument("--no-diagnosis", action="store_true", help="do not replay the pitfall catalogue on a difference")
    cmd.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON")
    cmd.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    cmd.set_defaults(run=run)
    return cmd


def run(args: argparse.Namespace) -> int:
    sizes = list(dict.fromkeys(args.input_size)) if args.input_size else None
    check_options(args.variant, sizes, args.batch, args.seed)
    scale, mean, std = _numbers("--input-scale", args.input_scale), None, None
    if args.input_mean is not None:
        mean = _numbers("--input-mean", args.input_mean)
    if args.input_std is not None:
        std = _numbers("--input-std", args.input_std)
    if scale is not None and len(scale) != 1:
        raise ValueError(f"--input-scale: expected one number, got {args.input_scale!r}")
    input_scale = scale[0] if scale is not None else None
    convention.check(args.bgr, input_scale, mean, std)
    if args.json is not None:
        check_output(args.json, args.force, "--json")
    if args.weights is not None:
        if tfcheckpoint.prefix(args.weights) is None and not args.weights.is_file():
            raise ValueError(f"--weights {args.weights}: no such file")
        infer(args.weights, None, "--weights")  # a name no format has: said now, not after loading the model
    source = load.parse(args.model)
    _, skipped = frameworks.load(["torch"])  # the reference, and the hooks on the user's model
    if "torch" in skipped:
        raise ValueError(f"verify runs PyTorch models, and torch is {skipped['torch']}")
    from . import report, verifying

    with Steps("verify") as progress:
        progress(f"loading {args.model}", logged=False)  # a refusal of it stays one line in a log
        with frameworks.quiet_stderr():  # TensorFlow's start-up notices, where the user's code imports it
            model = load.load(source)
        result = verifying.verify(
            model,
            args.variant,
            args.weights,
            sizes,
            args.batch,
            args.seed,
            True if args.transform_input else None,
            run_diagnosis=not args.no_diagnosis,
            progress=progress,
            bgr=args.bgr,
            input_scale=input_scale,
            input_mean=mean,
            input_std=std,
        )
    print(report.render(result, args.model), flush=True)
    if args.json is not None:
        report.write_json(result, args.json, overwrite=args.force)
        print(f"JSON written to {args.json}")
    return 0 if result.agree else 1


def _numbers(option: str, text: str | None) -> list[float] | None:
    """An option's comma-separated numbers; ValueError naming the option."""
    if text is None:
        return None
    try:
        return convention.parse_numbers(text)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None

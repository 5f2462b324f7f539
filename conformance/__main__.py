"""``python -m conformance check``, ``port``, ``train``, ``bench``, ``spec``, ``pitfalls``, ``diff`` and ``page``.

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or input (an OS error
on a file included: the path and the reason, never a traceback), 128 + N when signal N
(SIGINT 130, SIGTERM 143) ended the work: one line, temporary files removed. Every
option is checked before a framework is imported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from . import files, limits, spec
from .check.judges import JUDGES
from .files import check_output
from .formats.base import PortError
from .formats.registry import FORMATS
from .frameworks import FRAMEWORKS
from .progress import Steps
from .spec import MAX_CLASSES
from .teach.pitfalls import PITFALLS
from .train.training import MAX_EPOCHS, Settings
from .verify import command as verify_command
from .world import World, WorldError

MAX_TIMEOUT = 86400.0  # seconds: the longest wait --timeout accepts (a bound on what a user declares)


def _typed(convert: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: ``convert``, then ``ok``; otherwise say what was expected."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive = _typed(int, lambda v: v >= 1, "a positive integer")
_non_negative = _typed(int, lambda v: v >= 0, "a non-negative integer")
# d2l trains GoogLeNet at lr 0.1, Liu's lecture at 0.01: a thousand times d2l's is no
# schedule's step; inf and nan are no step at all.
MAX_LR = 100.0
_learning_rate = _typed(
    float, lambda v: math.isfinite(v) and 0 < v <= MAX_LR, f"a finite number above 0, at most {MAX_LR:g}"
)
_fraction = _typed(float, lambda v: math.isfinite(v) and 0 <= v < 1, "a number from 0 to 1 (exclusive)")
_classes = _typed(int, lambda v: 1 <= v <= MAX_CLASSES, f"an integer from 1 to {MAX_CLASSES:,}")
_timeout = _typed(float, lambda v: 0 < v <= MAX_TIMEOUT, f"a number of seconds above 0, at most {MAX_TIMEOUT:g}")
_epochs = _typed(int, lambda v: 1 <= v <= MAX_EPOCHS, f"an integer from 1 to {MAX_EPOCHS:,}")


def _worker_counts(text: str) -> list[int]:
    """``1,2``: positive worker counts, in the order given, without repeats."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,2; got {text!r}")
    return list(dict.fromkeys(counts))


_tcp_port = _typed(int, lambda v: 0 <= v <= 65535, "a TCP port from 0 (a free one) to 65535")


TRANSFORM_HELP = "the variant's input transform: torchvision's (googlenet_bn), Caffe's BGR 0-255 (googlenet_lrn)"


def _version() -> str:
    try:
        return f"googlenet-conformance {importlib.metadata.version('googlenet-conformance')}"
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "googlenet-conformance (not installed)"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own (which reports that command's usage)."""
    parser = argparse.ArgumentParser(
        prog="python -m conformance", description="GoogLeNet across PyTorch, Keras 3 and MXNet Gluon."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    frameworks = ",".join(FRAMEWORKS)

    check = sub.add_parser("check", help="prove that the frameworks agree, stage by stage")
    check.add_argument(
        "--variant", action="append", choices=list(spec.VARIANTS), help="variant to check (repeatable; default: all)"
    )
    check.add_argument(
        "--frameworks",
        "--framework",
        default=frameworks,
        metavar="LIST",
        help=f"comma-separated subset of {frameworks}, and judges {','.join(JUDGES)} (ONNX Runtime on each "
        "framework's ONNX export; needs .[onnx]) (default: the frameworks installed)",
    )
    check.add_argument(
        "--require",
        metavar="LIST",
        default="",
        help="comma-separated frameworks that must be installed: exit 2 before checking if one is not (CI)",
    )
    check.add_argument(
        "--input-size",
        action="append",
        type=_positive,
        metavar="PIXELS",
        help="square input size (repeatable; default: each variant's own, 239 and 97)",
    )
    check.add_argument("--batch", type=_positive, default=2, help="images per input (default: 2)")
    check.add_argument("--seed", type=_non_negative, default=0, help="seed of weights and inputs (default: 0)")
    check.add_argument(
        "--train",
        action="store_true",
        help="also check one training step: loss, gradients, SGD updates, BatchNorm statistics",
    )
    check.add_argument(
        "--distributed",
        action="store_true",
        help="check data-parallel training in each framework's own engine: N workers x 2 images == one process "
        "with 2N (no BatchNorm), each replica's BatchNorm statistics by the engine's rule (alone, or after "
        "--train's check)",
    )
    check.add_argument(
        "--workers", type=_positive, default=2, metavar="N", help="workers of --distributed (default: 2)"
    )
    check.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON")
    check.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    check.add_argument(
        "--wide",
        action="store_true",
        help="every compared run in one table, however wide (default: fit the terminal, or 100 columns)",
    )

    port = sub.add_parser("port", help="convert a checkpoint to another framework's format, verified")
    port.add_argument(
        "src", type=Path, metavar="SRC", help="checkpoint to read (a TensorFlow checkpoint by its prefix: model.ckpt)"
    )
    port.add_argument("dst", type=Path, metavar="DST", help="file to write (never overwritten without --force)")
    port.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network the checkpoint holds")
    port.add_argument("--from", dest="src_format", choices=list(FORMATS), help="format of SRC (default: from its name)")
    port.add_argument("--to", dest="dst_format", choices=list(FORMATS), help="format of DST (default: from its name)")
    port.add_argument(
        "--num-classes", type=_classes, default=None, help="classes of the checkpoint (default: the variant's)"
    )
    port.add_argument("--transform-input", action="store_true", help=TRANSFORM_HELP)
    port.add_argument(
        "--drop-background",
        action="store_true",
        help="drop class 0 of a 1001-class classifier (TF-slim's background), leaving ImageNet's 1000",
    )
    port.add_argument("--force", action="store_true", help="overwrite DST")

    init = sub.add_parser(
        "init", help="write a first checkpoint: the suite's seeded weights of a variant, in any format port writes"
    )
    init.add_argument("dst", type=Path, metavar="DST", help="file to write (never overwritten without --force)")
    init.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network")
    init.add_argument("--to", dest="dst_format", choices=list(FORMATS), help="format of DST (default: from its name)")
    init.add_argument(
        "--num-classes", type=_classes, default=None, help="classes of the classifier (default: the variant's)"
    )
    init.add_argument("--seed", type=_non_negative, default=0, help="seed of the weights (default: 0, as check's)")
    init.add_argument(
        "--no-aux-logits", action="store_true", help="leave out the aux heads (default: the variant's, if it has them)"
    )
    init.add_argument("--transform-input", action="store_true", help=TRANSFORM_HELP)
    init.add_argument("--force", action="store_true", help="overwrite DST")

    train = sub.add_parser("train", help="train a variant in one framework (SGD, as d2l and Liu train), with a plot")
    train.add_argument(
        "--framework", "--frameworks", required=True, choices=list(FRAMEWORKS), help="the framework to train in"
    )
    train.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network to train")
    train.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="MNIST or Fashion-MNIST IDX files, gzipped or not (default: a generated data set)",
    )
    train.add_argument(
        "--num-classes", type=_classes, default=None, help="classes of the classifier (default: the variant's)"
    )
    train.add_argument("--epochs", type=_epochs, default=10, help=f"default: 10 (at most {MAX_EPOCHS:,})")
    train.add_argument("--batch-size", type=_positive, default=64, help="default: 64")
    train.add_argument("--lr", type=_learning_rate, default=0.01, help="learning rate (default: 0.01)")
    train.add_argument("--momentum", type=_fraction, default=0.5, help="SGD momentum, 0 to 1 (default: 0.5)")
    train.add_argument("--limit", type=_positive, metavar="N", help="use only the first N train and test images")
    train.add_argument(
        "--seed", type=_non_negative, default=0, help="seed of the data order and generated data (default: 0)"
    )
    train.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="directory for checkpoints, plot and history (default: .)",
    )
    train.add_argument("--force", action="store_true", help="overwrite files of an earlier run")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete epoch, as if never interrupted (same options; "
        "--epochs may grow)",
    )
    train.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="train data-parallel on N local workers with the framework's own engine (torch: DDP over gloo; "
        "keras: MirroredStrategy over N logical CPUs; mxnet: KVStore dist_sync); --batch-size stays the "
        "global batch (default: 1)",
    )
    train.add_argument("--port", type=_tcp_port, default=0, help="the workers' rendezvous port (default: a free one)")
    train.add_argument(
        "--timeout",
        type=_timeout,
        default=World.timeout,
        metavar="SECONDS",
        help="how long a worker waits for its peers, to join or in a step, before the run ends with one line "
        f"(default: {World.timeout:g})",
    )

    bench = sub.add_parser(
        "bench", help="images/s of every framework and mode, and of ONNX Runtime, side by side, each in its own process"
    )
    bench.add_argument(
        "--variant", default="googlenet_bn", choices=list(spec.VARIANTS), help="the network (default: googlenet_bn)"
    )
    bench.add_argument("--batch", type=_positive, default=8, help="images per call (default: 8)")
    bench.add_argument(
        "--input-size", type=_positive, default=224, metavar="PIXELS", help="square input size (default: 224)"
    )
    bench.add_argument(
        "--frameworks",
        "--framework",
        default=f"{frameworks},onnx",
        metavar="LIST",
        help=f"comma-separated subset of {frameworks},onnx (default: all; onnx: ONNX Runtime on torch's export)",
    )
    bench.add_argument("--train", action="store_true", help="also training images/s (one SGD step per call)")
    bench.add_argument(
        "--workers",
        type=_worker_counts,
        metavar="LIST",
        help="with --train: data-parallel training images/s and scaling efficiency with each number of local "
        "workers, e.g. 1,2 (each framework's own engine; --batch is the global batch)",
    )
    bench.add_argument(
        "--rounds", type=_positive, default=5, help="timed rounds, alternating the runtimes (default: 5)"
    )
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    bench.add_argument("--force", action="store_true", help="overwrite an existing --json file")

    table = sub.add_parser("spec", help="print a variant's layers, shapes, parameters and multiply-adds")
    table.add_argument(
        "--variant", default="googlenet", choices=list(spec.VARIANTS), help="the variant (default: googlenet)"
    )
    table.add_argument(
        "--input-size", type=_positive, default=None, metavar="PIXELS", help="square input (default: the variant's)"
    )
    table.add_argument("--num-classes", type=_classes, default=None, help="classes (default: the variant's)")
    table.add_argument("--aux-logits", action="store_true", help="include the aux heads")

    pit = sub.add_parser("pitfalls", help="what each porting mistake does: where a port diverges, by how much, why")
    pit.add_argument(
        "--pitfall",
        action="append",
        choices=list(PITFALLS),
        metavar="NAME",
        help=f"a pitfall to measure (repeatable; default: all): {', '.join(PITFALLS)}",
    )
    pit.add_argument(
        "--variant", choices=list(spec.VARIANTS), help="measure every pitfall on this variant (default: each one's own)"
    )
    pit.add_argument(
        "--input-size",
        type=_positive,
        metavar="PIXELS",
        help="input of the inference pitfalls (default: 96 where the variant runs it and the mistake shows there, "
        "else the variant's own); training pitfalls run at the variant's own size",
    )
    pit.add_argument(
        "--batch",
        type=_positive,
        default=64,
        help="seeded images for the inference pitfalls (default: 64); training pitfalls use check --train's 2",
    )
    pit.add_argument("--seed", type=_non_negative, default=0, help="seed of weights and inputs (default: 0)")
    pit.add_argument("--json", type=Path, metavar="PATH", help="also write the measurements as JSON")
    pit.add_argument(
        "--plot", type=Path, metavar="DIR", help="write one PNG per pitfall: the relative error at every stage"
    )
    pit.add_argument("--force", action="store_true", help="overwrite an existing --json file or plots")

    diff = sub.add_parser("diff", help="where two models part: the first stage that diverges, and which tensors differ")
    diff.add_argument("a", type=Path, metavar="A", help="a checkpoint (any format port reads)")
    diff.add_argument(
        "b",
        type=Path,
        metavar="B",
        nargs="?",
        help="another checkpoint (default: the suite's seeded weights, as check uses them)",
    )
    diff.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network the checkpoints hold")
    diff.add_argument(
        "--framework", default="torch", choices=list(FRAMEWORKS), help="the framework both run in (default: torch)"
    )
    diff.add_argument(
        "--frameworks",
        metavar="A,B",
        help="compare checkpoint A in two frameworks instead, e.g. torch,keras (no B then)",
    )
    diff.add_argument("--from", dest="a_format", choices=list(FORMATS), help="format of A (default: from its name)")
    diff.add_argument("--from-b", dest="b_format", choices=list(FORMATS), help="format of B (default: from its name)")
    diff.add_argument(
        "--num-classes", type=_positive, default=None, help="classes of the checkpoints (default: the variant's)"
    )
    diff.add_argument("--transform-input", action="store_true", help=TRANSFORM_HELP)
    diff.add_argument(
        "--input-size", type=_positive, metavar="PIXELS", help="square input (default: the variant's own)"
    )
    diff.add_argument("--batch", type=_positive, default=8, help="seeded images (default: 8)")
    diff.add_argument("--seed", type=_non_negative, default=0, help="seed of the input and seeded weights (default: 0)")
    diff.add_argument("--top", type=_positive, default=10, help="tensors listed (default: 10)")

    page = sub.add_parser("page", help="build a static site: the spec, the model files side by side, the pitfalls")
    page.add_argument("dir", type=Path, metavar="DIR", help="directory to write (made if missing)")
    page.add_argument(
        "--variant",
        default="googlenet_bn",
        choices=list(spec.VARIANTS),
        help="the spec table's (default: googlenet_bn)",
    )
    page.add_argument(
        "--input-size", type=_positive, metavar="PIXELS", help="the spec table's input (default: the variant's own)"
    )
    page.add_argument(
        "--pitfalls-json",
        type=Path,
        metavar="PATH",
        help="measurements from pitfalls --json (default: measure every pitfall now, a few minutes)",
    )
    page.add_argument("--check-json", type=Path, metavar="PATH", help="a check --json report to show")
    page.add_argument("--bench-json", type=Path, metavar="PATH", help="bench figures (JSON) to show")
    page.add_argument("--batch", type=_positive, default=64, help="images per inference pitfall (default: 64)")
    page.add_argument("--seed", type=_non_negative, default=0, help="seed of the pitfalls (default: 0)")
    page.add_argument("--force", action="store_true", help="overwrite the files of an earlier page in DIR")
    verify_command.add_parser(sub, _positive, _non_negative)
    return parser, sub.choices


def _check(args: argparse.Namespace) -> int:
    from . import frameworks
    from .check import harness, inputs, judges, report

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
    backends, skipped = judges.load_with_judges([*names, *required])
    missing = [fw for fw in required if fw not in backends]
    if missing:
        raise ValueError(f"--require: {missing[0]} is {skipped[missing[0]]}")
    backends = {fw: b for fw, b in backends.items() if fw in names}
    skipped = {fw: why for fw, why in skipped.items() if fw in names}
    if args.distributed and not args.train:
        return _check_distributed(args, backends, args.variant, sizes)
    result = harness.run(variants, backends, skipped, sizes, args.batch, args.seed, train=args.train)
    print(report.render(result, report.columns(args.wide)), flush=True)
    if args.json is not None and not args.distributed:
        report.write_json(result, args.json, overwrite=args.force)
        print(f"JSON report written to {args.json}")
    if args.distributed:
        return max(0 if result.passed else 1, _check_distributed(args, backends, args.variant, sizes, result))
    return 0 if result.passed else 1


def _check_distributed(args: argparse.Namespace, backends, variants, sizes, result=None) -> int:
    """``check --distributed``: the data-parallel parity of each framework's engine."""
    from .check import distributed, report

    variants = variants or [*distributed.VARIANTS, *distributed.BATCHNORM_VARIANTS]
    fixed = {v: sizes[0] for v in variants} if sizes else None
    print(f"data-parallel training, {args.workers} workers (each framework's own engine):", flush=True)
    print(distributed.rules([fw for fw in backends if fw in FRAMEWORKS]), flush=True)
    cases = distributed.run(backends, variants, fixed, args.workers, args.seed)
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


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.json is not None:  # refuse before a minute of measuring
        check_output(args.json, args.force, "--json")
    names = [n.strip() for n in args.frameworks.split(",") if n.strip()]
    settings = bench.Settings(
        args.variant, args.batch, args.input_size, tuple(dict.fromkeys(names)), args.train, args.rounds
    )
    bench.check_settings(settings)  # before any framework is imported
    limits.check_work(limits.Work(spec.resolve(args.variant), args.input_size, args.batch, training=args.train))
    if args.workers:
        if not args.train:
            raise ValueError("--workers: measures training; pass --train too")
        limits.check_workers(max(args.workers))
        if args.batch < max(args.workers):
            World(max(args.workers)).check_batch(args.batch, "--batch")
        with Steps("bench") as progress:
            rows = bench.scaling(settings, args.workers, progress=progress)
        print(bench.render_scaling(settings, rows), flush=True)
        if args.json is not None:
            doc = {"settings": asdict(settings), "scaling": [asdict(r) for r in rows]}
            files.atomic_write(args.json, json.dumps(doc, indent=1).encode(), overwrite=args.force)
            print(f"JSON written to {args.json}")
        return 1 if any(r.failed for r in rows) else 0
    try:
        with Steps("bench") as progress:
            result = bench.run(settings, progress)
    except RuntimeError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print(bench.render(result), flush=True)
    if args.json is not None:
        bench.write_json(result, args.json, overwrite=args.force)
        print(f"JSON written to {args.json}")
    return 0


def _spec(args: argparse.Namespace) -> int:
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


def _port(args: argparse.Namespace) -> int:
    from .formats.port import VerificationError, port

    try:
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
        )
    except VerificationError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


def _init(args: argparse.Namespace) -> int:
    from .formats.port import VerificationError, init

    try:
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
        )
    except VerificationError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


def _train(args: argparse.Namespace) -> int:
    from . import frameworks
    from .train import launch, training

    settings = training.Settings(
        args.variant,
        args.epochs,
        args.batch_size,
        args.lr,
        args.momentum,
        limit=args.limit,
        seed=args.seed,
        num_classes=args.num_classes,
    )
    limits.check_workers(args.workers)  # before the data: the cores alone
    training.check_work(settings)
    training.check_outputs(args.out, settings, args.framework, args.force, args.resume)
    splits = training.load_data(args.data, settings)  # bad data fails here, before any framework loads
    training.check_work(settings, splits, args.workers)
    if args.workers > 1 or launch.started_by_engine(args.framework):
        return _train_workers(args, settings)
    training.reproducible(args.framework)
    backends, skipped = frameworks.load([args.framework])
    if args.framework not in backends:
        raise ValueError(f"--framework {args.framework}: {skipped[args.framework]}")
    try:
        training.train(backends[args.framework], settings, splits, args.out, args.force, resume=args.resume)
    except training.TrainingError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


def _train_workers(args: argparse.Namespace, settings: Settings) -> int:
    """``train --workers N``: start N workers here; or, under torchrun or a cluster's
    launcher (the engine's variables are set), be one of them."""
    from .train import launch, training, worker

    world = World(args.workers, port=args.port, timeout=args.timeout)
    world.check_batch(args.batch_size)
    if launch.started_by_engine(args.framework):
        started = worker.world_from_environment(args.framework, world)
        if args.workers not in {1, started.workers}:
            raise ValueError(
                f"--workers {args.workers}: the engine's variables say {started.workers} workers; "
                f"pass the same (or leave --workers out)"
            )
        started.check_batch(args.batch_size)
        training.reproducible(args.framework)
        job = {"settings": asdict(settings), "data": args.data and str(args.data), "out": str(args.out)}
        engine, backend, world = worker.join(args.framework, started)
        code = 1
        try:
            code = worker.train_job(engine, backend, world, {**job, "force": args.force, "resume": args.resume})
            return code
        except WorldError as e:
            # said before leaving the group, as worker.main does: leaving after a lost peer
            # may block in the engine until the launcher ends the process
            print(f"error: {e}" + (f"; {e.detail}" if e.detail else ""), file=sys.stderr, flush=True)
            code = 3
            return code
        finally:
            try:
                engine.stop(failed=code != 0)
            except WorldError as e:  # a peer lost after the last step: say what is on disk
                e.detail = e.detail or training.saved(args.out, settings, args.framework)
                raise
    job = {
        "kind": "train",
        "settings": asdict(settings),
        "data": args.data and str(args.data.resolve()),
        "out": str(args.out.resolve()),
        "force": args.force,
        "resume": args.resume,
    }
    outcome = launch.run(args.framework, world, job)
    if outcome.code:
        kept = outcome.kept or training.saved(args.out, settings, args.framework)  # worker 0 could not say
        print(f"error: {outcome.failed}" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 1
    return 0


def _pitfalls(args: argparse.Namespace) -> int:
    from .teach import command

    return command.pitfalls(
        args.pitfall, args.variant, args.input_size, args.batch, args.seed, args.json, args.plot, args.force
    )


def _diff(args: argparse.Namespace) -> int:
    from .teach import command

    pair = None if args.frameworks is None else [n.strip() for n in args.frameworks.split(",") if n.strip()]
    return command.diff(
        args.a,
        args.b,
        args.variant,
        args.framework,
        pair,
        args.a_format,
        args.b_format,
        args.num_classes,
        args.transform_input,
        args.input_size,
        args.batch,
        args.seed,
        args.top,
    )


def _page(args: argparse.Namespace) -> int:
    from .teach import command

    return command.page(
        args.dir,
        args.variant,
        args.input_size,
        args.pitfalls_json,
        args.check_json,
        args.bench_json,
        args.batch,
        args.seed,
        args.force,
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The options; an unknown one is reported by its command's parser, with that usage."""
    parser, commands = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    commands = {
        "bench": _bench,
        "check": _check,
        "port": _port,
        "init": _init,
        "spec": _spec,
        "train": _train,
        "pitfalls": _pitfalls,
        "diff": _diff,
        "page": _page,
        "verify": verify_command.run,
    }
    try:
        with files.signals():
            return commands[args.command](args)
    except files.Interrupted as e:
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

"""``python -m conformance train``: its options (checked, with the data, before any
framework is imported), then one process's training or N workers' (:mod:`.launch`,
:mod:`.worker`). Exit codes as everywhere: 0 trained, 1 the training failed, 2 bad
usage or input, 3 a peer was lost."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import arguments, limits, spec
from ..frameworks import FRAMEWORKS
from ..world import World, WorldError
from .dataset import load_data
from .outputs import check_outputs, saved
from .settings import MAX_EPOCHS, Settings, check_work

MAX_TIMEOUT = 86400.0  # seconds: the longest wait --timeout accepts (a bound on what a user declares)
# d2l trains GoogLeNet at lr 0.1, Liu's lecture at 0.01: a thousand times d2l's is no
# schedule's step; inf and nan are no step at all.
MAX_LR = 100.0
_learning_rate = arguments.typed(
    float, lambda v: math.isfinite(v) and 0 < v <= MAX_LR, f"a finite number above 0, at most {MAX_LR:g}"
)
_fraction = arguments.typed(float, lambda v: math.isfinite(v) and 0 <= v < 1, "a number from 0 to 1 (exclusive)")
_timeout = arguments.typed(
    float, lambda v: 0 < v <= MAX_TIMEOUT, f"a number of seconds above 0, at most {MAX_TIMEOUT:g}"
)
_epochs = arguments.typed(int, lambda v: 1 <= v <= MAX_EPOCHS, f"an integer from 1 to {MAX_EPOCHS:,}")
_tcp_port = arguments.typed(int, lambda v: 0 <= v <= 65535, "a TCP port from 0 (a free one) to 65535")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``train`` subcommand on ``sub``."""
    cmd = arguments.command(
        sub,
        "train",
        "train a variant in one framework (SGD, as d2l and Liu train), with a plot",
        "Train a variant in one framework with SGD on MNIST or Fashion-MNIST (or a generated "
        "data set), writing a checkpoint each epoch, the history and a plot to --out; --resume "
        "continues an interrupted run, --workers N trains data-parallel with the framework's "
        "own engine.",
        [
            (
                "Liu's Inception net on Fashion-MNIST files, three epochs",
                "--framework torch --variant inception_mnist --data fashion/ --epochs 3",
            ),
            (
                "d2l's GoogLeNet on two local workers, a global batch of 64",
                "--framework keras --variant googlenet_d2l --workers 2 --batch 64",
            ),
        ],
    )
    cmd.add_argument(
        *reversed(arguments.FRAMEWORK_FLAGS),
        dest="framework",
        required=True,
        choices=list(FRAMEWORKS),
        help="the framework to train in (one)",
    )
    cmd.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network to train")
    cmd.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="MNIST or Fashion-MNIST IDX files, gzipped or not (default: a generated data set)",
    )
    cmd.add_argument(
        "--num-classes", type=arguments.classes, default=None, help="classes of the classifier (default: the variant's)"
    )
    cmd.add_argument("--epochs", type=_epochs, default=10, help=f"default: 10 (at most {MAX_EPOCHS:,})")
    cmd.add_argument(
        "--batch",
        "--batch-size",
        dest="batch_size",
        type=arguments.positive,
        default=64,
        action=arguments.Renamed,
        old=["--batch-size"],
        metavar="BATCH",
        help="images per step, the global batch with --workers (default: 64; --batch-size: the old spelling)",
    )
    cmd.add_argument("--lr", type=_learning_rate, default=0.01, help="learning rate (default: 0.01)")
    cmd.add_argument("--momentum", type=_fraction, default=0.5, help="SGD momentum, 0 to 1 (default: 0.5)")
    cmd.add_argument("--limit", type=arguments.positive, metavar="N", help="use only the first N train and test images")
    cmd.add_argument(
        "--seed", type=arguments.non_negative, default=0, help="seed of the data order and generated data (default: 0)"
    )
    cmd.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="directory for checkpoints, plot and history (default: .)",
    )
    cmd.add_argument("--force", action="store_true", help="overwrite files of an earlier run")
    cmd.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last complete epoch, as if never interrupted (same options; "
        "--epochs may grow)",
    )
    cmd.add_argument(
        "--workers",
        type=arguments.positive,
        default=1,
        metavar="N",
        help="train data-parallel on N local workers with the framework's own engine (torch: DDP over gloo; "
        "keras: MirroredStrategy over N logical CPUs; mxnet: KVStore dist_sync); --batch stays the "
        "global batch (default: 1)",
    )
    cmd.add_argument("--port", type=_tcp_port, default=0, help="the workers' rendezvous port (default: a free one)")
    cmd.add_argument(
        "--timeout",
        type=_timeout,
        default=World.timeout,
        metavar="SECONDS",
        help="how long a worker waits for its peers, to join or in a step, before the run ends with one line "
        f"(default: {World.timeout:g})",
    )
    cmd.set_defaults(run=run)
    return cmd


def run(args: argparse.Namespace) -> int:
    from .. import frameworks
    from . import launch, loop

    settings = Settings(
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
    check_work(settings)
    check_outputs(args.out, settings, args.framework, args.force, args.resume)
    splits = load_data(args.data, settings)  # bad data fails here, before any framework loads
    check_work(settings, splits, args.workers)
    if args.workers > 1 or launch.started_by_engine(args.framework):
        return _train_workers(args, settings)
    loop.reproducible(args.framework)
    backends, skipped = frameworks.load([args.framework])
    if args.framework not in backends:
        raise ValueError(f"--framework {args.framework}: {skipped[args.framework]}")
    try:
        loop.train(backends[args.framework], settings, splits, args.out, args.force, resume=args.resume)
    except loop.TrainingError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


def _train_workers(args: argparse.Namespace, settings: Settings) -> int:
    """``train --workers N``: start N workers here; or, under torchrun or a cluster's
    launcher (the engine's variables are set), be one of them."""
    from . import launch, loop, worker

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
        loop.reproducible(args.framework)
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
                e.detail = e.detail or saved(args.out, settings, args.framework)
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
        kept = outcome.kept or saved(args.out, settings, args.framework)  # worker 0 could not say
        print(f"error: {outcome.failed}" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 1
    return 0

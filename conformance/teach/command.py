"""The ``pitfalls``, ``diff`` and ``page`` commands: their parsers, every option checked
before a framework is imported, then one call into :mod:`.measure`, :mod:`.diff` or
:mod:`.page`. Exit codes as everywhere: 0 as expected, 1 a check failed, 2 bad usage or
input."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from .. import arguments, frameworks, limits, spec
from ..files import check_output
from ..formats.registry import FORMATS
from ..progress import Steps
from . import measure, outputs
from .pitfalls import PITFALLS

PORTS = list(dict.fromkeys(p.framework for p in PITFALLS.values()))  # the frameworks whose ports err


def add_parsers(sub: Any) -> None:
    """The ``pitfalls``, ``diff`` and ``page`` subcommands on ``sub``."""
    _add_pitfalls(sub)
    _add_diff(sub)
    _add_page(sub)


def _add_pitfalls(sub: Any) -> None:
    cmd = arguments.command(
        sub,
        "pitfalls",
        "what each porting mistake does: where a port diverges, by how much, why",
        "Make each porting mistake of the catalogue on purpose (a wrong padding, pooling rounding, "
        "BatchNorm epsilon, weight layout...) and measure where the ported model first diverges from "
        "the reference and by how much; PASS when each diverges first where its mistake is made.",
        [
            ("one mistake, with its plot", "--pitfall floor-pooling --plot plots/"),
            ("the mistakes of JAX + Flax ports", "--frameworks jax"),
            ("every mistake on d2l's GoogLeNet, as JSON for page", "--variant googlenet_d2l --json pitfalls.json"),
        ],
    )
    cmd.add_argument(
        "--pitfall",
        action="append",
        choices=list(PITFALLS),
        metavar="NAME",
        help=f"a pitfall to measure (repeatable; default: all): {', '.join(PITFALLS)}",
    )
    cmd.add_argument(
        *arguments.FRAMEWORK_FLAGS,
        dest="frameworks",
        metavar="LIST",
        help=f"only the mistakes of ports to these frameworks, e.g. jax (default: all): a subset of {','.join(PORTS)}",
    )
    cmd.add_argument(
        "--variant",
        choices=list(spec.VARIANTS),
        help="measure every pitfall on this variant (default: each pitfall's own, the variant it shows on)",
    )
    cmd.add_argument(
        "--input-size",
        type=arguments.positive,
        metavar="PIXELS",
        help="input of the inference pitfalls (default: 96 where the variant runs it and the mistake shows there, "
        "else the variant's own); training pitfalls run at the variant's own size",
    )
    cmd.add_argument(
        "--batch",
        type=arguments.positive,
        default=64,
        help="seeded images for the inference pitfalls (default: 64); training pitfalls use check --train's 2",
    )
    cmd.add_argument("--seed", type=arguments.non_negative, default=0, help="seed of weights and inputs (default: 0)")
    cmd.add_argument("--json", type=Path, metavar="PATH", help="also write the measurements as JSON")
    cmd.add_argument(
        "--plot", type=Path, metavar="DIR", help="write one PNG per pitfall: the relative error at every stage"
    )
    cmd.add_argument("--force", action="store_true", help="overwrite an existing --json file or plots")
    cmd.set_defaults(run=run_pitfalls)


def _add_diff(sub: Any) -> None:
    cmd = arguments.command(
        sub,
        "diff",
        "where two models part: the first stage that diverges, and which tensors differ",
        "Run two checkpoints (or one against the suite's seeded weights) on the same seeded input "
        "in one framework, or one checkpoint in two frameworks, and name the first stage that "
        "diverges, the error at every stage and the tensors that differ most.",
        [
            ("your port against the original, in PyTorch", "ported.pth googlenet.pth --variant googlenet_bn"),
            ("one checkpoint in PyTorch and in Keras", "googlenet.pth --variant googlenet_bn --frameworks torch,keras"),
        ],
    )
    cmd.add_argument("a", type=Path, metavar="A", help="a checkpoint (any format port reads)")
    cmd.add_argument(
        "b",
        type=Path,
        metavar="B",
        nargs="?",
        help="another checkpoint (default: the suite's seeded weights, as check uses them)",
    )
    cmd.add_argument("--variant", required=True, choices=list(spec.VARIANTS), help="the network the checkpoints hold")
    cmd.add_argument(
        *arguments.FRAMEWORK_FLAGS,
        dest="frameworks",
        default="torch",
        metavar="LIST",
        help="one framework A and B both run in, or two that A runs in (then no B), e.g. torch,keras (default: torch)",
    )
    cmd.add_argument("--from", dest="a_format", choices=list(FORMATS), help="format of A (default: from its name)")
    cmd.add_argument("--from-b", dest="b_format", choices=list(FORMATS), help="format of B (default: from its name)")
    cmd.add_argument(
        "--num-classes",
        type=arguments.classes,
        default=None,
        help="classes of the checkpoints (default: the variant's)",
    )
    cmd.add_argument("--transform-input", action="store_true", help=arguments.TRANSFORM_HELP)
    cmd.add_argument(
        "--input-size", type=arguments.positive, metavar="PIXELS", help="square input (default: the variant's own)"
    )
    cmd.add_argument("--batch", type=arguments.positive, default=8, help="seeded images (default: 8)")
    cmd.add_argument(
        "--seed", type=arguments.non_negative, default=0, help="seed of the input and seeded weights (default: 0)"
    )
    cmd.add_argument("--top", type=arguments.positive, default=10, help="tensors listed (default: 10)")
    cmd.set_defaults(run=run_diff)


def _add_page(sub: Any) -> None:
    cmd = arguments.command(
        sub,
        "page",
        "build a static site: the spec, the model files side by side, the pitfalls",
        "Write a static site a teacher can open without a network: a variant's spec table, the "
        "four frameworks' model files side by side with the differences that matter marked, "
        "each pitfall's measurement and plot, and a check or bench report when given.",
        [
            ("measure every pitfall now and write the site", "site"),
            (
                "reuse a pitfalls --json report, with d2l's GoogLeNet's spec table",
                "site --variant googlenet_d2l --pitfalls-json pitfalls.json",
            ),
        ],
    )
    cmd.add_argument("dir", type=Path, metavar="DIR", help="directory to write (made if missing)")
    arguments.variant(cmd, "the spec table's")
    cmd.add_argument(
        "--input-size",
        type=arguments.positive,
        metavar="PIXELS",
        help="the spec table's input (default: the variant's own)",
    )
    cmd.add_argument(
        "--pitfalls-json",
        type=Path,
        metavar="PATH",
        help="measurements from pitfalls --json (default: measure every pitfall now, a few minutes)",
    )
    cmd.add_argument("--check-json", type=Path, metavar="PATH", help="a check --json report to show")
    cmd.add_argument("--bench-json", type=Path, metavar="PATH", help="bench figures (JSON) to show")
    cmd.add_argument("--batch", type=arguments.positive, default=64, help="images per inference pitfall (default: 64)")
    cmd.add_argument("--seed", type=arguments.non_negative, default=0, help="seed of the pitfalls (default: 0)")
    cmd.add_argument("--force", action="store_true", help="overwrite the files of an earlier page in DIR")
    cmd.set_defaults(run=run_page)


def run_pitfalls(args: argparse.Namespace) -> int:
    return pitfalls(
        selected(args.pitfall, None if args.frameworks is None else ports(args.frameworks)),
        args.variant,
        args.input_size,
        args.batch,
        args.seed,
        args.json,
        args.plot,
        args.force,
    )


def ports(text: str) -> list[str]:
    """``--frameworks jax,keras``: frameworks whose ports the catalogue holds mistakes of."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PORTS]
    if unknown or not names:
        raise ValueError(
            f"--frameworks: no pitfall of a port to {','.join(unknown) or repr(text)}; "
            f"expected a comma-separated subset of {','.join(PORTS)}"
        )
    return names


def selected(names: list[str] | None, frameworks: list[str] | None) -> list[str]:
    """The pitfalls named (default: all), of the ports to ``frameworks`` (default: any)."""
    chosen = [n for n in dict.fromkeys(names or PITFALLS) if frameworks is None or PITFALLS[n].framework in frameworks]
    if not chosen:
        asked = ",".join(frameworks or [])
        raise ValueError(f"--frameworks {asked}: no pitfall --pitfall names is made by such a port")
    return chosen


def run_diff(args: argparse.Namespace) -> int:
    names = frameworks.parse(args.frameworks, "--frameworks")
    if len(names) > 2:
        raise ValueError(
            f"--frameworks: expected one framework (A and B run in it) or two (A runs in each), as torch,keras; "
            f"got {','.join(names)}"
        )
    return diff(
        args.a,
        args.b,
        args.variant,
        names[0],
        names if len(names) == 2 else None,
        args.a_format,
        args.b_format,
        args.num_classes,
        args.transform_input,
        args.input_size,
        args.batch,
        args.seed,
        args.top,
    )


def run_page(args: argparse.Namespace) -> int:
    return page(
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


def _check_size(pairs: list[tuple[str, str]], size: int) -> None:
    for name, variant in pairs:
        if PITFALLS[name].kind != "inference":
            continue
        try:
            spec.stage_shapes(spec.resolve(variant), size)
        except spec.SpecError as e:
            raise ValueError(f"--input-size {size}: {name} runs on {variant}, which cannot run it: {e}") from None


def _check_work(pairs: list[tuple[str, str]], size: int | None, batch: int) -> None:
    """Each measurement's batch against the machine: an inference pitfall's --batch at
    --input-size (or its default), a training pitfall's check --train batch at the
    variant's own size."""
    for name, variant in pairs:
        pitfall, p = PITFALLS[name], spec.resolve(variant)
        if pitfall.kind == "inference":
            option = "--input-size" if size else None
            limits.check_work(limits.Work(p, size or measure.default_size(pitfall, p), batch, size_option=option))
        else:
            limits.check_work(limits.Work(p, p.input_size, measure.TRAIN_BATCH, True, None, None))


def pitfalls(
    names: list[str] | None,
    variant: str | None,
    size: int | None,
    batch: int,
    seed: int,
    json_path: Path | None,
    plot_dir: Path | None,
    force: bool,
) -> int:
    names = list(dict.fromkeys(names or PITFALLS))
    pairs = measure.planned(names, variant)
    if size is not None:
        _check_size(pairs, size)
    _check_work(pairs, size, batch)
    if json_path is not None:
        check_output(json_path, force, "--json")
    if plot_dir is not None:
        outputs.check_dir(plot_dir, [f"{n}-{v}.png" for n, v in pairs], force, "--plot")
    needed = [measure.REFERENCE, *(PITFALLS[n].framework for n in names)]
    backends, skipped = frameworks.load(dict.fromkeys(needed))
    print(measure.header(backends, batch, seed) + "\n", flush=True)
    with Steps("pitfalls") as steps:
        steps.total(len(pairs))

        def said(m: measure.Measurement) -> None:
            print(measure.render(m) + "\n", flush=True)
            steps(f"{m.pitfall} on {m.variant} measured")

        results = measure.run(names, variant, backends, skipped, size, batch, seed, log=said)
    if json_path is not None:
        measure.write_json(results, json_path, batch, seed, overwrite=force)
        print(f"JSON written to {json_path}")
    if plot_dir is not None:
        written = [measure.write_plot(m, outputs.made(plot_dir), overwrite=force) for m in results]
        print(f"{sum(w is not None for w in written)} plots written to {plot_dir}")
    measured = [m for m in results if not m.skipped]
    wrong = [m for m in results if not m.as_expected]
    if wrong:
        for m in wrong:
            print(f"FAIL: {m.pitfall} on {m.variant} first diverges at {m.first}, but the mistake is made at {m.where}")
        return 1
    print(
        f"PASS: each of {len(measured)} measured pitfalls diverges first where its mistake is made"
        + (f" ({len(results) - len(measured)} skipped)" if len(measured) < len(results) else "")
    )
    return 0


def diff(
    a: Path,
    b: Path | None,
    variant: str,
    framework: str,
    pair: list[str] | None,
    a_format: str | None,
    b_format: str | None,
    num_classes: int | None,
    transform_input: bool,
    size: int | None,
    batch: int,
    seed: int,
    top: int,
) -> int:
    from . import diff as diffing

    if pair is not None:
        pair = frameworks.parse(pair, "--frameworks")
    p = spec.resolve(variant)
    with contextlib.suppress(spec.SpecError):  # a size the variant cannot run: diff names it
        limits.check_work(limits.Work(p, size or p.input_size, batch, size_option="--input-size" if size else None))
    result = diffing.diff(
        a,
        b,
        variant,
        framework,
        pair,
        a_format,
        b_format,
        num_classes,
        transform_input,
        size,
        batch,
        seed,
        log=lambda line: print(line, flush=True),
    )
    print(diffing.render(result, top))
    return 0 if result.passed else 1


def page(
    directory: Path,
    variant: str,
    size: int | None,
    pitfalls_json: Path | None,
    check_json: Path | None,
    bench_json: Path | None,
    batch: int,
    seed: int,
    force: bool,
) -> int:
    from . import differences
    from . import page as site

    differences.read_readme()  # the table the page explains: refuse now if it is missing
    check = site.read_report(check_json, "--check-json", ("frameworks", "variants")) if check_json else None
    bench = site.read_report(bench_json, "--bench-json") if bench_json else None
    if pitfalls_json is not None:
        measured, batch = measure.read_json(pitfalls_json, "--pitfalls-json")
        plots = [measure.plot_name(m) for m in measured]
    else:
        plots = [f"{n}-{v}.png" for n, v in measure.planned(list(PITFALLS), None)]
        _check_work(measure.planned(list(PITFALLS), None), None, batch)
    site.check_inputs(directory, variant, size, plots, force)
    if size is not None:
        limits.check_size(spec.resolve(variant), size)
    if pitfalls_json is None:
        print(f"measuring the pitfalls ({batch} images each; --pitfalls-json reuses a pitfalls --json report)")
        backends, skipped = frameworks.load([measure.REFERENCE, *PORTS])  # jax: skipped where not installed
        with Steps("page") as steps:
            steps.total(len(measure.planned(list(PITFALLS), None)))
            # each measured pitfall named with its variant: dense-rows runs on two
            measured = measure.run(
                list(PITFALLS),
                None,
                backends,
                skipped,
                None,
                batch,
                seed,
                log=lambda m: steps(f"{m.pitfall} on {m.variant} measured"),
            )
    index = site.write(directory, variant, size, measured, batch, check, bench, force)
    print(f"wrote {index}: open it in a browser (no network needed)")
    return 0

"""The ``pitfalls``, ``diff`` and ``page`` commands: every option checked before a
framework is imported, then one call into :mod:`.measure`, :mod:`.diff` or :mod:`.page`.
Exit codes as everywhere: 0 as expected, 1 a check failed, 2 bad usage or input."""

from __future__ import annotations

import contextlib
from pathlib import Path

from .. import frameworks, limits, spec
from ..files import check_output
from ..progress import Steps
from . import measure, outputs
from .pitfalls import PITFALLS


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
    results = measure.run(
        names, variant, backends, skipped, size, batch, seed, log=lambda m: print(measure.render(m) + "\n", flush=True)
    )
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
        backends, skipped = frameworks.load(frameworks.FRAMEWORKS)
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

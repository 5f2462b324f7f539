"""Port a GoogLeNet checkpoint from one format to another, proven equivalent.

``port(src, dst, variant)`` resolves SRC and checks DST before any work
(``formats.paths``), reads ``src`` (any format of ``formats.registry``, any naming of
``formats.naming``) and checks it against the spec (``formats.checkpoint``), makes DST's
bytes in memory, writes them beside DST (``formats.staging``: a full disk leaves
nothing), then proves them (``formats.proving``) before renaming them into place. A
failed verification leaves ``dst`` untouched; weights so large that the logits
overflow are refused. ``init`` writes the suite's seeded weights the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import frameworks, spec
from ..canonical import Params, random_params
from ..check.compare import Agreement, percent
from ..progress import Steps
from . import deploy, paths, registry, staging
from .base import Destination, FileContents, Format, PortError, Source, error_line
from .checkpoint import Checkpoint, read_checkpoint, resolve_plan
from .proving import VERIFY_BATCH, VerificationError, check_recorded, native_source, overflow_error, verify
from .registry import installed_reference, unchecked

__all__ = ["Checkpoint", "PortError", "PortResult", "VerificationError", "init", "port", "read_checkpoint"]


@dataclass
class PortResult:
    src: Path
    dst: Path
    src_format: str
    dst_format: str
    variant: str
    options: dict[str, object]
    source_framework: str
    target_framework: str
    agreement: dict[str, Agreement]  # logits and, where they run, the aux logits
    changed: list[str]  # canonical keys not bit-identical after the round trip
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.changed and all(a.passed for a in self.agreement.values())


def port(
    src: str | Path,
    dst: str | Path,
    variant: str | None = None,
    src_format: str | None = None,
    dst_format: str | None = None,
    num_classes: int | None = None,
    transform_input: bool = False,
    force: bool = False,
    log: Callable[[str], None] = lambda line: None,
    drop_background: bool = False,
    progress: Steps | None = None,
) -> PortResult:
    """Convert ``src`` to ``dst`` and prove it. Raises PortError (bad input, or an
    output that cannot be written; nothing written) or VerificationError (the written
    file disagrees; nothing written). ``variant`` (None: the one the file's tensors fit)
    and ``drop_background``: see :func:`read_checkpoint`; ``progress`` is told each step."""
    start = time.perf_counter()
    progress = Steps.silent() if progress is None else progress
    source = paths.source(src, src_format)
    destination = paths.destination(dst, dst_format, source, force)
    refuse_backend(source.format, "--from")
    refuse_backend(destination.format, "--to")
    progress.total(4)
    progress(f"reading {source.path}", logged=False)  # a refusal of it stays one line in a log
    checkpoint = read_checkpoint(source, variant, None, num_classes, transform_input, drop_background)
    plan, params, notes, contents = checkpoint.plan, checkpoint.params, checkpoint.notes, checkpoint.contents
    refuse_plan(destination.format, plan)
    src_fmt = source.format
    num_classes, aux = plan.num_classes, bool(plan.aux)
    transform, unrecorded = _transform_said(src_fmt, contents, plan, transform_input)
    log(
        f"read   {source.path} ({src_fmt.description}): {len(params)} tensors, {plan.variant.name}, "
        f"{num_classes} classes, aux heads {'yes' if aux else 'no'}{transform}"
    )
    for note in notes:
        log(f"       {note}")
    if unrecorded:
        notes.append(unrecorded)
        log(f"note   {src_fmt.name}: {unrecorded}")
    blind = unchecked(src_fmt, contents)
    if blind:
        log(f"note   {src_fmt.name}: {blind}")
    return _write(source, contents, plan, params, notes, destination, log, start, progress)


def refuse_backend(fmt: Format, option: str) -> None:
    """A PortError, before anything is read, where ``fmt`` is Keras's and this process's
    Keras would run on a backend other than TensorFlow's (``KERAS_BACKEND``, which Keras
    reads once, on import): port reads and writes Keras's files with the suite's
    ``keras``, Keras on TensorFlow, and a SavedModel can be exported on no other."""
    if fmt.framework != "keras" or frameworks.environment_differs("keras") is None:
        return
    why = (
        "SavedModel export needs TensorFlow's backend"
        if fmt.name == "savedmodel"
        else "port reads and writes Keras's files with Keras on TensorFlow"
    )
    raise PortError(
        f"{option} {fmt.name}: this process has KERAS_BACKEND={os.environ['KERAS_BACKEND']}, and {why}; "
        "unset KERAS_BACKEND or set it to tensorflow"
    )


def refuse_plan(fmt: Format, plan: spec.Plan) -> None:
    """A PortError where the destination's format cannot hold the plan (a layer it has
    no way to express), before any framework is imported."""
    said = fmt.refuses(plan) if fmt.refuses is not None else ""
    if said:
        raise PortError(said)


# Where well-known weights of a variant expect its input transform.
PRETRAINED = {"googlenet_bn": " (torchvision's pretrained googlenet was trained with it)"}


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _transform_said(fmt: Format, contents: FileContents, plan: spec.Plan, asked: bool) -> tuple[str, str]:
    """(the read line's words for transform_input, a note where the file does not
    record it or records it otherwise than asked); both "" for a variant without one."""
    if plan.variant.input.transform is None:
        return "", ""
    recorded, on = contents.transform_input, plan.options.transform_input
    if recorded is None:
        said = f", transform_input {_on(on)} ({'--transform-input' if asked else 'not recorded in the file'})"
        note = (
            ""
            if asked
            else f"{fmt.description} files do not record transform_input: read as off; pass --transform-input "
            f"if the weights expect {plan.variant.name}'s input transform{PRETRAINED.get(plan.variant.name, '')}"
        )
        return said, note
    if asked and not recorded:
        return ", transform_input on (--transform-input)", "the file records transform_input off: on, as asked"
    return f", transform_input {_on(on)} (recorded in the file)", ""


def _loading(dst: Path, dst_fmt: Format, plan: spec.Plan, framework: str) -> str:
    """The load line: DST loaded as a reader's process loads it, transform_input said."""
    options = plan.options
    build = (
        f"{plan.variant.name!r}, num_classes={options.num_classes}, aux_logits={options.aux_logits}, "
        f"transform_input={options.transform_input}"
    )
    line = dst_fmt.loading.format(
        path=repr(str(dst)), params=repr(str(deploy.params_of(dst))), framework=f"impl_{framework}", build=build
    )
    if plan.variant.input.transform is not None and dst_fmt.keeps_transform:
        joint = "; " if "#" in line else "  # "
        line += f"{joint}transform_input={options.transform_input} is in {dst_fmt.keeps_transform}"
    return line


def _write(
    source: Source | Path,
    contents: FileContents,
    plan: spec.Plan,
    params: Params,
    notes: list[str],
    destination: Destination,
    log: Callable[[str], None],
    start: float,
    progress: Steps,
) -> PortResult:
    """Write ``params`` as the destination's format beside it, verify it against the
    source (loaded from ``contents`` as its users load it, or built in its framework;
    a Path: the seeded weights ``init`` names, built in the reference framework), put
    it in place."""
    src, src_format, src_framework = (
        (source.path, source.format.name, source.format.framework)
        if isinstance(source, Source)
        else (source, "seeded", None)
    )
    dst, dst_fmt = destination.path, destination.format
    variant = plan.variant.name
    reference = installed_reference() if None in (src_framework, dst_fmt.framework) else ""
    src_fw = src_framework or reference
    staging.check_space(dst, sum(value.nbytes for value in params.values()))
    progress(f"writing {dst} ({dst_fmt.description})")
    try:
        data, writer = dst_fmt.write(params, plan)
    except PortError:
        raise
    except Exception as e:  # the framework could not write it
        full = staging.out_of_space(e)
        if full:
            raise PortError(f"DST {dst}: writing {dst_fmt.description} failed: {full}; nothing was written") from None
        raise VerificationError(
            f"{dst}: writing {dst_fmt.description} failed ({type(e).__name__}: {error_line(e)}); nothing was written"
        ) from e
    staging.check_space(dst, staging.written_size(data))
    if dst_fmt.limits:
        notes.append(dst_fmt.limits)
        log(f"note   {dst_fmt.name}: {dst_fmt.limits}")
    if plan.options.transform_input and not dst_fmt.keeps_transform:
        lost = (
            f"{dst_fmt.description} files cannot record transform_input: build the model with "
            f"transform_input=True to load it (the load line does)"
        )
        notes.append(lost)
        log(f"note   {dst_fmt.name}: {lost}")
    with staging.staging(destination, data) as (tmp, commit):
        del data
        progress(f"proving {dst}: the source in {src_fw}")
        original = native_source(contents, plan, params, src, src_fw)
        progress(f"proving {dst}: the written file loaded, both run on a seeded input")
        try:
            verified = verify(params, plan, original, tmp, dst_fmt, reference, writer)
        except PortError:
            raise
        except Exception as e:  # the file could not be loaded back
            full = staging.out_of_space(e)
            if full:
                raise PortError(
                    f"DST {dst}: reloading {dst_fmt.description} failed: {full}; nothing was written"
                ) from None
            raise VerificationError(
                f"{dst}: reloading {dst_fmt.description} failed ({type(e).__name__}: {error_line(e)}); "
                f"nothing was written"
            ) from e
        result = PortResult(
            src,
            dst,
            src_format,
            dst_fmt.name,
            variant,
            plan.options.asdict(),
            src_fw,
            verified.target_framework,
            verified.agreement,
            verified.changed,
            notes,
        )
        log(
            f"verify {src_fw} (source) vs {verified.target_framework} (written file), seeded input "
            f"{VERIFY_BATCH} x {plan.in_channels} x {plan.input_size} x {plan.input_size}:"
        )
        for name, a in verified.agreement.items():
            log(
                f"       {name:<7} max abs {a.max_abs:.1e}, max rel {a.max_rel:.1e}, top-1 {percent(a.top1)}, "
                f"top-5 {percent(a.top5)}  {'PASS' if a.passed else 'FAIL'}"
            )
        changed = verified.changed
        if verified.weighed:
            said = "bit-identical" if not changed else f"{len(changed)} tensors changed: {changed[:3]}"
            log(f"       weights: {said}")
        else:
            log("       weights: not compared (the file keeps none under canonical names): the outputs above")
        if verified.overflow and not changed:
            raise overflow_error(src, params, verified.overflow)
        if not result.passed:
            raise VerificationError(f"{dst}: the written file does not reproduce {src}; nothing was written")
        check_recorded(tmp, dst, dst_fmt, plan)
        commit(destination.force)
    result.seconds = time.perf_counter() - start
    log(f"wrote  {dst} ({dst_fmt.description}) in {result.seconds:.1f} s")
    if dst_fmt.loading:
        log(f"load   {_loading(dst, dst_fmt, plan, verified.target_framework)}")
    return result


def init(
    dst: str | Path,
    variant: str,
    dst_format: str | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    aux_logits: bool | None = None,
    transform_input: bool = False,
    force: bool = False,
    log: Callable[[str], None] = lambda line: None,
    progress: Steps | None = None,
) -> PortResult:
    """A first checkpoint: the suite's seeded weights of ``variant``
    (``canonical.random_params(plan, seed)``, what ``check`` and ``diff`` run) written as
    any format ``port`` writes, and verified as ``port`` verifies. Seeded weights rather
    than ``default_params`` (build's initialisation: zero biases, BatchNorm statistics
    at 0 and 1): every tensor holds distinct values, so a port that loses one shows.
    ``aux_logits``: None gives the variant's aux heads where it has them; ``progress``
    is told each step."""
    start = time.perf_counter()
    progress = Steps.silent() if progress is None else progress
    dst = Path(dst)
    dst_fmt = registry.infer(dst, dst_format, "--to")
    if variant not in spec.VARIANTS:
        raise PortError(f"--variant: unknown {variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    has_aux = spec.VARIANTS[variant].aux is not None
    if aux_logits and not has_aux:
        raise PortError(f"--aux-logits: `{variant}` has no aux heads")
    classes = spec.VARIANTS[variant].head.classes if num_classes is None else num_classes
    plan = resolve_plan(variant, classes, has_aux if aux_logits is None else aux_logits, transform_input)
    seeded = Path(f"seeded-{variant}-seed{seed}")  # no file: named in the result and messages
    destination = paths.check_destination(dst, dst_fmt, None, force)
    refuse_backend(dst_fmt, "--to")
    refuse_plan(dst_fmt, plan)
    params = {k: v.astype(np.float32) for k, v in random_params(plan, seed).items()}
    log(
        f"seeded {variant}: canonical.random_params(seed={seed}), {len(params)} tensors, "
        f"{plan.num_classes} classes, aux heads {'yes' if plan.aux else 'no'}"
        + (f", transform_input {_on(transform_input)}" if plan.variant.input.transform is not None else "")
    )
    progress.total(3)
    return _write(seeded, FileContents({}, "canonical", []), plan, params, [], destination, log, start, progress)

"""Port a GoogLeNet checkpoint from one format to another, proven equivalent.

``port(src, dst, variant)`` checks DST before any work (``files.check_output``), reads
``src`` (any format of ``formats.registry``, any naming of ``formats.naming``), checks
what it declares against the spec before reading a tensor (``formats.bounds``), then
the tensors themselves, makes DST's bytes in memory, writes them to a temporary file
beside DST (``files.Temporary``: a full disk leaves nothing), then verifies before
renaming it into place: the written file is loaded into the target framework the way its users
load it (into a model whose every weight was first set to NaN, so nothing the file
lacks can survive), the source into its own framework, both run the same seeded input, and
logits (and aux logits) must agree within the float32 tolerance with identical
top-5, and every tensor must come back bit-identical. A failed verification
leaves ``dst`` untouched.

Input dtypes: float16, bfloat16 and float64 tensors are converted to float32, and
big-endian ones to little-endian, with a notice (float64 -> float32 rounds; the others
are exact). Integer, sparse and quantised tensors other than ``num_batches_tracked`` are
refused, and so are NaN or Inf values, and weights so large that the logits overflow.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import files, spec
from ..canonical import CanonicalError, Params, canonical_shapes, random_params, validate
from ..check.compare import Agreement, agreement, identical
from ..reading import Tensor
from . import bounds, deploy, naming, tfcheckpoint
from .base import Format, Native, PortError, Raw, built, meaningful
from .registry import FORMATS, infer, installed_reference, materialise, read, unchecked

__all__ = ["Checkpoint", "PortError", "PortResult", "VerificationError", "init", "port", "read_checkpoint"]

VERIFY_BATCH = 2


class VerificationError(RuntimeError):
    """The written file does not reproduce the source: nothing was written."""


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


def _source(src: Path) -> Path:
    """The path to read: ``src`` checked, or the prefix of the TensorFlow checkpoint it
    names (its ``.index`` checked instead)."""
    prefix = tfcheckpoint.prefix(src)
    if prefix is None:
        _check_source(src)
        return src
    _check_source(tfcheckpoint.index(prefix))
    return prefix


def _check_source(src: Path) -> None:
    if not src.exists():
        raise PortError(f"SRC {src}: no such file" + (" (a symbolic link to nothing)" if src.is_symlink() else ""))
    if src.is_dir():
        raise PortError(f"SRC {src}: a directory; give a checkpoint file")
    if not src.is_file():
        raise PortError(f"SRC {src}: {files.kind(src.stat().st_mode)}, not a regular file; give a checkpoint file")
    try:
        with open(src, "rb"):
            pass
    except OSError as e:
        raise PortError(f"SRC {src}: not readable ({e.strerror})") from None


def _check_paths(src: Path | None, dst: Path, dst_fmt: Format, force: bool) -> str:
    """DST writable, under a name its framework loads (before any work), and not SRC
    (None: there is no source file, as for ``init``); returns the temporary file's suffix."""
    if not dst_fmt.writable:
        raise PortError(
            f"DST {dst}: {dst_fmt.description} files are read here, not written; write another format "
            f"(.pth, .safetensors, .weights.h5, .params, ...)"
        )
    if src is not None and os.path.lexists(dst) and dst.resolve() == src.resolve():
        raise PortError(f"DST {dst} is SRC: write the port to another file")
    if dst_fmt.names and not dst.name.endswith(dst_fmt.names):
        wanted = " or ".join(dst_fmt.names)
        known = sorted((s for f in FORMATS.values() for s in f.suffixes), key=len, reverse=True)
        stem = next((dst.name[: -len(s)] for s in known if dst.name.endswith(s)), dst.name.removesuffix(dst.suffix))
        raise PortError(
            f"DST {dst}: {dst_fmt.framework} loads {dst_fmt.description} only from a name ending in {wanted} "
            f"(it refuses others); name it e.g. {stem}{dst_fmt.names[0]}"
        )
    suffix = next((s for s in dst_fmt.suffixes if dst.name.endswith(s)), dst.suffix)
    if dst_fmt.layout == "directory":
        deploy.check_directory_output(dst)
        return suffix
    try:
        for path in deploy.outputs(dst, dst_fmt.layout):
            if src is not None and path.exists() and path.resolve() == src.resolve():
                raise PortError(f"DST {path} is SRC: write the port to another file")
            files.check_output(path, force, "DST", suffix=suffix)
    except files.OutputError as e:
        raise PortError(str(e)) from None
    return suffix


def _as_float32(params: Params, src: Path, notes: list[str]) -> Params:
    converted: dict[str, int] = {}
    out = {}
    for key, value in params.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and value.dtype.byteorder == ">":  # as numpy writes on a big-endian machine
            what = f"big-endian {value.dtype.newbyteorder('=').name}"
            converted[what] = converted.get(what, 0) + 1
            value = value.astype(value.dtype.newbyteorder("="))
        if value.dtype in (np.float16, np.float64):
            converted[str(value.dtype)] = converted.get(str(value.dtype), 0) + 1
            value = value.astype(np.float32)
        elif value.dtype != np.float32:
            raise PortError(f"{src}: {key!r} is {value.dtype}; expected floating-point weights")
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            raise PortError(f"{src}: {key!r} holds {bad} NaN or Inf values; refusing to port it")
        out[key] = value
    notes += [f"converted {n} {dtype} tensors to float32" for dtype, n in converted.items()]
    return out


def _declared(raw_tensors: dict[str, Tensor], scheme: str, p: spec.Plan, src: Path) -> dict[str, Tensor]:
    """The file's declared tensors under canonical names (names only: nothing read)."""
    declared: dict[str, Tensor] = {}
    for key, canonical in naming.canonical_names(raw_tensors, scheme, p).items():
        t = raw_tensors[key]
        if canonical in declared and declared[canonical].shape != t.shape:
            raise PortError(f"{src}: {key!r} is a second copy of {canonical!r} but declares {t.shape}")
        declared.setdefault(canonical, t)
    return declared


def _diagnose(params: dict[str, Tensor], src: Path, v: spec.Variant, num_classes: int) -> None:
    """Say what a checkpoint of another variant or class count looks like, before the
    strict key-by-key check lists every difference (from the declared shapes)."""
    branch3 = params.get("inception3a.branch3.1.conv.weight")
    conv1 = params.get("conv1.conv.weight")
    has_bn = any(".bn." in k for k in params)
    channels = conv1.shape[1] if conv1 is not None and conv1.ndim == 4 else v.input.channels
    depth = sum(f"inception3a.branch3.{i}.conv.weight" in params for i in range(1, 4)) or v.branch3.depth

    def like(kernel: int) -> str:
        fits = [
            n
            for n, c in spec.VARIANTS.items()
            if c.branch3.kernel == kernel
            and c.branch3.depth == depth
            and (c.convs.norm is not None) == has_bn
            and c.input.channels == channels
        ]
        return " or ".join(f"`{n}`" for n in fits) or "no known variant"

    if branch3 is not None and branch3.ndim == 4 and branch3.shape[-1] != v.branch3.kernel:
        k = branch3.shape[-1]
        raise PortError(
            f"{src}: {k}x{k} branch found (inception3a.branch3.1.conv.weight is "
            f"{branch3.shape}): this is {like(k)}, not `{v.name}`"
        )
    if params and (has_bn != (v.convs.norm is not None) or channels != v.input.channels):
        found = ("BatchNorm found" if has_bn else "conv biases and no BatchNorm found") + (
            f", {channels} input channels" if channels != v.input.channels else ""
        )
        raise PortError(f"{src}: {found}: this is {like(v.branch3.kernel)}, not `{v.name}`")
    fc = params.get("fc.weight")
    in_features = spec.resolve(v).fc.in_features
    if fc is not None and fc.ndim == 2 and fc.shape[1] == in_features and fc.shape[0] != num_classes:
        if not 1 <= fc.shape[0] <= spec.MAX_CLASSES:
            raise PortError(
                f"{src}: fc.weight declares {fc.shape[0]:,} classes ({fc.shape}); "
                f"a classifier has 1 to {spec.MAX_CLASSES:,}"
            )
        raise PortError(
            f"{src}: the checkpoint has {fc.shape[0]} classes (fc.weight is {fc.shape}), "
            f"not {num_classes}: pass --num-classes {fc.shape[0]}"
        )


def _resolve(variant: str, num_classes: int, aux: bool, transform_input: bool) -> spec.Plan:
    try:
        return spec.resolve(variant, num_classes, aux, transform_input)
    except spec.SpecError as e:  # name the command-line option
        raise PortError(str(e).replace("num_classes:", "--num-classes:", 1)) from None


@dataclass
class _Verified:
    target_framework: str
    agreement: dict[str, Agreement]
    changed: list[str]
    overflow: list[str]  # outputs that are not finite, "logits (torch)"
    weighed: bool = True  # False: the written file keeps no weights by name to compare


def _verify(
    params: Params, p: spec.Plan, source: Native, tmp: Path, dst_fmt: Format, reference: str, writer: Native | None
) -> _Verified:
    """Load the written file into the target framework (into the writer's model, wiped
    to NaN first, when it is not the source's), run both on one seeded input."""
    source_backend, source_model = source
    into = writer if writer is not None and writer[1] is not source_model else None
    target_backend, target_model = dst_fmt.load(tmp, p, reference, into)
    size = p.input_size
    x = np.random.default_rng(0).standard_normal((VERIFY_BATCH, p.in_channels, size, size)).astype(np.float32)
    # A deployment graph may return the logits alone (deploy.Runtime.carries_aux).
    aux = bool(p.aux) and spec.aux_admits(p, size) and getattr(target_backend, "carries_aux", True)
    ours = source_backend.forward(source_model, x, aux=aux)
    theirs = target_backend.forward(target_model, x, aux=aux)  # a fresh process: run first, then its weights
    canonical = target_backend.to_canonical(target_model)  # None: a format that keeps no names (SavedModel)
    if canonical is not None and not getattr(target_backend, "carries_aux", True):
        params = {k: v for k, v in params.items() if k in canonical or not k.startswith(("aux1.", "aux2."))}
    changed = [] if canonical is None else identical(params, canonical)
    names = ["logits", *(h.name for h in reversed(p.aux))] if aux else ["logits"]
    ours, theirs = (ours, theirs) if aux else ((ours,), (theirs,))
    with np.errstate(all="ignore"):
        agree = {n: agreement(a, b, logits=True) for n, a, b in zip(names, ours, theirs, strict=True)}
    overflow = [  # in either framework: float32 overflow need not happen at the same layer in both
        f"{n} ({fw})"
        for n, a, b in zip(names, ours, theirs, strict=True)
        for fw, out in ((source_backend.name, a), (target_backend.name, b))
        if not np.isfinite(out).all()
    ]
    return _Verified(target_backend.name, agree, changed, overflow, canonical is not None)


def _overflow(src: Path, params: Params, outputs: list[str]) -> PortError:
    key = max(params, key=lambda k: float(np.abs(params[k]).max(initial=0)))
    largest = float(np.abs(params[key]).max(initial=0))
    return PortError(
        f"{src}: the weights were copied bit-identically, but the {', '.join(dict.fromkeys(outputs))} overflow float32 "
        f"(inf or NaN) on the seeded input, so the port cannot be verified: the checkpoint holds values as "
        f"large as {largest:.1e} (in {key!r}); nothing was written"
    )


def _read_params(
    src: Path, src_fmt: Format, variant: str, num_classes: int, transform_input: bool
) -> tuple[spec.Plan, Params, Raw, list[str], bool]:
    """(plan, canonical float32 parameters, raw file, notes, aux heads): every
    declaration checked before any tensor is read, then the tensors."""
    has_aux = spec.VARIANTS[variant].aux is not None
    p = _resolve(variant, num_classes, has_aux, transform_input)
    raw = read(src, src_fmt, p)
    declared = _declared(raw.tensors, raw.scheme, p, src)
    _diagnose(declared, src, spec.VARIANTS[variant], num_classes)
    aux = any(k.startswith("aux1.") for k in declared)
    if aux and not has_aux:
        raise PortError(f"{src}: aux head weights found, but `{variant}` has no aux heads")
    if raw.transform_input and spec.VARIANTS[variant].input.transform is None:
        raise PortError(f"{src}: records transform_input on, but `{variant}` defines no input transform")
    p = _resolve(variant, num_classes, aux, transform_input or bool(raw.transform_input))
    try:
        bounds.check(src, p, declared)
    except bounds.BoundsError as e:
        raise PortError(str(e)) from None
    halves = sum(t.dtype == "bfloat16" for t in declared.values())
    params, notes = naming.to_canonical(materialise(src, src_fmt, raw), raw.scheme, p)
    notes = raw.notes + notes + ([f"names: {raw.scheme}"] if raw.scheme != "canonical" else [])
    notes += [f"converted {halves} bfloat16 tensors to float32 (exact)"] if halves else []
    params = _as_float32(params, src, notes)
    try:
        validate(p, params)
    except CanonicalError as e:
        raise PortError(f"{src}: {e}") from None
    return p, {key: params[key] for key in canonical_shapes(p)}, raw, notes, aux  # files may store keys sorted


def _native_source(raw: Raw, p: spec.Plan, params: Params, src: Path, src_fw: str) -> Native:
    """The source in its own framework: loaded as its users load it where the format
    allows, checked to hold what was read; else built from the tensors."""
    if raw.native is None:
        return built(src_fw, p, params)
    try:
        native = raw.native(p)
    except Exception as e:  # noqa: BLE001 - the framework's own loader refused the file: say so, with the file
        raise PortError(f"{src}: {src_fw} cannot load it: {type(e).__name__}: {meaningful(e)}") from None
    b, model = native
    if getattr(model, "plan", p) != p:
        return built(src_fw, p, params)
    differ = identical(params, {k: v.astype(np.float32) for k, v in b.to_canonical(model).items()})
    if differ:
        raise PortError(f"{src}: {src_fw} reads other values than the file holds at {differ[:3]}")
    return native


@dataclass
class Checkpoint:
    """A checkpoint read and checked against the spec: canonical parameters in canonical
    order, and the plan they fit (aux heads as the file has them)."""

    path: Path
    format: Format
    plan: spec.Plan
    params: Params
    notes: list[str]
    raw: Raw


def _fits(src: Path, src_fmt: Format, variant: str, num_classes: int | None) -> bool:
    """Whether the file's declared tensors are exactly ``variant``'s (aux heads as the
    file has them; its classifier's class count unless ``num_classes`` is given), and
    the variant it records, if any, is this one. Names and shapes only: nothing read."""
    v = spec.VARIANTS[variant]
    try:
        p = spec.resolve(v, v.head.classes if num_classes is None else num_classes, v.aux is not None)
        raw = read(src, src_fmt, p)
        if raw.variant is not None and raw.variant != variant:
            return False
        declared = _declared(raw.tensors, raw.scheme, p, src)
        fc = declared.get(f"{p.fc.name}.weight")
        classes = fc.shape[0] if num_classes is None and fc is not None and fc.ndim == 2 else p.num_classes
        aux = any(k.startswith("aux1.") for k in declared)
        expected = canonical_shapes(spec.resolve(v, classes, aux))
    except (PortError, spec.SpecError):  # what this variant cannot read, or a class count it refuses
        return False
    return {k: tuple(t.shape) for k, t in declared.items()} == {k: tuple(s) for k, s in expected.items()}


def infer_variant(src: Path, src_fmt: Format, num_classes: int | None = None) -> tuple[str, str]:
    """(the one variant the file's tensors fit, the line that says so), for a port
    without ``--variant``; a PortError naming the variants when several or none fit."""
    fits = [name for name in spec.VARIANTS if _fits(src, src_fmt, name, num_classes)]
    if len(fits) == 1:
        said = "its tensors, and the variant it records if any; --variant chooses another"
        return fits[0], f"variant {fits[0]}: the only variant the file fits ({said})"
    if fits:
        listed = ", ".join(f"`{name}`" for name in fits[:-1]) + f" and `{fits[-1]}`"
        raise PortError(
            f"{src}: its tensors fit {listed} (the same tensors, another network around them): "
            f"pass --variant {fits[0]} or another"
        )
    raise PortError(
        f"{src}: its tensors fit no variant as they are; pass --variant with the network it holds, "
        f"and port lists what differs"
    )


def read_checkpoint(
    src: str | Path,
    variant: str | None,
    src_format: str | Format | None = None,
    num_classes: int | None = None,
    transform_input: bool = False,
    drop_background: bool = False,
) -> Checkpoint:
    """Read ``src`` (any format and naming) and check it strictly against ``variant``:
    what ``port`` does before converting, and ``diff`` before comparing. Every
    declaration is checked before any tensor is read. ``transform_input``: True turns
    the variant's input transform on; otherwise it is what the file records (its
    metadata, config or graph: ``Raw.transform_input``), off where it records none.
    ``variant``: None takes the one variant whose tensors the file's fit
    (:func:`infer_variant`), and says so in the notes. ``drop_background``: remove class
    0 of a 1001-class classifier (TF-slim's "background"), leaving ImageNet's 1000.
    Raises PortError naming the file, key or option."""
    src = _source(Path(src))
    src_fmt = src_format if isinstance(src_format, Format) else infer(src, src_format, "--from")
    told = []
    if variant is None:
        variant, said = infer_variant(src, src_fmt, num_classes)
        told.append(said)
    if variant not in spec.VARIANTS:
        raise PortError(f"--variant: unknown {variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    if num_classes is None:
        num_classes = spec.VARIANTS[variant].head.classes
    _resolve(variant, num_classes, False, transform_input)  # the options, before reading anything
    p, params, raw, notes, _ = _read_params(src, src_fmt, variant, num_classes, transform_input)
    notes[:0] = told
    if drop_background:
        p, params = _drop_background(src, p, params, notes)
    return Checkpoint(src, src_fmt, p, params, notes, raw)


BACKGROUND_CLASSES = 1001  # TF-slim's ImageNet classifiers: class 0 is "background", then ImageNet's 1000


def _drop_background(src: Path, p: spec.Plan, params: Params, notes: list[str]) -> tuple[spec.Plan, Params]:
    """The classifier without its row 0, TF-slim's background class: logit i is then
    ImageNet class i (it was logit i + 1)."""
    if p.num_classes != BACKGROUND_CLASSES or p.aux:
        raise PortError(
            f"--drop-background: removes class 0 of a {BACKGROUND_CLASSES}-class classifier without aux heads "
            f"(TF-slim's); {src} has {p.num_classes} classes" + (" and aux heads" if p.aux else "")
        )
    fc = p.fc.name
    dropped = {
        **params,
        f"{fc}.weight": params[f"{fc}.weight"][1:].copy(),
        f"{fc}.bias": params[f"{fc}.bias"][1:].copy(),
    }
    notes.append(
        f"dropped class 0 (background): {BACKGROUND_CLASSES} -> {BACKGROUND_CLASSES - 1} classes, "
        "logit i is ImageNet class i"
    )
    return spec.with_options(p, num_classes=BACKGROUND_CLASSES - 1), dropped


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
) -> PortResult:
    """Convert ``src`` to ``dst`` and prove it. Raises PortError (bad input, or an
    output that cannot be written; nothing written) or VerificationError (the written
    file disagrees; nothing written). ``variant`` (None: the one the file's tensors fit)
    and ``drop_background``: see :func:`read_checkpoint`."""
    start = time.perf_counter()
    src, dst = _source(Path(src)), Path(dst)
    src_fmt, dst_fmt = infer(src, src_format, "--from"), infer(dst, dst_format, "--to")
    suffix = _check_paths(src, dst, dst_fmt, force)
    checkpoint = read_checkpoint(src, variant, src_fmt, num_classes, transform_input, drop_background)
    p, params, notes, raw = checkpoint.plan, checkpoint.params, checkpoint.notes, checkpoint.raw
    num_classes, aux = p.num_classes, bool(p.aux)
    transform, unrecorded = _transform_said(src_fmt, raw, p, transform_input)
    log(
        f"read   {src} ({src_fmt.description}): {len(params)} tensors, {p.variant.name}, "
        f"{num_classes} classes, aux heads {'yes' if aux else 'no'}{transform}"
    )
    for note in notes:
        log(f"       {note}")
    if unrecorded:
        notes.append(unrecorded)
        log(f"note   {src_fmt.name}: {unrecorded}")
    blind = unchecked(src_fmt, raw)
    if blind:
        log(f"note   {src_fmt.name}: {blind}")
    return _write(src, src_fmt.name, src_fmt.framework, raw, p, params, notes, dst, dst_fmt, suffix, force, log, start)


# Where well-known weights of a variant expect its input transform.
PRETRAINED = {"googlenet_bn": " (torchvision's pretrained googlenet was trained with it)"}


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _transform_said(fmt: Format, raw: Raw, p: spec.Plan, asked: bool) -> tuple[str, str]:
    """(the read line's words for transform_input, a note where the file does not
    record it or records it otherwise than asked); both "" for a variant without one."""
    if p.variant.input.transform is None:
        return "", ""
    recorded, on = raw.transform_input, p.options.transform_input
    if recorded is None:
        said = f", transform_input {_on(on)} ({'--transform-input' if asked else 'not recorded in the file'})"
        note = (
            ""
            if asked
            else f"{fmt.description} files do not record transform_input: read as off; pass --transform-input "
            f"if the weights expect {p.variant.name}'s input transform{PRETRAINED.get(p.variant.name, '')}"
        )
        return said, note
    if asked and not recorded:
        return ", transform_input on (--transform-input)", "the file records transform_input off: on, as asked"
    return f", transform_input {_on(on)} (recorded in the file)", ""


def _loading(dst: Path, dst_fmt: Format, p: spec.Plan, framework: str) -> str:
    """The load line: DST loaded as a reader's process loads it, transform_input said."""
    options = p.options
    build = (
        f"{p.variant.name!r}, num_classes={options.num_classes}, aux_logits={options.aux_logits}, "
        f"transform_input={options.transform_input}"
    )
    line = dst_fmt.loading.format(
        path=repr(str(dst)), params=repr(str(deploy.params_of(dst))), framework=f"impl_{framework}", build=build
    )
    if p.variant.input.transform is not None and dst_fmt.keeps_transform:
        joint = "; " if "#" in line else "  # "
        line += f"{joint}transform_input={options.transform_input} is in {dst_fmt.keeps_transform}"
    return line


def _check_recorded(tmp: Path, dst: Path, dst_fmt: Format, p: spec.Plan) -> None:
    """The written file records the plan's transform_input where its format keeps one:
    the verification above loads it into a model built from the plan, which would not
    see a record that says otherwise."""
    if not dst_fmt.keeps_transform or not dst_fmt.readable:  # write-only graphs: their outputs proved it
        return
    recorded = read(tmp, dst_fmt, p).transform_input
    if recorded != p.options.transform_input:
        raise VerificationError(
            f"{dst}: the written file records transform_input {recorded}, not {p.options.transform_input}; "
            f"nothing was written"
        )


def _write(
    src: Path,
    src_format: str,
    src_framework: str | None,
    raw: Raw,
    p: spec.Plan,
    params: Params,
    notes: list[str],
    dst: Path,
    dst_fmt: Format,
    suffix: str,
    force: bool,
    log: Callable[[str], None],
    start: float,
) -> PortResult:
    """Write ``params`` as ``dst_fmt`` beside DST, verify it against the source (built
    in ``src_framework``, or loaded from ``raw`` as its users load it), put it in place."""
    variant = p.variant.name
    reference = installed_reference() if None in (src_framework, dst_fmt.framework) else ""
    src_fw = src_framework or reference
    _space(dst, sum(v.nbytes for v in params.values()))
    try:
        data, writer = dst_fmt.write(params, p)
    except PortError:
        raise
    except Exception as e:  # the framework could not write it
        full = _out_of_space(e)
        if full:
            raise PortError(f"DST {dst}: writing {dst_fmt.description} failed: {full}; nothing was written") from None
        raise VerificationError(
            f"{dst}: writing {dst_fmt.description} failed ({type(e).__name__}: {meaningful(e)}); nothing was written"
        ) from e
    _space(dst, deploy.describe(data))
    if dst_fmt.limits:
        notes.append(dst_fmt.limits)
        log(f"note   {dst_fmt.name}: {dst_fmt.limits}")
    if p.options.transform_input and not dst_fmt.keeps_transform:
        lost = (
            f"{dst_fmt.description} files cannot record transform_input: build the model with "
            f"transform_input=True to load it (the load line does)"
        )
        notes.append(lost)
        log(f"note   {dst_fmt.name}: {lost}")
    with _staging(dst, dst_fmt, suffix, data) as (tmp, commit):
        del data
        source = _native_source(raw, p, params, src, src_fw)
        try:
            verified = _verify(params, p, source, tmp, dst_fmt, reference, writer)
        except PortError:
            raise
        except Exception as e:  # the file could not be loaded back
            full = _out_of_space(e)
            if full:
                raise PortError(
                    f"DST {dst}: reloading {dst_fmt.description} failed: {full}; nothing was written"
                ) from None
            raise VerificationError(
                f"{dst}: reloading {dst_fmt.description} failed ({type(e).__name__}: {meaningful(e)}); "
                f"nothing was written"
            ) from e
        result = PortResult(
            src,
            dst,
            src_format,
            dst_fmt.name,
            variant,
            p.options.asdict(),
            src_fw,
            verified.target_framework,
            verified.agreement,
            verified.changed,
            notes,
        )
        log(
            f"verify {src_fw} (source) vs {verified.target_framework} (written file), seeded input "
            f"{VERIFY_BATCH} x {p.in_channels} x {p.input_size} x {p.input_size}:"
        )
        for name, a in verified.agreement.items():
            log(
                f"       {name:<7} max abs {a.max_abs:.1e}, max rel {a.max_rel:.1e}, top-1 {a.top1:.0%}, "
                f"top-5 {a.top5:.0%}  {'PASS' if a.passed else 'FAIL'}"
            )
        changed = verified.changed
        if verified.weighed:
            said = "bit-identical" if not changed else f"{len(changed)} tensors changed: {changed[:3]}"
            log(f"       weights: {said}")
        else:
            log("       weights: not compared (the file keeps none under canonical names): the outputs above")
        if verified.overflow and not changed:
            raise _overflow(src, params, verified.overflow)
        if not result.passed:
            raise VerificationError(f"{dst}: the written file does not reproduce {src}; nothing was written")
        _check_recorded(tmp, dst, dst_fmt, p)
        commit(force)
    result.seconds = time.perf_counter() - start
    log(f"wrote  {dst} ({dst_fmt.description}) in {result.seconds:.1f} s")
    if dst_fmt.loading:
        log(f"load   {_loading(dst, dst_fmt, p, verified.target_framework)}")
    return result


# How frameworks that write through their own C++ streams say the disk or the
# process's file-size limit (ulimit -f) is full: TensorFlow passes strerror on, MXNet's
# dmlc stream only says the write was short.
_SPACE_WORDS = ("No space left", "File too large", "Disk quota exceeded", "FileStream.Write incomplete")


def _out_of_space(e: BaseException) -> str:
    """What a writer's exception says if the disk or the file-size limit was full ("" if
    it is about something else): the OS error in its chain, or the framework's words."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in files.SPACE_ERRORS:
            return files.describe_os_error(seen)
        seen = seen.__cause__ or seen.__context__
    text = str(e)
    word = next((w for w in _SPACE_WORDS if w in text), "")
    if not word:
        return ""
    return f"{word} (the disk or this process's file-size limit is full)"


@contextlib.contextmanager
def _staging(
    dst: Path, fmt: Format, suffix: str, data: bytes | dict[str, bytes]
) -> Iterator[tuple[Path, Callable[[bool], None]]]:
    """(the written output's path for verification, a commit putting it in place): a
    temporary file beside DST, or a directory beside it for a SavedModel or a Gluon pair
    (``deploy.Staged``). Nothing stays behind if the block fails."""
    if isinstance(data, dict):
        with deploy.staged(dst, fmt.layout, data) as stage:
            yield stage.path, stage.commit
        return
    with files.Temporary(dst, suffix, "DST") as tmp:
        try:
            tmp.write(data)
        except files.OutputError as e:
            raise PortError(str(e)) from None

        def commit(force: bool) -> None:
            try:
                tmp.commit(force)
            except files.OutputError as e:
                raise PortError(str(e)) from None

        yield tmp.name, commit


def _space(dst: Path, size: int) -> None:
    try:
        files.check_space(dst, size + (1 << 20), "DST")
    except files.OutputError as e:
        raise PortError(str(e)) from None


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
) -> PortResult:
    """A first checkpoint: the suite's seeded weights of ``variant``
    (``canonical.random_params(plan, seed)``, what ``check`` and ``diff`` run) written as
    any format ``port`` writes, and verified as ``port`` verifies. Seeded weights rather
    than ``default_params`` (build's initialisation: zero biases, BatchNorm statistics
    at 0 and 1): every tensor holds distinct values, so a port that loses one shows.
    ``aux_logits``: None gives the variant's aux heads where it has them."""
    start = time.perf_counter()
    dst = Path(dst)
    dst_fmt = infer(dst, dst_format, "--to")
    if variant not in spec.VARIANTS:
        raise PortError(f"--variant: unknown {variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    has_aux = spec.VARIANTS[variant].aux is not None
    if aux_logits and not has_aux:
        raise PortError(f"--aux-logits: `{variant}` has no aux heads")
    classes = spec.VARIANTS[variant].head.classes if num_classes is None else num_classes
    p = _resolve(variant, classes, has_aux if aux_logits is None else aux_logits, transform_input)
    source = Path(f"seeded-{variant}-seed{seed}")  # no file: named in the result and messages
    suffix = _check_paths(None, dst, dst_fmt, force)
    params = {k: v.astype(np.float32) for k, v in random_params(p, seed).items()}
    log(
        f"seeded {variant}: canonical.random_params(seed={seed}), {len(params)} tensors, "
        f"{p.num_classes} classes, aux heads {'yes' if p.aux else 'no'}"
        + (f", transform_input {_on(transform_input)}" if p.variant.input.transform is not None else "")
    )
    raw = Raw({}, "canonical", [])
    return _write(source, "seeded", None, raw, p, params, [], dst, dst_fmt, suffix, force, log, start)

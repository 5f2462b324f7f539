"""Reading a checkpoint and checking it strictly against the spec: what ``port`` does
before converting and ``diff`` before comparing. What a file declares is checked
(names, shapes, the variant and class count it fits: ``formats.bounds``) before any
tensor is read, then the tensors themselves.

Input dtypes: float16, bfloat16 and float64 tensors are converted to float32, and
big-endian ones to little-endian, with a notice (float64 -> float32 rounds; the others
are exact). Integer, sparse and quantised tensors other than ``num_batches_tracked`` are
refused, and so are NaN or Inf values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import spec
from ..canonical import CanonicalError, Params, canonical_shapes, validate
from ..reading import Tensor
from . import bounds, naming, paths
from .base import FileContents, Format, PortError, Source
from .registry import materialise, read


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


def _declared(contents: FileContents, plan: spec.Plan, src: Path) -> dict[str, Tensor]:
    """The file's declared tensors under canonical names (names only: nothing read)."""
    declared: dict[str, Tensor] = {}
    for key, canonical in naming.canonical_names(contents.tensors, contents.scheme, plan).items():
        t = contents.tensors[key]
        if canonical in declared and declared[canonical].shape != t.shape:
            raise PortError(f"{src}: {key!r} is a second copy of {canonical!r} but declares {t.shape}")
        declared.setdefault(canonical, t)
    return declared


def _diagnose(params: dict[str, Tensor], src: Path, variant: spec.Variant, num_classes: int) -> None:
    """Say what a checkpoint of another variant or class count looks like, before the
    strict key-by-key check lists every difference (from the declared shapes)."""
    branch3 = params.get("inception3a.branch3.1.conv.weight")
    conv1 = params.get("conv1.conv.weight")
    has_bn = any(".bn." in k for k in params)
    channels = conv1.shape[1] if conv1 is not None and conv1.ndim == 4 else variant.input.channels
    depth = sum(f"inception3a.branch3.{i}.conv.weight" in params for i in range(1, 4)) or variant.branch3.depth

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

    if branch3 is not None and branch3.ndim == 4 and branch3.shape[-1] != variant.branch3.kernel:
        k = branch3.shape[-1]
        raise PortError(
            f"{src}: {k}x{k} branch found (inception3a.branch3.1.conv.weight is "
            f"{branch3.shape}): this is {like(k)}, not `{variant.name}`"
        )
    if params and (has_bn != (variant.convs.norm is not None) or channels != variant.input.channels):
        found = ("BatchNorm found" if has_bn else "conv biases and no BatchNorm found") + (
            f", {channels} input channels" if channels != variant.input.channels else ""
        )
        raise PortError(f"{src}: {found}: this is {like(variant.branch3.kernel)}, not `{variant.name}`")
    fc = params.get("fc.weight")
    in_features = spec.resolve(variant).fc.in_features
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


def resolve_plan(variant: str, num_classes: int, aux: bool, transform_input: bool) -> spec.Plan:
    try:
        return spec.resolve(variant, num_classes, aux, transform_input)
    except spec.SpecError as e:  # name the command-line option
        raise PortError(str(e).replace("num_classes:", "--num-classes:", 1)) from None


def _read_params(
    source: Source, variant: str, num_classes: int, transform_input: bool
) -> tuple[spec.Plan, Params, FileContents, list[str], bool]:
    """(plan, canonical float32 parameters, the file as read, notes, aux heads): every
    declaration checked before any tensor is read, then the tensors."""
    src = source.path
    has_aux = spec.VARIANTS[variant].aux is not None
    p = resolve_plan(variant, num_classes, has_aux, transform_input)
    contents = read(source, p)
    declared = _declared(contents, p, src)
    _diagnose(declared, src, spec.VARIANTS[variant], num_classes)
    aux = any(k.startswith("aux1.") for k in declared)
    if aux and not has_aux:
        raise PortError(f"{src}: aux head weights found, but `{variant}` has no aux heads")
    if contents.transform_input and spec.VARIANTS[variant].input.transform is None:
        raise PortError(f"{src}: records transform_input on, but `{variant}` defines no input transform")
    p = resolve_plan(variant, num_classes, aux, transform_input or bool(contents.transform_input))
    try:
        bounds.check(src, p, declared)
    except bounds.BoundsError as e:
        raise PortError(str(e)) from None
    halves = sum(t.dtype == "bfloat16" for t in declared.values())
    params, notes = naming.to_canonical(materialise(source, contents), contents.scheme, p)
    notes = contents.notes + notes + ([f"names: {contents.scheme}"] if contents.scheme != "canonical" else [])
    notes += [f"converted {halves} bfloat16 tensors to float32 (exact)"] if halves else []
    params = _as_float32(params, src, notes)
    try:
        validate(p, params)
    except CanonicalError as e:
        raise PortError(f"{src}: {e}") from None
    return p, {key: params[key] for key in canonical_shapes(p)}, contents, notes, aux  # files may store keys sorted


@dataclass
class Checkpoint:
    """A checkpoint read and checked against the spec: canonical parameters in canonical
    order, and the plan they fit (aux heads as the file has them)."""

    source: Source
    plan: spec.Plan
    params: Params
    notes: list[str]
    contents: FileContents  # the file as read

    @property
    def path(self) -> Path:
        return self.source.path

    @property
    def format(self) -> Format:
        return self.source.format


def _fits(source: Source, variant: str, num_classes: int | None) -> bool:
    """Whether the file's declared tensors are exactly ``variant``'s (aux heads as the
    file has them; its classifier's class count unless ``num_classes`` is given), and
    the variant it records, if any, is this one. Names and shapes only: nothing read."""
    declared_variant = spec.VARIANTS[variant]
    try:
        p = spec.resolve(
            declared_variant,
            declared_variant.head.classes if num_classes is None else num_classes,
            declared_variant.aux is not None,
        )
        contents = read(source, p)
        if contents.variant is not None and contents.variant != variant:
            return False
        declared = _declared(contents, p, source.path)
        fc = declared.get(f"{p.fc.name}.weight")
        classes = fc.shape[0] if num_classes is None and fc is not None and fc.ndim == 2 else p.num_classes
        aux = any(k.startswith("aux1.") for k in declared)
        expected = canonical_shapes(spec.resolve(declared_variant, classes, aux))
    except (PortError, spec.SpecError):  # what this variant cannot read, or a class count it refuses
        return False
    return {k: tuple(t.shape) for k, t in declared.items()} == {k: tuple(s) for k, s in expected.items()}


def infer_variant(source: Source, num_classes: int | None = None) -> tuple[str, str]:
    """(the one variant the file's tensors fit, the line that says so), for a port
    without ``--variant``; a PortError naming the variants when several or none fit."""
    src = source.path
    fits = [name for name in spec.VARIANTS if _fits(source, name, num_classes)]
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
    src: str | Path | Source,
    variant: str | None,
    src_format: str | None = None,
    num_classes: int | None = None,
    transform_input: bool = False,
    drop_background: bool = False,
) -> Checkpoint:
    """Read ``src`` (any format and naming) and check it strictly against ``variant``:
    what ``port`` does before converting, and ``diff`` before comparing. Every
    declaration is checked before any tensor is read. ``transform_input``: True turns
    the variant's input transform on; otherwise it is what the file records (its
    metadata, config or graph: ``FileContents.transform_input``), off where it records none.
    ``variant``: None takes the one variant whose tensors the file's fit
    (:func:`infer_variant`), and says so in the notes. ``drop_background``: remove class
    0 of a 1001-class classifier (TF-slim's "background"), leaving ImageNet's 1000.
    ``src``: a path (``src_format``: its format, None: the one its name says), or a
    source already resolved (:func:`formats.paths.source`).
    Raises PortError naming the file, key or option."""
    source = src if isinstance(src, Source) else paths.source(src, src_format)
    told = []
    if variant is None:
        variant, said = infer_variant(source, num_classes)
        told.append(said)
    if variant not in spec.VARIANTS:
        raise PortError(f"--variant: unknown {variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    if num_classes is None:
        num_classes = spec.VARIANTS[variant].head.classes
    resolve_plan(variant, num_classes, False, transform_input)  # the options, before reading anything
    p, params, contents, notes, _ = _read_params(source, variant, num_classes, transform_input)
    notes[:0] = told
    if drop_background:
        p, params = _drop_background(source.path, p, params, notes)
    return Checkpoint(source, p, params, notes, contents)


BACKGROUND_CLASSES = 1001  # TF-slim's ImageNet classifiers: class 0 is "background", then ImageNet's 1000


def _drop_background(src: Path, plan: spec.Plan, params: Params, notes: list[str]) -> tuple[spec.Plan, Params]:
    """The classifier without its row 0, TF-slim's background class: logit i is then
    ImageNet class i (it was logit i + 1)."""
    if plan.num_classes != BACKGROUND_CLASSES or plan.aux:
        raise PortError(
            f"--drop-background: removes class 0 of a {BACKGROUND_CLASSES}-class classifier without aux heads "
            f"(TF-slim's); {src} has {plan.num_classes} classes" + (" and aux heads" if plan.aux else "")
        )
    fc = plan.fc.name
    dropped = {
        **params,
        f"{fc}.weight": params[f"{fc}.weight"][1:].copy(),
        f"{fc}.bias": params[f"{fc}.bias"][1:].copy(),
    }
    notes.append(
        f"dropped class 0 (background): {BACKGROUND_CLASSES} -> {BACKGROUND_CLASSES - 1} classes, "
        "logit i is ImageNet class i"
    )
    return spec.with_options(plan, num_classes=BACKGROUND_CLASSES - 1), dropped

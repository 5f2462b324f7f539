"""Port a GoogLeNet checkpoint from one format to another, proven equivalent.

``port(src, dst, variant)`` reads ``src`` (any format of ``formats.registry``, any
naming of ``formats.naming``), checks it strictly against the spec, writes ``dst``
through a temporary file in the same directory, then verifies before renaming it
into place: the written file is loaded into the target framework the way its users
load it (into a model whose every weight was first set to NaN, so nothing the file
lacks can survive), the source into its own framework, both run the same seeded input, and
logits (and aux logits) must agree within the float32 tolerance with identical
top-5, and every tensor must come back bit-identical. A failed verification
leaves ``dst`` untouched.

Input dtypes: float16 and float64 tensors are converted to float32, with a notice
(float64 -> float32 rounds; float16 -> float32 is exact). Integer tensors other than
``num_batches_tracked`` are refused, and so are NaN or Inf values.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import spec
from ..canonical import CanonicalError, Params, canonical_shapes, validate
from ..check.compare import Agreement, agreement, identical
from ..files import file_mode
from . import naming
from .registry import Format, Native, PortError, Raw, built, infer, installed_reference, read

__all__ = ["Checkpoint", "PortError", "PortResult", "VerificationError", "port", "read_checkpoint"]

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


def _check_paths(src: Path, dst: Path, force: bool) -> None:
    if not src.is_file():
        raise PortError(f"SRC {src}: no such file")
    if not os.access(src, os.R_OK):
        raise PortError(f"SRC {src}: not readable")
    if dst.exists() and dst.resolve() == src.resolve():
        raise PortError(f"DST {dst} is SRC: write the port to another file")
    if dst.is_dir():
        raise PortError(f"DST {dst} is a directory; give a file name")
    if dst.exists() and not force:
        raise PortError(f"DST {dst} already exists; pass --force to overwrite it")
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise PortError(f"DST {dst}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PortError(f"DST {dst}: directory {parent} is not writable")


def _as_float32(params: Params, src: Path, notes: list[str]) -> Params:
    converted: dict[str, int] = {}
    out = {}
    for key, value in params.items():
        value = np.asarray(value)
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


def _diagnose(params: Params, src: Path, v: spec.Variant, num_classes: int) -> None:
    """Say what a checkpoint of another variant or class count looks like, before the
    strict key-by-key check lists every difference."""
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
    if fc is not None and fc.ndim == 2 and fc.shape[0] != num_classes:
        raise PortError(
            f"{src}: the checkpoint has {fc.shape[0]} classes (fc.weight is {fc.shape}), "
            f"not {num_classes}: pass --num-classes {fc.shape[0]}"
        )


def _resolve(variant: str, num_classes: int, aux: bool, transform_input: bool) -> spec.Plan:
    try:
        return spec.resolve(variant, num_classes, aux, transform_input)
    except spec.SpecError as e:  # name the command-line option
        raise PortError(str(e).replace("num_classes:", "--num-classes:", 1)) from None


def _temporary(dst: Path, fmt: Format) -> Path:
    """An unused name beside ``dst``, ending as ``fmt`` needs (Keras insists on it)."""
    suffix = next((s for s in fmt.suffixes if dst.name.endswith(s)), fmt.suffixes[0])
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=f".tmp{suffix}", dir=dst.parent)
    except OSError as e:
        raise PortError(f"DST {dst}: cannot write in {dst.parent or '.'}: {e.strerror}") from None
    os.close(fd)
    return Path(name)


def _move_into_place(tmp: Path, dst: Path, force: bool) -> None:
    """Rename ``tmp`` to ``dst``. Without ``force``, a hard link, which fails if ``dst``
    appeared since it was checked: never a silent overwrite."""
    if force:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise PortError(f"DST {dst} appeared while porting; pass --force to overwrite it") from None
    except OSError:  # a file system without hard links: check again, then rename
        if dst.exists():
            raise PortError(f"DST {dst} appeared while porting; pass --force to overwrite it") from None
        os.replace(tmp, dst)


def _verify(
    params: Params, p: spec.Plan, source: Native, tmp: Path, dst_fmt: Format, reference: str, writer: Native | None
) -> tuple[str, dict[str, Agreement], list[str]]:
    """Load the written file into the target framework (into the writer's model, wiped
    to NaN first, when it is not the source's), run both on one seeded input."""
    source_backend, source_model = source
    into = writer if writer is not None and writer[1] is not source_model else None
    target_backend, target_model = dst_fmt.load(tmp, p, reference, into)
    changed = identical(params, target_backend.to_canonical(target_model))
    size = p.input_size
    x = np.random.default_rng(0).standard_normal((VERIFY_BATCH, p.in_channels, size, size)).astype(np.float32)
    aux = bool(p.aux) and spec.aux_admits(p, size)
    ours = source_backend.forward(source_model, x, aux=aux)
    theirs = target_backend.forward(target_model, x, aux=aux)
    names = ["logits", *(h.name for h in reversed(p.aux))] if aux else ["logits"]
    ours, theirs = (ours, theirs) if aux else ((ours,), (theirs,))
    agree = {n: agreement(a, b, logits=True) for n, a, b in zip(names, ours, theirs, strict=True)}
    return target_backend.name, agree, changed


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


def read_checkpoint(
    src: str | Path,
    variant: str,
    src_format: str | Format | None = None,
    num_classes: int | None = None,
    transform_input: bool = False,
) -> Checkpoint:
    """Read ``src`` (any format and naming) and check it strictly against ``variant``:
    what ``port`` does before converting, and ``diff`` before comparing. Raises
    PortError naming the file, key or option."""
    src = Path(src)
    src_fmt = src_format if isinstance(src_format, Format) else infer(src, src_format, "--from")
    if variant not in spec.VARIANTS:
        raise PortError(f"--variant: unknown {variant!r}; expected one of {', '.join(spec.VARIANTS)}")
    if num_classes is None:
        num_classes = spec.VARIANTS[variant].head.classes
    has_aux = spec.VARIANTS[variant].aux is not None
    p = _resolve(variant, num_classes, has_aux, transform_input)

    raw = read(src, src_fmt, p)
    try:
        params, notes = naming.to_canonical(raw.tensors, raw.scheme, p)
    except naming.NamingError as e:
        raise PortError(f"{src}: {e}") from None
    notes = raw.notes + notes + ([f"names: {raw.scheme}"] if raw.scheme != "canonical" else [])
    if raw.config is not None and (raw.config.get("variant"), raw.config.get("num_classes")) != (variant, num_classes):
        raise PortError(
            f"{src}: this Keras model is {raw.config.get('variant')} with "
            f"{raw.config.get('num_classes')} classes; pass --variant "
            f"{raw.config.get('variant')} --num-classes {raw.config.get('num_classes')}"
        )
    params = _as_float32(params, src, notes)
    _diagnose(params, src, spec.VARIANTS[variant], num_classes)
    aux = any(k.startswith("aux1.") for k in params)
    if aux and not has_aux:
        raise PortError(f"{src}: aux head weights found, but `{variant}` has no aux heads")
    p = _resolve(variant, num_classes, aux, transform_input)
    try:
        validate(p, params)
    except CanonicalError as e:
        raise PortError(f"{src}: {e}") from None
    params = {key: params[key] for key in canonical_shapes(p)}  # files may store keys sorted
    return Checkpoint(src, src_fmt, p, params, notes, raw)


def port(
    src: str | Path,
    dst: str | Path,
    variant: str,
    src_format: str | None = None,
    dst_format: str | None = None,
    num_classes: int | None = None,
    transform_input: bool = False,
    force: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> PortResult:
    """Convert ``src`` to ``dst`` and prove it. Raises PortError (bad input; nothing
    written) or VerificationError (the written file disagrees; nothing written)."""
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst, force)
    src_fmt, dst_fmt = infer(src, src_format, "--from"), infer(dst, dst_format, "--to")
    checkpoint = read_checkpoint(src, variant, src_fmt, num_classes, transform_input)
    p, params, notes, raw = checkpoint.plan, checkpoint.params, checkpoint.notes, checkpoint.raw
    num_classes, aux = p.num_classes, bool(p.aux)
    log(
        f"read   {src} ({src_fmt.description}): {len(params)} tensors, {p.variant.name}, "
        f"{num_classes} classes, aux heads {'yes' if aux else 'no'}"
    )
    for note in notes:
        log(f"       {note}")

    reference = installed_reference() if None in (src_fmt.framework, dst_fmt.framework) else ""
    src_fw = src_fmt.framework or reference
    tmp = _temporary(dst, dst_fmt)
    try:
        try:
            writer = dst_fmt.write(params, p, tmp)
            # the source in its own framework: as the reader loaded it, else from its tensors
            native = raw.native if raw.native and raw.native[1].plan == p else None
            source = native or built(src_fw, p, params)
            target_fw, agree, changed = _verify(params, p, source, tmp, dst_fmt, reference, writer)
        except PortError:
            raise
        except Exception as e:  # the file could not be written or loaded back
            raise VerificationError(
                f"{dst}: writing or reloading {dst_fmt.description} failed "
                f"({type(e).__name__}: {e}); nothing was written"
            ) from e
        result = PortResult(
            src, dst, src_fmt.name, dst_fmt.name, variant, p.options.asdict(), src_fw, target_fw, agree, changed, notes
        )
        log(
            f"verify {src_fw} (source) vs {target_fw} (written file), seeded input "
            f"{VERIFY_BATCH} x {p.in_channels} x {p.input_size} x {p.input_size}:"
        )
        for name, a in agree.items():
            log(
                f"       {name:<7} max abs {a.max_abs:.1e}, max rel {a.max_rel:.1e}, top-1 {a.top1:.0%}, "
                f"top-5 {a.top5:.0%}  {'PASS' if a.passed else 'FAIL'}"
            )
        log(f"       weights: {'bit-identical' if not changed else f'{len(changed)} tensors changed: {changed[:3]}'}")
        if not result.passed:
            raise VerificationError(f"{dst}: the written file does not reproduce {src}; nothing was written")
        os.chmod(tmp, file_mode())
        _move_into_place(tmp, dst, force)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    result.seconds = time.perf_counter() - start
    log(f"wrote  {dst} ({dst_fmt.description}) in {result.seconds:.1f} s")
    return result

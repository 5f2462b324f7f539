"""Proving a written file reproduces its source: the written file loaded into the
target framework the way its users load it (into a model whose every weight was first
set to NaN, so nothing the file lacks can survive), the source into its own framework,
both run on one seeded input; logits (and aux logits) must agree within the float32
tolerance with identical top-5, every tensor must come back bit-identical, and the
transform_input the file records must be the plan's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import spec
from ..canonical import Params
from ..check.compare import Agreement, agreement, identical
from .base import BackendModel, FileContents, Format, PortError, Source, built, error_line
from .registry import read

VERIFY_BATCH = 2


class VerificationError(RuntimeError):
    """The written file does not reproduce the source: nothing was written."""


@dataclass
class Verified:
    target_framework: str
    agreement: dict[str, Agreement]
    changed: list[str]
    overflow: list[str]  # outputs that are not finite, "logits (torch)"
    weighed: bool = True  # False: the written file keeps no weights by name to compare


def verify(
    params: Params,
    plan: spec.Plan,
    source: BackendModel,
    tmp: Path,
    dst_fmt: Format,
    reference: str,
    writer: BackendModel | None,
) -> Verified:
    """Load the written file into the target framework (into the writer's model, wiped
    to NaN first, when it is not the source's), run both on one seeded input."""
    source_backend, source_model = source
    into = writer if writer is not None and writer[1] is not source_model else None
    target_backend, target_model = dst_fmt.load(tmp, plan, reference, into)
    size = plan.input_size
    x = np.random.default_rng(0).standard_normal((VERIFY_BATCH, plan.in_channels, size, size)).astype(np.float32)
    # A deployment graph may return the logits alone (deploy.Runtime.carries_aux).
    aux = bool(plan.aux) and spec.aux_admits(plan, size) and getattr(target_backend, "carries_aux", True)
    ours = source_backend.forward(source_model, x, aux=aux)
    theirs = target_backend.forward(target_model, x, aux=aux)  # a fresh process: run first, then its weights
    canonical = target_backend.to_canonical(target_model)  # None: a format that keeps no names (SavedModel)
    if canonical is not None and not getattr(target_backend, "carries_aux", True):
        params = {k: v for k, v in params.items() if k in canonical or not k.startswith(("aux1.", "aux2."))}
    changed = [] if canonical is None else identical(params, canonical)
    names = ["logits", *(h.name for h in reversed(plan.aux))] if aux else ["logits"]
    ours, theirs = (ours, theirs) if aux else ((ours,), (theirs,))
    with np.errstate(all="ignore"):
        agree = {n: agreement(a, b, logits=True) for n, a, b in zip(names, ours, theirs, strict=True)}
    overflow = [  # in either framework: float32 overflow need not happen at the same layer in both
        f"{n} ({fw})"
        for n, a, b in zip(names, ours, theirs, strict=True)
        for fw, out in ((source_backend.name, a), (target_backend.name, b))
        if not np.isfinite(out).all()
    ]
    return Verified(target_backend.name, agree, changed, overflow, canonical is not None)


def overflow_error(src: Path, params: Params, outputs: list[str]) -> PortError:
    key = max(params, key=lambda k: float(np.abs(params[k]).max(initial=0)))
    largest = float(np.abs(params[key]).max(initial=0))
    return PortError(
        f"{src}: the weights were copied bit-identically, but the {', '.join(dict.fromkeys(outputs))} overflow float32 "
        f"(inf or NaN) on the seeded input, so the port cannot be verified: the checkpoint holds values as "
        f"large as {largest:.1e} (in {key!r}); nothing was written"
    )


def native_source(contents: FileContents, plan: spec.Plan, params: Params, src: Path, src_fw: str) -> BackendModel:
    """The source in its own framework: loaded as its users load it where the format
    allows, checked to hold what was read; else built from the tensors."""
    if contents.load_natively is None:
        return built(src_fw, plan, params)
    try:
        loaded = contents.load_natively(plan)
    except Exception as e:  # noqa: BLE001 - the framework's own loader refused the file: say so, with the file
        raise PortError(f"{src}: {src_fw} cannot load it: {type(e).__name__}: {error_line(e)}") from None
    package, model = loaded
    if getattr(model, "plan", plan) != plan:
        return built(src_fw, plan, params)
    differ = identical(params, {k: v.astype(np.float32) for k, v in package.to_canonical(model).items()})
    if differ:
        raise PortError(f"{src}: {src_fw} reads other values than the file holds at {differ[:3]}")
    return loaded


def check_recorded(tmp: Path, dst: Path, dst_fmt: Format, plan: spec.Plan) -> None:
    """The written file records the plan's transform_input where its format keeps one:
    the verification above loads it into a model built from the plan, which would not
    see a record that says otherwise."""
    if not dst_fmt.keeps_transform or not dst_fmt.readable:  # write-only graphs: their outputs proved it
        return
    recorded = read(Source(tmp, dst_fmt, tmp, tf_prefix=False), plan).transform_input
    if recorded != plan.options.transform_input:
        raise VerificationError(
            f"{dst}: the written file records transform_input {recorded}, not {plan.options.transform_input}; "
            f"nothing was written"
        )

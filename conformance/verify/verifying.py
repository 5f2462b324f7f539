"""``verify``: the user's GoogLeNet against the suite's reference implementation of the
same variant holding the same weights, stage by stage, on the same seeded inputs.

1. Which variant, and which of the user's tensors is which canonical key
   (:mod:`.pairing`): by names where a known scheme gives exactly the plan's keys,
   else by the order the model uses its layers. ``variant="auto"`` tries every
   variant; where several fit (the paper's and Caffe's nets hold the same tensors),
   the one whose outputs agree is taken.
2. With ``weights``, a checkpoint (anything ``port`` reads) is read against that
   variant and written into the user's own tensors first.
3. The reference (``impl_torch``, eager) built with the paired weights; both run at
   the variant's own size and an odd size it admits. Every stage the user's model
   exposes as a module output is paired with a spec stage by order and shape; the
   logits and any aux logits the model returns are compared as ``check`` compares
   (:func:`conformance.check.compare.agreement`, its tolerance).
4. Where they disagree, :func:`.diagnose.diagnose` replays the pitfall catalogue.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import spec
from ..check.compare import REL_TOL, Agreement, agreement
from ..check.inputs import inadmissible, odd_sizes
from ..formats.port import read_checkpoint
from ..progress import Steps
from . import convention, diagnose, taps, taps_gluon, taps_keras, taps_onnx, taps_saved, taps_script
from .options import check_options
from .pairing import Layer, Pairing, PairingError, by_names, by_structure, whose
from .results import DiagnosisResult, LogitsResult, OutputResult, Result, StageResult

Conversion = tuple[convention.Convention, convention.Convention]  # the reference's convention, the user's


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


def default_sizes(p: spec.Plan) -> list[int]:
    """The variant's own size and, of the odd sizes ``check`` runs, the one nearest it
    that the variant admits (97 for a GoogLeNet at 96: 239 would cost 6 times the work)."""
    own = p.input_size
    odd = sorted(
        (s for s in odd_sizes(p.variant.name) if s != own and not inadmissible(p.variant.name, s)),
        key=lambda s: abs(s - own),
    )
    return [own, *odd[:1]]


def seeded_input(p: spec.Plan, size: int, batch: int, seed: int) -> np.ndarray:
    """``check``'s input at this size: standard normal, NCHW float32."""
    rng = np.random.default_rng([seed, size])
    return rng.standard_normal((batch, p.in_channels, size, size)).astype(np.float32)


# --------------------------------------------------------------------------------------
# Which variant
# --------------------------------------------------------------------------------------


ADAPTERS = (taps_script, taps, taps_onnx, taps_saved, taps_gluon, taps_keras)  # TorchScript (an nn.Module too) first


def adapter(model: Any) -> Any:
    """The module that runs and reads this kind of model."""
    found = next((a for a in ADAPTERS if a.is_model(model)), None)
    if found is None:
        raise TypeError(
            "model: expected a torch.nn.Module, a keras.Model, a Gluon Block or an ONNX file, "
            f"got {type(model).__name__}"
        )
    return found


def _trace(model: Any, names: Sequence[str]) -> list[Layer]:
    """The model's layers in the order it uses them, from one image at the smallest
    size one of ``names`` runs (a model may refuse a size its variant does not run)."""
    fw = adapter(model)
    channels = fw.channels(model)
    # The smallest input each variant runs first: one image there costs a fraction of its own size's.
    sizes = sorted(
        {
            size
            for n in names
            if spec.VARIANTS[n].input.channels == channels
            for size in (spec.admitted(spec.resolve(n))[0][0], spec.VARIANTS[n].input.size)
        }
    )
    errors = []
    for size in sizes or [224]:
        try:
            return fw.layers(model, np.zeros((1, channels, size, size), np.float32))
        except Exception as e:  # noqa: BLE001 - the user's code may raise anything at a size it does not run
            errors.append(f"{size} x {size}: {type(e).__name__}: {e}")
    raise ValueError(f"MODEL: your model fails on a {channels}-channel input ({'; '.join(errors)[:300]})")


def _classes(layers: Sequence[Layer]) -> int | None:
    """The classifier's outputs: the last layer the forward pass used."""
    used = [x for x in layers if x.used and "weight" in x.tensors and x.kind in ("conv", "dense")]
    return int(used[-1].tensors["weight"].shape[0]) if used else None


def _plans(name: str, classes: int | None, transform_input: bool | None) -> list[spec.Plan]:
    v = spec.VARIANTS[name]
    transform = bool(transform_input) and v.input.transform is not None
    try:
        return [spec.resolve(name, classes, aux, transform) for aux in ((False, True) if v.aux else (False,))]
    except spec.SpecError:
        return []


def _pair(p: spec.Plan, state: Mapping[str, np.ndarray], layers: Sequence[Layer]) -> Pairing:
    return by_names(p, state) or by_structure(p, layers)


def fits(model: Any, variant: str, transform_input: bool | None) -> list[Pairing]:
    """The pairings of the model's tensors with ``variant`` (or, for auto, every variant
    that fits); PairingError with the first mismatch when none does."""
    names = list(spec.VARIANTS) if variant == "auto" else [variant]
    layers = _trace(model, names)
    state = adapter(model).state(model)
    classes = _classes(layers)
    found: list[Pairing] = []
    failed: dict[str, PairingError] = {}
    for name in names:
        for p in _plans(name, classes, transform_input):
            try:
                found.append(_pair(p, state, layers))
                break
            except PairingError as e:
                if name not in failed or e.matched > failed[name].matched:
                    failed[name] = e
    if found:
        return found
    if variant != "auto":
        others = fits_quietly(model, transform_input, layers, state, classes, exclude=variant)
        hint = f" (your model's tensors fit `{others[0]}`: pass --variant {others[0]})" if others else ""
        raise PairingError(f"{variant}: {failed[variant]}{hint}", failed[variant].matched)
    ranked = sorted(failed.items(), key=lambda item: -item[1].matched)
    closest = ranked[:1] + [(n, e) for n, e in ranked[1:2] if e.matched > 0]
    raise PairingError(
        "no variant's tensors fit your model; closest: " + "; ".join(f"{n}: {e}" for n, e in closest),
        closest[0][1].matched if closest else 0,
    )


def fits_quietly(
    model: Any,
    transform_input: bool | None,
    layers: Sequence[Layer],
    state: Mapping[str, np.ndarray],
    classes: int | None,
    exclude: str,
) -> list[str]:
    """The other variants the model's tensors fit."""
    out = []
    for name in spec.VARIANTS:
        if name == exclude:
            continue
        for p in _plans(name, classes, transform_input):
            try:
                _pair(p, state, layers)
            except PairingError:
                continue
            out.append(name)
            break
    return out


# --------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------


def _units(stage: spec.Stage) -> list[str]:
    if isinstance(stage, spec.ConvUnit):
        return [stage.name]
    if isinstance(stage, spec.InceptionUnit):
        return [op.name for branch in stage.branches for op in branch if isinstance(op, spec.ConvUnit)]
    if isinstance(stage, spec.ResidualUnit):
        return [stage.conv1.name, stage.conv2.name]
    return []


def _anchors(p: spec.Plan, pairing: Pairing) -> list[set[str]]:
    """For each stage, the user's layers that hold its units."""
    return [{m for u in _units(stage) for m in pairing.modules.get(u, ())} for stage in p.stages]


def _stage_rows(
    p: spec.Plan, size: int, ref: Mapping[str, np.ndarray], run: taps.Run, anchors: list[set[str]], rel_tol: float
) -> tuple[list[StageResult], list[str]]:
    """Each spec stage paired with a module output: after the stage before it, before
    the next stage's layers are called, of the stage's shape; among several (a conv's
    output before its ReLU and after it) the one closest to the reference."""
    rows, unexposed = [], []
    events = run.events
    pos = -1
    for i, stage in enumerate(p.stages):
        later = set().union(*anchors[i + 1 :]) if i + 1 < len(anchors) else set()
        start = pos
        if anchors[i]:
            start = next(
                (j for j in range(pos + 1, len(events)) if events[j].value is None and events[j].module in anchors[i]),
                pos,
            )
        end = next(
            (j for j in range(start + 1, len(events)) if events[j].value is None and events[j].module in later),
            len(events),
        )
        want = ref[stage.name]
        best: tuple[float, int, Agreement] | None = None
        for j in range(start + 1, end):
            value = events[j].value
            if value is None or value.shape != want.shape:
                continue
            with np.errstate(all="ignore"):
                a = agreement(want, value, rel_tol=rel_tol)
            if best is None or a.max_rel <= best[0] or (np.isnan(best[0]) and not np.isnan(a.max_rel)):
                best = (a.max_rel, j, a)
        if best is None:
            unexposed.append(stage.name)
            continue
        _, j, a = best
        rows.append(StageResult(stage.name, size, events[j].module, a.max_abs, a.max_rel, a.passed))
        pos = j
    return rows, unexposed


def _output_rows(
    p: spec.Plan, size: int, ref: Mapping[str, np.ndarray], run: taps.Run, rel_tol: float
) -> list[OutputResult]:
    names = ["logits"]
    if p.aux and "aux1" in ref and len(run.outputs) >= 1 + len(p.aux):
        names += [h.name for h in reversed(p.aux)]  # torchvision's order: logits, aux2, aux1
    rows = []
    for name, got in zip(names, run.outputs, strict=False):
        want = ref[name]
        if got.shape != want.shape:
            rows.append(OutputResult(name, size, float("inf"), float("inf"), 0.0, 0.0, False))
            continue
        with np.errstate(all="ignore"):
            a = agreement(want, got, logits=True, rel_tol=rel_tol)
        rows.append(OutputResult(name, size, a.max_abs, a.max_rel, a.top1, a.top5, a.passed))
    return rows


def _first_divergence(stages: list[StageResult], outputs: list[OutputResult], sizes: list[int]) -> str | None:
    for size in sizes:
        rows: list[StageResult | OutputResult] = [s for s in stages if s.size == size]
        rows += [o for o in outputs if o.size == size]
        for row in rows:
            if not row.passed:
                return row.name
    return None


def _logits(outputs: list[OutputResult]) -> LogitsResult:
    rows = [o for o in outputs if o.name == "logits"]
    return LogitsResult(
        max(o.max_abs for o in rows),
        max(o.max_rel for o in rows),
        min(o.top1 or 0.0 for o in rows),
        min(o.top5 or 0.0 for o in rows),
    )


def compare(
    model: Any,
    pairing: Pairing,
    sizes: Sequence[int],
    batch: int,
    seed: int,
    rel_tol: float = REL_TOL,
    progress: Steps | None = None,
    inputs_as: Conversion | None = None,
) -> tuple[Result, list[np.ndarray], list[np.ndarray]]:
    """The comparison at each size; also the inputs and the user's logits (for the
    diagnosis). ``inputs_as``: the user's input convention (from the reference's to the user's
    channels): the user's model is fed each input converted into it. ``progress`` is told
    each size."""
    import impl_torch

    p = pairing.plan
    reference = impl_torch.build(p.variant, p.num_classes, bool(p.aux), p.options.transform_input)
    impl_torch.from_canonical(reference, pairing.params)
    anchors = _anchors(p, pairing)
    calls = set().union(*anchors)
    stages: list[StageResult] = []
    outputs: list[OutputResult] = []
    unexposed: list[str] = []
    inputs, got = [], []
    for size in sizes:
        if progress is not None:
            progress(f"{p.variant.name} at {size} x {size}, batch {batch}: your model and the reference")
        x = seeded_input(p, size, batch, seed)
        ref = impl_torch.stages(reference, x, mode="eager")
        shapes = {tuple(ref[s.name].shape) for s in p.stages}
        theirs = x if inputs_as is None else convention.convert(x, inputs_as[0], inputs_as[1])
        try:
            run = adapter(model).run(model, theirs, shapes, calls)
        except Exception as e:  # noqa: BLE001 - the user's model may fail at a size its variant runs
            outputs.append(OutputResult("logits", size, float("inf"), float("inf"), 0.0, 0.0, False))
            unexposed.append(f"input {size}: your model fails: {type(e).__name__}: {str(e)[:200]}")
            continue
        rows, hidden = _stage_rows(p, size, ref, run, anchors, rel_tol)
        stages += rows
        unexposed += [h for h in hidden if h not in unexposed]
        outputs += _output_rows(p, size, ref, run, rel_tol)
        inputs.append(x)
        got.append(run.outputs[0])
    result = Result(
        p.variant.name,
        adapter(model).FRAMEWORK,
        all(s.passed for s in stages) and all(o.passed for o in outputs),
        _first_divergence(stages, outputs, list(sizes)),
        stages,
        _logits(outputs),
        [],
        outputs,
        p.options.asdict(),
        pairing.method,
        len(pairing.params),
        list(sizes),
        batch,
        seed,
        rel_tol,
        unexposed=unexposed,
    )
    return result, inputs, got


# --------------------------------------------------------------------------------------
# verify()
# --------------------------------------------------------------------------------------


def _weights(model: Any, pairings: list[Pairing], weights: str | Path | Mapping[str, np.ndarray]) -> str:
    """Read a checkpoint (or take canonical parameters) against the first fitting
    variant, write it into the user's tensors, and hand it to every pairing."""
    p = pairings[0].plan
    if isinstance(weights, Mapping):
        params, what = {k: np.asarray(v, np.float32) for k, v in weights.items()}, "the canonical parameters given"
    else:
        checkpoint = read_checkpoint(
            weights, p.variant.name, num_classes=p.num_classes, transform_input=p.options.transform_input
        )
        params, what = checkpoint.params, str(weights)
    missing = [k for k in pairings[0].params if k not in params]
    if missing:
        raise ValueError(
            f"--weights {what}: no {missing[0]!r}, which your model holds "
            f"({len(missing)} such tensors: {'aux heads' if missing[0].startswith('aux') else 'another variant'}?)"
        )
    for pairing in pairings:
        wrong = [k for k, v in pairing.params.items() if params[k].shape != v.shape]
        if wrong:
            raise ValueError(
                f"--weights {what}: {wrong[0]!r} is {params[wrong[0]].shape}, "
                f"your model's is {pairing.params[wrong[0]].shape}"
            )
        pairing.params = {k: params[k] for k in pairing.params}
    adapter(model).load(model, pairings[0].keys, params)
    return what


def verify(
    model: Any,
    variant: str = "auto",
    weights: str | Path | Mapping[str, np.ndarray] | None = None,
    input_sizes: Sequence[int] | None = None,
    batch: int = 2,
    seed: int = 0,
    transform_input: bool | None = None,
    rel_tol: float = REL_TOL,
    run_diagnosis: bool = True,
    progress: Steps | None = None,
    bgr: bool = False,
    input_scale: float | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> Result:
    """Check ``model`` (a ``torch.nn.Module`` or a ``keras.Model``) against the suite's reference of its
    variant. ``variant``: a variant name, or ``auto`` (the one whose tensors fit);
    ``weights``: a checkpoint any format ``port`` reads, or canonical parameters, written
    into the model first; ``input_sizes``: default the variant's own and an odd one it
    admits; ``transform_input``: None reads the model's own ``transform_input`` flag
    (torchvision's); ``bgr``, ``input_scale``, ``input_mean``, ``input_std``: the input
    convention the model expects where it is not the variant's (:mod:`.convention`).
    ``progress`` is told each step (pairing, each size, the diagnosis's replays).
    Raises PairingError (a ValueError) when the model's tensors do not
    fit, naming the first mismatch."""
    started = time.perf_counter()
    check_options(variant, input_sizes, batch, seed)
    convention.check(bgr, input_scale, input_mean, input_std)
    adapter(model)
    wanted = (bgr, input_scale, input_mean, input_std)
    if transform_input is None:
        transform_input = getattr(model, "transform_input", False) is True
    progress = Steps.silent() if progress is None else progress
    # Pairing and reading --weights are checks of the user's input: shown on a bar, not
    # logged, so that a refusal of it stays one line in a log.
    progress(f"pairing your model's tensors with {'every variant' if variant == 'auto' else variant}", logged=False)
    pairings = fits(model, variant, transform_input)
    if weights is not None and not isinstance(weights, Mapping):
        progress(f"reading --weights {weights}", logged=False)
    what = "your model's own" if weights is None else _weights(model, pairings, weights)
    chosen, result, inputs, got = None, None, [], []
    for pairing in pairings:  # where several variants fit, the first whose outputs agree
        sizes = list(input_sizes) if input_sizes else default_sizes(pairing.plan)
        declared = getattr(adapter(model), "input_size", lambda _: None)(model)  # a graph fixed to one size
        if not input_sizes and declared is not None:
            sizes = [declared]
        sizes = [s for s in sizes if not inadmissible(pairing.plan.variant.name, s)]
        if not sizes:
            continue
        reference = convention.variant(pairing.plan)
        theirs = convention.user(reference, adapter(model).channels(model), *wanted)
        inputs_as = None if theirs is None else (reference, theirs)
        attempt, xs, ys = compare(model, pairing, sizes, batch, seed, rel_tol, progress, inputs_as)
        if theirs is not None:
            attempt.input_convention = f"{theirs.describe()}; the reference's: {reference.describe()}"
        if chosen is None or attempt.agree:
            chosen, result, inputs, got = pairing, attempt, xs, ys
        if attempt.agree:
            break
    if chosen is None or result is None:
        raise ValueError(
            f"--input-size: no variant that fits your model runs at {', '.join(map(str, input_sizes or []))}"
        )
    result.weights = what
    result.also_fits = [p.plan.variant.name for p in pairings if p is not chosen]
    if not result.agree and run_diagnosis and inputs:
        findings = diagnose.diagnose(chosen.plan, chosen.params, inputs, got, rel_tol, progress)
        result.diagnosis = [DiagnosisResult(tuple(f.pitfalls), f.max_rel, tuple(f.where)) for f in findings]
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["Result", "verify", "whose"]

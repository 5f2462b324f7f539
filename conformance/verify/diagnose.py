"""``verify``'s diagnosis: which mistakes of the pitfall catalogue reproduce a user's logits.

The reference (PyTorch) holds the user's weights; each inference mistake of the
catalogue (:class:`conformance.teach.pitfalls.Replay`) and each pair of two is made in
it, and those whose logits agree with the user's within ``check``'s tolerance are the
diagnosis. Every mistake runs once per input, and only from where it changes the
network: a run starts from the reference's activations at the first stage a mistake
touches (a pair from the activations of its first mistake's run), and every stage a
mistake leaves alone keeps the module already built for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from impl_torch.layers import make_pool
from impl_torch.model import make_stage

from .. import spec
from ..check import compare
from ..progress import Steps
from ..teach.pitfalls import PITFALLS, Params, Replay, where

HEAD = "head"  # what a run reaches after the last stage: head pool, flatten, fc


@dataclass(frozen=True)
class Finding:
    pitfalls: tuple[str, ...]  # one catalogue name, or two for a pair of mistakes
    max_rel: float  # logits' max rel (to the reference's largest magnitude) between the
    # user's logits and the reference run with these mistakes made
    where: tuple[str, ...]  # the plan stage where each mistake is made


@dataclass
class _Net:
    """The reference network with some mistakes made: what it is and what it runs."""

    plan: spec.Plan
    params: Params
    inputs: tuple[Callable[[np.ndarray], np.ndarray], ...]  # the input changes, in order
    logits: tuple[Callable[[np.ndarray], np.ndarray], ...]  # the output changes, in order
    modules: list[nn.Module]  # one per stage
    head: tuple[nn.Module | None, torch.Tensor, torch.Tensor]  # head pool, fc weight, fc bias


class _Runs:
    """Builds and runs replayed networks, sharing modules and activations."""

    def __init__(self, plan: spec.Plan, params: Mapping[str, np.ndarray]) -> None:
        self.keys = _stage_keys(plan, params)
        self.base = self._net(plan, dict(params), (), (), None)

    def net(self, replays: Sequence[Replay], on: _Net | None = None) -> _Net:
        """``on`` (the reference by default) with ``replays`` made, in order."""
        on = on or self.base
        plan, params, inputs, logits = on.plan, on.params, on.inputs, on.logits
        for r in replays:
            if r.plan is not None:
                plan = r.plan(plan)
            if r.params is not None:
                params = r.params(plan, params)
            inputs += (r.inputs,) if r.inputs is not None else ()
            logits += (r.logits,) if r.logits is not None else ()
        return self._net(plan, params, inputs, logits, on)

    def _net(self, plan: spec.Plan, params: Params, inputs: tuple, logits: tuple, like: _Net | None) -> _Net:
        modules = []
        for i, stage in enumerate(plan.stages):
            same = like is not None and like.plan.stages[i] == stage and self._same_params(like, params, stage.name)
            modules.append(like.modules[i] if same and like is not None else _module(stage, params, self.keys))
        fc = plan.fc.name
        if like is not None and like.plan.head_pool == plan.head_pool and self._same_params(like, params, fc):
            head = like.head
        else:
            pool = None if plan.head_pool is None else make_pool(plan.head_pool).eval()
            head = (pool, _tensor(params[f"{fc}.weight"]), _tensor(params[f"{fc}.bias"]))
        return _Net(plan, params, inputs, logits, modules, head)

    def _same_params(self, like: _Net, params: Params, name: str) -> bool:
        return all(like.params[k] is params[k] for k in self.keys[name])

    def start(self, net: _Net, like: _Net) -> int | None:
        """Where ``net`` first runs otherwise than ``like``: -1 its input, a stage's index,
        len(stages) the head; None: its logits' path is the same (its logits may still be
        changed on the way out)."""
        if net.inputs != like.inputs or net.plan.transform != like.plan.transform:
            return -1
        for i, (mine, theirs) in enumerate(zip(net.modules, like.modules, strict=True)):
            if mine is not theirs:
                return i
        return None if net.head is like.head else len(net.modules)

    def run(self, net: _Net, x: np.ndarray, start: int, acts: list[torch.Tensor]) -> list[torch.Tensor]:
        """The activations of ``net`` on ``x``: the input (transformed), each stage's
        output, then the logits as computed (before any output change); those before
        ``start`` are taken from ``acts`` (a run of a network the same up to there)."""
        with torch.inference_mode():
            if start < 0:
                for change in net.inputs:
                    x = change(x)
                out = [_transformed(net.plan, torch.from_numpy(np.ascontiguousarray(x, np.float32)))]
                start = 0
            else:
                out = acts[: start + 1]
            for module in net.modules[start:]:
                out.append(module(out[-1]))
            pool, weight, bias = net.head
            features = out[-1] if pool is None else pool(out[-1])
            out.append(F.linear(torch.flatten(features, 1), weight, bias))
        return out

    @staticmethod
    def logits(net: _Net, acts: list[torch.Tensor]) -> np.ndarray:
        out = acts[-1].numpy()
        for change in net.logits:
            out = change(out)
        return out


def _stage_keys(plan: spec.Plan, params: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """The canonical keys each stage (and the classifier) holds."""
    names = [s.name for s in plan.stages] + [plan.fc.name]
    return {n: [k for k in params if k.startswith(f"{n}.")] for n in names}


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, np.float32))


def _module(stage: spec.Stage, params: Params, keys: Mapping[str, list[str]]) -> nn.Module:
    """The reference's module for ``stage`` holding ``params``: made on the meta device (no
    initial weights drawn only to be overwritten), then given the weights themselves
    (``torch.from_numpy`` shares their memory: nothing is copied)."""
    with torch.device("meta"):
        module = make_stage(stage)
    prefix = f"{stage.name}."
    state = {
        key: torch.zeros((), dtype=torch.long) if key.endswith("num_batches_tracked") else _tensor(params[prefix + key])
        for key in module.state_dict()
    }
    module.load_state_dict(state, assign=True)
    return module.eval()


def _transformed(plan: spec.Plan, x: torch.Tensor) -> torch.Tensor:
    """transform_input, as ``impl_torch.model.GoogLeNet.forward_stages`` applies it."""
    t = plan.transform
    if t is None:
        return x
    return torch.cat([x[:, o : o + 1] * t.scale[c] + t.shift[c] for c, o in enumerate(t.order)], 1)


# --------------------------------------------------------------------------------------
# The diagnosis
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A mistake of the catalogue that can be made in the plan."""

    name: str
    replay: Replay
    where: str  # the stage where it is made


Combo = tuple[Candidate, ...]  # one mistake, or two made in this order


def candidates(plan: spec.Plan, sizes: Sequence[int]) -> list[Candidate]:
    """The catalogue's inference mistakes that can be made in ``plan`` and change
    something at one of ``sizes`` at least, in catalogue order; where: at the first
    size where it changes something."""
    out = []
    for pitfall in PITFALLS.values():
        if pitfall.kind != "inference" or pitfall.replay is None:
            continue
        found = [where(pitfall, plan, size) for size in sizes]
        made = next((stage for stage, _ in found if stage is not None), None)
        if made is not None:
            out.append(Candidate(pitfall.name, pitfall.replay, made))
    return out


Keep = Callable[[Combo, list[np.ndarray]], bool]


def _logits(
    runs: _Runs,
    combos: Sequence[Combo],
    xs: Sequence[np.ndarray],
    nets: dict[Combo, _Net],
    keep: Keep | None = None,
    done: Callable[[int], None] = lambda count: None,
) -> dict[Combo, list[np.ndarray]]:
    """Each combination's logits on each of ``xs``; a combination that cannot be made
    with these weights, or does not run, is left out. A mistake's run starts where it
    changes the network, from the reference's activations; a pair's from its first
    mistake's, which are kept while the pairs opening with it run. ``nets``: the networks
    already made, by combination; those ``keep`` accepts stay there for the next call
    (with the first mistake of a pair kept). ``done`` is told how many combinations
    have run (or been left out), after each first mistake's."""
    base = [runs.run(runs.base, x, -1, []) for x in xs]
    out: dict[Combo, list[np.ndarray]] = {}
    counted = 0
    for a in dict.fromkeys(c[0] for c in combos):
        counted += sum(combo[0] == a for combo in combos)
        try:
            net_a = nets.get((a,)) or runs.net([a.replay])
            start = runs.start(net_a, runs.base)
            acts_a = [
                acts if start is None else runs.run(net_a, x, start, acts) for x, acts in zip(xs, base, strict=True)
            ]
        except (ValueError, KeyError, RuntimeError):
            done(counted)
            continue  # cannot be made with these weights (a kernel of another size), or does not run
        kept = False
        if (a,) in combos:
            out[(a,)] = [runs.logits(net_a, acts) for acts in acts_a]
            kept = keep is not None and keep((a,), out[(a,)])
        for combo in combos:
            if len(combo) != 2 or combo[0] != a:
                continue
            try:
                net = nets.get(combo) or runs.net([combo[1].replay], on=net_a)
                start = runs.start(net, net_a)
                out[combo] = [
                    runs.logits(net, acts if start is None else runs.run(net, x, start, acts))
                    for x, acts in zip(xs, acts_a, strict=True)
                ]
            except (ValueError, KeyError, RuntimeError):
                continue  # the two cannot be made together, or the network they give does not run
            if keep is not None and keep(combo, out[combo]):
                nets[combo], kept = net, True
        if kept:
            nets[(a,)] = net_a
        done(counted)
    return out


def _agreement(mine: Sequence[np.ndarray], got: Sequence[np.ndarray], rel_tol: float) -> tuple[float, bool]:
    """(worst max rel over the inputs, whether every input agrees as check's logits must)."""
    worst, passed = 0.0, True
    for ref, theirs in zip(mine, got, strict=True):
        if ref.shape != theirs.shape:
            return float("inf"), False
        a = compare.agreement(ref, theirs, logits=True, rel_tol=rel_tol)
        worst, passed = max(worst, a.max_rel), passed and a.passed
    return worst, passed


def _may_agree(mine: np.ndarray, got: np.ndarray, batch: np.ndarray, rel_tol: float) -> bool:
    """Whether logits ``mine`` of the first image leave it possible that the whole batch
    agrees. The batch's error is measured against the largest magnitude of the replayed
    batch, which is unknown here; if the batch agrees, that magnitude is at most
    max|``batch``| / (1 - rel_tol), so an image further off than ``rel_tol`` times that
    rules it out (and so do other top classes)."""
    if mine.shape != got.shape:
        return False
    scale = float(np.abs(batch).max()) / (1 - rel_tol)
    return compare.agreement(mine, got, logits=True, rel_tol=rel_tol, scale=scale).passed


def diagnose(
    plan: spec.Plan,
    params: Mapping[str, np.ndarray],
    inputs: Sequence[np.ndarray],
    got: Sequence[np.ndarray],
    rel_tol: float = compare.REL_TOL,
    progress: Steps | None = None,
) -> list[Finding]:
    """plan: the variant with the user's options (num_classes, aux_logits, transform_input);
    params: the user's weights in canonical keys and layouts; inputs: the NCHW float32 batches
    verify ran; got: the user's logits for each input (N x classes, numpy).
    Returns the mistakes that reproduce `got` within rel_tol (singles, and pairs of two), best first; [] if none.

    [] as well when the reference itself reproduces ``got`` (nothing to diagnose). A pair is
    reported only when neither of its mistakes alone reproduces ``got``. Every mistake and
    pair runs first on the first image alone, and only those that image leaves possible
    run on every input. ``progress`` counts the replays.
    """
    if not inputs or any(x.ndim != 4 or not len(x) for x in inputs):
        raise ValueError("inputs: expected one or more non-empty NCHW batches")
    if len(got) != len(inputs) or any(len(g) != len(x) for g, x in zip(got, inputs, strict=False)):
        raise ValueError(f"got: expected logits for each image of the {len(inputs)} inputs")
    runs = _Runs(plan, params)
    first, first_got = inputs[0][:1], got[0][:1]
    base = runs.logits(runs.base, runs.run(runs.base, first, -1, []))
    if _may_agree(base, first_got, got[0], rel_tol):
        reference = [runs.logits(runs.base, runs.run(runs.base, x, -1, [])) for x in inputs]
        if _agreement(reference, got, rel_tol)[1]:
            return []
    pool = candidates(plan, list(dict.fromkeys(x.shape[-1] for x in inputs)))
    combos: list[Combo] = [(c,) for c in pool] + list(itertools.combinations(pool, 2))
    nets: dict[Combo, _Net] = {}
    progress = Steps.silent() if progress is None else progress
    screened = _logits(
        runs,
        combos,
        [first],
        nets,
        keep=lambda combo, logits: _may_agree(logits[0], first_got, got[0], rel_tol),
        done=lambda count: progress.count(count, len(combos), "diagnosis: the catalogue on the first image", "replays"),
    )
    survivors = [c for c in combos if c in screened and _may_agree(screened[c][0], first_got, got[0], rel_tol)]
    found = []
    every = "diagnosis: the replays that may agree, on every input"
    for combo, logits in _logits(
        runs, survivors, inputs, nets, done=lambda count: progress.count(count, len(survivors), every, "replays")
    ).items():
        max_rel, passed = _agreement(logits, got, rel_tol)
        if passed:
            found.append(Finding(tuple(c.name for c in combo), max_rel, tuple(c.where for c in combo)))
    alone = {f.pitfalls[0] for f in found if len(f.pitfalls) == 1}
    found = [f for f in found if len(f.pitfalls) == 1 or not alone & set(f.pitfalls)]
    return sorted(found, key=lambda f: (len(f.pitfalls), f.max_rel))

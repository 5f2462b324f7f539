"""A verify result as ``check`` reports: a terminal table (100 columns) and a JSON document."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

from ..check.compare import percent
from ..files import atomic_write, finite
from .results import Result


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _finding(pitfalls: tuple[str, ...], max_rel: float, where: tuple[str, ...]) -> str:
    names = " and ".join(f"`{n}`" for n in pitfalls)
    places = " and ".join(dict.fromkeys(where))
    mistakes = "that mistake" if len(pitfalls) == 1 else "those mistakes"
    return (
        f"your model computes what the reference computes with {names} (logits agree to {max_rel:.0e} "
        f"with {mistakes}; made at {places})"
    )


def _convention(text: str) -> list[str]:
    """What the user's model was fed, where it is not the reference's inputs: two lines."""
    if text == "the reference's":
        return []
    return [f"  {'your input:' if i == 0 else '':<12}{part}" for i, part in enumerate(text.split("; "))]


def render(r: Result, model: str = "your model") -> str:
    options = ", ".join(f"{k}={v}" for k, v in r.options.items())
    lines = [
        f"GoogLeNet verify: {_cut(model, 82)}",
        f"  variant:    {r.variant} ({options})",
        f"  framework:  {r.framework} (your model); reference: impl_torch eager, holding the same weights",
        f"  pairing:    {r.pairing}, {r.tensors} tensors",
        f"  weights:    {r.weights}",
        f"  inputs:     batch {r.batch}, seeded standard normal (seed {r.seed}), NCHW float32",
        *(
            [
                f"  your input: {part}" if i == 0 else f"              {part}"
                for i, part in enumerate(r.input_convention.split("; "))
            ]
            if r.input_convention != "the reference's"
            else []
        ),
        f"  tolerance:  max relative error <= {r.rel_tol:.0e} (to the reference's largest magnitude);",
        "              logits: identical top-1 and top-5",
    ]
    if r.also_fits:
        lines.append(
            f"  also fits:  {', '.join(r.also_fits)} (the same tensors; yours agrees with {r.variant}, or neither)"
        )
    for size in r.sizes:
        lines += ["", f"  input {size} x {size}"]
        lines.append(f"    {'stage':<13} {'your module':<30} {'max abs':>9} {'max rel':>9}")
        for s in (s for s in r.stages if s.size == size):
            lines.append(
                f"    {s.name:<13} {_cut(s.module, 30):<30} {s.max_abs:9.1e} {s.max_rel:9.1e}   {_mark(s.passed)}"
            )
        for o in (o for o in r.outputs if o.size == size):
            topk = "" if o.top1 is None else f"   top-1 {percent(o.top1)}, top-5 {percent(o.top5)}"
            lines.append(
                f"    {o.name:<13} {'(returned)':<30} {o.max_abs:9.1e} {o.max_rel:9.1e}   {_mark(o.passed)}{topk}"
            )
    if r.unexposed:
        lines += ["", f"  not compared (no module output of its own): {', '.join(r.unexposed)}"]
    lines.append("")
    compared = len(r.stages) + len(r.outputs)
    if r.agree:
        lines.append(f"PASS: your model computes what {r.variant} computes ({compared} outputs compared)")
        return "\n".join(lines)
    failed = sum(not s.passed for s in r.stages) + sum(not o.passed for o in r.outputs)
    first = next((s for s in r.stages if s.name == r.first_divergence and not s.passed), None)
    where = f"{r.first_divergence}" + (
        f" (max rel {first.max_rel:.1e} at {first.size} x {first.size})" if first else ""
    )
    lines.append(f"  first divergence: {where}")
    for d in r.diagnosis:
        lines += textwrap.wrap(
            _finding(d.pitfalls, d.max_rel, d.where),
            98,
            initial_indent="  diagnosis: ",
            subsequent_indent=" " * 13,
            break_on_hyphens=False,  # pitfall names are hyphenated: never split one
        )
    if not r.diagnosis:
        lines.append("  diagnosis: no mistake of the catalogue, alone or in pairs, reproduces your outputs;")
        lines.append(f"             the mistake is in or before {r.first_divergence}")
    lines.append(f"FAIL: {failed} of {compared} outputs differ from {r.variant}'s; the first is {r.first_divergence}")
    return "\n".join(lines)


def to_json(r: Result) -> dict:
    doc = finite(dataclasses.asdict(r))
    assert isinstance(doc, dict)
    return doc


def write_json(r: Result, path: str | Path, overwrite: bool = False) -> Path:
    data = json.dumps(to_json(r), indent=1, allow_nan=False).encode()
    return atomic_write(path, data, overwrite=overwrite, option="--json")

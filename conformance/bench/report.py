"""A benchmark's figures as the table ``bench`` prints, and as JSON (``--json``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .. import spec
from ..files import atomic_write
from ..frameworks import usable_cores
from .results import Bench, Scaling
from .settings import ONNX, Settings


def ratios(b: Bench) -> dict[str, Any]:
    """Measured in this run: the fastest framework's default mode and the slowest's
    against ONNX Runtime, and each default against its framework's best mode."""
    batch = b.settings.batch
    infer = [r for r in b.runtimes if r.kind == "infer" and r.seconds]
    onnx = next((r.images_per_s(batch) for r in infer if r.framework == ONNX), None)
    defaults = {r.framework: r.images_per_s(batch) for r in infer if r.default}
    best = {fw: max(r.images_per_s(batch) for r in infer if r.framework == fw) for fw in defaults}
    found: dict[str, Any] = {"default vs best mode": {fw: defaults[fw] / best[fw] for fw in defaults}}
    if onnx and defaults:
        found["fastest default vs onnxruntime"] = max(defaults.values()) / onnx
        found["slowest default vs onnxruntime"] = min(defaults.values()) / onnx
    return found


def render(b: Bench) -> str:
    s, batch = b.settings, b.settings.batch
    p = spec.resolve(s.variant)
    lines = [
        f"GoogLeNet benchmark: {s.variant}, batch {batch}, {p.in_channels} x {s.size} x {s.size}, float32, "
        f"{b.cores} cores; best of {s.rounds} rounds x {s.calls} calls (median beside it)",
        f"  load average (1 min): {b.load[0]:.2f} before, {b.load[1]:.2f} after (other work on the cores slows all)",
    ]
    for kind, title in (("infer", "inference"), ("train", "training (one SGD step per call)")):
        rows = [r for r in b.runtimes if r.kind == kind and r.seconds]
        if not rows:
            continue
        fastest = max(r.images_per_s(batch) for r in rows)
        lines += [
            "",
            f"  {title:<36} {'images/s':>9} {'median':>8} {'x fastest':>10} {'first call':>11} {'peak RSS':>9}",
        ]
        for r in sorted(rows, key=lambda r: -r.images_per_s(batch)):
            first = "-" if r.first_s is None else f"{r.first_s:.1f} s"
            lines.append(
                f"  {r.label:<36} {r.images_per_s(batch):9.1f} {r.median_images_per_s(batch):8.1f} "
                f"{r.images_per_s(batch) / fastest:10.2f} {first:>11} {r.peak_mb or 0:6.0f} MB"
            )
    lines += [f"  skipped {r.framework}: {r.skipped}" for r in b.runtimes if r.skipped]
    if b.limit is not None:
        lines += [
            "",
            f"  limit: {b.limit.images_per_s:.0f} images/s, at the {b.limit.gflops:.0f} GFLOP/s of the fastest "
            f"kernel measured in the rounds ({b.limit.kernel}, torch) for {b.limit.gflop_per_image:.2f} GFLOP "
            "per image (2 x the spec's multiply-adds)",
        ]
    measured = [r for r in b.runtimes if r.seconds]
    versions = {r.version for r in measured if r.version}
    threads = {k: v for r in measured for k, v in r.threads.items()}
    lines.append(f"  versions: {'; '.join(sorted(versions))}")
    if threads:
        zero = " (tensorflow 0: one per core)" if any(k.startswith("tensorflow") for k in threads) else ""
        lines.append("  threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()) + zero)
    found = ratios(b)
    if "fastest default vs onnxruntime" in found:
        fastest, slowest = found["fastest default vs onnxruntime"], found["slowest default vs onnxruntime"]
        lines += ["", f"  default mode / onnxruntime: fastest framework {fastest:.2f}, slowest {slowest:.2f}"]
    per = found["default vs best mode"]
    if per:
        lines.append(
            "  each default / its framework's best mode: " + ", ".join(f"{fw} {v:.2f}" for fw, v in per.items())
        )
    lines.append(f"  benchmark took {b.seconds:.0f} s")
    return "\n".join(lines)


def to_json(b: Bench) -> dict[str, Any]:
    batch = b.settings.batch
    doc: dict[str, Any] = {
        "settings": dataclasses.asdict(b.settings),
        "cores": b.cores,
        "load_average": {"before": b.load[0], "after": b.load[1]},
        "seconds": b.seconds,
        "runtimes": [
            {
                **dataclasses.asdict(r),
                "label": r.label,
                "images_per_s": r.images_per_s(batch),
                "median_images_per_s": r.median_images_per_s(batch),
            }
            for r in b.runtimes
        ],
        "limit": None if b.limit is None else {**dataclasses.asdict(b.limit), "images_per_s": b.limit.images_per_s},
        "ratios": ratios(b),
    }
    return doc


def write_json(b: Bench, path: str | Path, overwrite: bool = False) -> Path:
    return atomic_write(path, json.dumps(to_json(b), indent=1).encode(), overwrite=overwrite)


def render_scaling(s: Settings, rows: list[Scaling]) -> str:
    lines = [
        f"data-parallel training of {s.variant}, global batch {s.batch} at {s.size} x {s.size}, "
        f"{usable_cores()} cores (each framework's own engine, each run in its own processes):",
        f"  {'framework':<10} {'workers':>7} {'images/s':>9} {'speedup':>7} {'efficiency':>10} "
        f"{'threads/worker':>14} {'first step':>10} {'peak MB':>8}",
    ]
    for r in rows:
        if r.failed:
            lines.append(f"  {r.framework:<10} {r.workers:>7}  FAILED: {r.failed}")
            continue
        eff = f"{r.efficiency:.2f}" if r.efficiency is not None else "-"
        speedup = f"{r.efficiency * r.workers:.2f}" if r.efficiency is not None else "-"
        lines.append(
            f"  {r.framework:<10} {r.workers:>7} {r.images_per_s:>9.1f} {speedup:>7} {eff:>10} {r.threads:>14} "
            f"{r.first_s:>9.1f}s {r.peak_mb:>8.0f}"
        )
    lines.append(
        "  speedup: images/s over the one-worker run's; efficiency: speedup / workers. Local workers share "
        f"this machine's {usable_cores()} cores, which one worker already uses, so a speedup above 1 needs "
        "cores the single worker leaves idle."
    )
    return "\n".join(lines)


def scaling_json(s: Settings, rows: list[Scaling]) -> dict[str, Any]:
    return {"settings": dataclasses.asdict(s), "scaling": [dataclasses.asdict(r) for r in rows]}

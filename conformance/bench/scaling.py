"""Data-parallel training, ``bench --train --workers 1,2``: each framework's engine with
each number of local workers, one run at a time, each in its own processes."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from ..frameworks import FRAMEWORKS
from ..progress import Steps
from ..train import launch
from ..world import World
from .results import Scaling
from .settings import Settings


def scaling(s: Settings, workers: list[int], steps: int = 3, progress: Steps | None = None) -> list[Scaling]:
    """Training images/s with each number of ``workers``: the global batch stays
    ``s.batch``, so more workers split it."""
    progress = Steps.silent() if progress is None else progress
    progress.total(len([f for f in s.frameworks if f in FRAMEWORKS]) * len(workers))
    rows = []
    for fw in (f for f in s.frameworks if f in FRAMEWORKS):
        for n in workers:
            progress(f"{fw}: {n} worker{'s' if n > 1 else ''} ...")
            row = Scaling(fw, n)
            with tempfile.TemporaryDirectory(prefix="conformance-bench-") as tmp:
                result = Path(tmp, "result.json")
                job = {"kind": "bench", "variant": s.variant, "batch": s.batch, "size": s.size, "steps": steps}
                outcome = launch.run(fw, World(n), {**job, "result": str(result)}, io.StringIO(), io.StringIO())
                if outcome.code:
                    row.failed = outcome.failed
                else:
                    vars(row).update(json.loads(result.read_text()))
            rows.append(row)
        one = next((r for r in rows if r.framework == fw and r.workers == 1 and not r.failed), None)
        for r in rows:
            if one and r.framework == fw and not r.failed:
                r.efficiency = r.images_per_s / (r.workers * one.images_per_s)
    return rows

"""Markdown tables from the figures ``bench --json`` wrote, for the docs
(``bench --markdown PATH``): the same rows and columns as the printed table, so a page
shows a run's figures as it measured them. A file that is not such a document is refused
in one line naming it and what is wrong."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..reading import Damaged, json_document

KINDS = (("infer", "inference"), ("train", "training (one SGD step per call)"))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_TYPES: dict[str, type] = {"an object": dict, "an array": list, "a string": str, "an integer": int}


def _need(doc: dict[str, Any], key: str, expected: str, where: str) -> Any:
    """``doc[key]``, which must be ``expected`` ("a number" or one of :data:`_TYPES`)."""
    if key not in doc:
        raise ValueError(f"{where} has no {key!r}")
    value = doc[key]
    if expected == "a number":
        ok = _number(value)
    else:
        ok = isinstance(value, _TYPES[expected]) and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"{where} {key!r} is {value!r:.60}, expected {expected}")
    return value


def _optional_number(row: dict[str, Any], key: str, where: str) -> float | None:
    if row.get(key) is None:
        return None
    return _need(row, key, "a number", where)


def read(path: Path, option: str = "--markdown") -> dict[str, Any]:
    """The document ``bench --json`` wrote to ``path``, checked field by field;
    ValueError naming ``option``, the file and the field otherwise."""
    try:
        doc = json_document(path)
        if not isinstance(doc, dict):
            raise ValueError("the document is not a JSON object")
        settings = _need(doc, "settings", "an object", "the document")
        for key in ("variant",):
            _need(settings, key, "a string", "'settings'")
        for key in ("batch", "size", "rounds", "calls"):
            _need(settings, key, "an integer", "'settings'")
        if "scaling" in doc:
            for i, row in enumerate(_need(doc, "scaling", "an array", "the document"), 1):
                where = f"'scaling' row {i}"
                if not isinstance(row, dict):
                    raise ValueError(f"{where} is not an object")
                _need(row, "framework", "a string", where)
                _need(row, "workers", "an integer", where)
                if row.get("failed") is None:
                    for key in ("images_per_s", "first_s", "peak_mb"):
                        _need(row, key, "a number", where)
                    _need(row, "threads", "an integer", where)
                    _optional_number(row, "efficiency", where)
                else:
                    _need(row, "failed", "a string", where)
            return doc
        for key in ("cores",):
            _need(doc, key, "an integer", "the document")
        load = _need(doc, "load_average", "an object", "the document")
        for key in ("before", "after"):
            _need(load, key, "a number", "'load_average'")
        for i, row in enumerate(_need(doc, "runtimes", "an array", "the document"), 1):
            where = f"'runtimes' row {i}"
            if not isinstance(row, dict):
                raise ValueError(f"{where} is not an object")
            for key in ("label", "kind", "framework"):
                _need(row, key, "a string", where)
            if row.get("skipped") is not None:
                _need(row, "skipped", "a string", where)
                continue
            for key in ("images_per_s", "median_images_per_s"):
                _need(row, key, "a number", where)
            for key in ("first_s", "peak_mb"):
                _optional_number(row, key, where)
        if doc.get("limit") is not None:
            limit = _need(doc, "limit", "an object", "the document")
            for key in ("images_per_s", "gflops", "gflop_per_image"):
                _need(limit, key, "a number", "'limit'")
            _need(limit, "kernel", "a string", "'limit'")
    except OSError as e:
        raise ValueError(f"{option} {path}: {e.strerror}") from None
    except (Damaged, ValueError) as e:
        raise ValueError(f"{option} {path}: not a bench --json document: {e}") from None
    return doc


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(doc: dict[str, Any]) -> str:
    """The Markdown of a document :func:`read` accepted."""
    return _scaling(doc) if "scaling" in doc else _runtimes(doc)


def _runtimes(doc: dict[str, Any]) -> str:
    s, load = doc["settings"], doc["load_average"]
    lines = [
        f"`{s['variant']}`, batch {s['batch']}, {s['size']} x {s['size']}, float32, {doc['cores']} cores; best of "
        f"{s['rounds']} rounds x {s['calls']} calls (median beside it); load average (1 min) "
        f"{load['before']:.2f} before, {load['after']:.2f} after."
    ]
    for kind, title in KINDS:
        rows = [r for r in doc["runtimes"] if r["kind"] == kind and r.get("skipped") is None and r["images_per_s"] > 0]
        if not rows:
            continue
        fastest = max(r["images_per_s"] for r in rows)
        lines += [
            "",
            f"| {title} | images/s | median | x fastest | first call | peak RSS |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(rows, key=lambda r: -r["images_per_s"]):
            first = "-" if r.get("first_s") is None else f"{r['first_s']:.1f} s"
            peak = "-" if r.get("peak_mb") is None else f"{r['peak_mb']:.0f} MB"
            lines.append(
                f"| {_cell(r['label'])} | {r['images_per_s']:.1f} | {r['median_images_per_s']:.1f} | "
                f"{r['images_per_s'] / fastest:.2f} | {first} | {peak} |"
            )
    skipped = [r for r in doc["runtimes"] if r.get("skipped") is not None]
    if skipped:
        lines += ["", *(f"Skipped {_cell(r['framework'])}: {_cell(r['skipped'])}" for r in skipped)]
    limit = doc.get("limit")
    if limit is not None:
        lines += [
            "",
            f"Limit: {limit['images_per_s']:.0f} images/s, at the {limit['gflops']:.0f} GFLOP/s of the fastest "
            f"kernel measured in the rounds ({_cell(limit['kernel'])}, torch) for {limit['gflop_per_image']:.2f} "
            "GFLOP per image (2 x the spec's multiply-adds).",
        ]
    versions = sorted({r["version"] for r in doc["runtimes"] if isinstance(r.get("version"), str) and r["version"]})
    if versions:
        lines += ["", f"Versions: {_cell('; '.join(versions))}."]
    return "\n".join(lines) + "\n"


def _scaling(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [
        f"Data-parallel training of `{s['variant']}`, global batch {s['batch']} at {s['size']} x {s['size']} "
        "(each framework's own engine, each run in its own processes).",
        "",
        "| framework | workers | images/s | speedup | efficiency | threads per worker | first step | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["scaling"]:
        if r.get("failed") is not None:
            lines.append(f"| {_cell(r['framework'])} | {r['workers']} | failed: {_cell(r['failed'])} | | | | | |")
            continue
        efficiency = r.get("efficiency")
        speedup = "-" if efficiency is None else f"{efficiency * r['workers']:.2f}"
        eff = "-" if efficiency is None else f"{efficiency:.2f}"
        lines.append(
            f"| {_cell(r['framework'])} | {r['workers']} | {r['images_per_s']:.1f} | {speedup} | {eff} | "
            f"{r['threads']} | {r['first_s']:.1f} s | {r['peak_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"

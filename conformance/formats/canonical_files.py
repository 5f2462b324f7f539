"""Canonical files: ``safetensors`` and ``npz``, the canonical tensors under their
canonical names, read and written without a framework (loaded into the reference one).
The suite's own files record the plan's options (and safetensors a SHA-256 of its
tensors) where the format's readers ignore them."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import reading
from ..canonical import Params, to_bytes
from ..spec import Plan
from . import bounds, naming
from .base import LOADING_BUILT, FileContents, Format, Written, load_by_name


def recorded_transform(value: object) -> bool | None:
    """transform_input as a file's metadata spells it (``str(bool)``, or a JSON bool)."""
    if isinstance(value, bool):
        return value
    return {"True": True, "False": False}.get(value) if isinstance(value, str) else None


def _read_safetensors(path: Path, plan: Plan) -> FileContents:
    header = reading.safetensors(path)
    bounds.check_sizes(path, header.tensors, bounds.ceiling(plan))
    metadata = header.metadata
    return FileContents(
        header.tensors,
        naming.detect(header.tensors),
        [],
        digest=metadata.get("sha256"),
        transform_input=recorded_transform(metadata.get("transform_input")),
        variant=metadata.get("variant"),
    )


def _write_safetensors(params: Params, plan: Plan) -> Written:
    return to_bytes(params, plan), None


# The suite's .npz records the plan's options in the zip comment, which numpy ignores:
# a member would be one more array to every reader that loads the file by name.
NPZ_COMMENT = b"googlenet-canonical "


def _read_npz(path: Path, plan: Plan) -> FileContents:
    limit = bounds.ceiling(plan)
    tensors = reading.npz(path, limit.tensor + 4096, limit.total)
    bounds.check_sizes(path, tensors, limit)
    with zipfile.ZipFile(path) as z:
        comment = z.comment  # at most 64 KB: the zip format's field is 16 bits
    options: Any = None
    if comment.startswith(NPZ_COMMENT):
        with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
            options = json.loads(comment[len(NPZ_COMMENT) :])
    if not isinstance(options, dict):
        return FileContents(tensors, naming.detect(tensors), [])
    variant = options.get("variant")
    return FileContents(
        tensors,
        naming.detect(tensors),
        [],
        transform_input=recorded_transform(options.get("transform_input")),
        variant=variant if isinstance(variant, str) else None,
    )


def _write_npz(params: Params, plan: Plan) -> Written:
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    with zipfile.ZipFile(buffer, "a") as z:
        z.comment = NPZ_COMMENT + json.dumps({"variant": plan.variant.name, **plan.options.asdict()}).encode()
    return buffer.getvalue(), None


# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("safetensors", (".safetensors",), "canonical safetensors", None, ("safetensors",),
           _read_safetensors, _write_safetensors, load_by_name(_read_safetensors, None), checksum="digest",
           loading="from conformance import canonical; " + LOADING_BUILT
                   + "{framework}.from_canonical(model, canonical.load({path}))",
           keeps_transform="its metadata"),
    Format("npz", (".npz",), "canonical numpy archive", None, ("npz",),
           _read_npz, _write_npz, load_by_name(_read_npz, None), checksum="zip CRC-32",
           loading="import numpy; " + LOADING_BUILT + "{framework}.from_canonical(model, dict(numpy.load({path})))",
           keeps_transform="its zip comment"),
)
# fmt: on

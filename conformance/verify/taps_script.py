"""Saved PyTorch programs as MODEL: TorchScript (``.pt``/``.ts``, ``torch.jit.save``) and
``torch.export`` programs (``.pt2``), loaded with torch's own loaders.

* A ``.pt2`` is unflattened (``torch.export.unflatten``) into modules of the user's
  own hierarchy, which call one another as Python modules do: forward hooks see each
  one, and the torch adapter (:mod:`.taps`) reads and runs it like any module.
* A TorchScript module runs its compiled graph and calls no Python hook (PyTorch
  refuses hooks on a ``ScriptModule``). Its layers are taken in the order its inlined
  graph reads their tensors, and only what it returns is compared: its stages are not
  visible, and the report lists them as not compared. This adapter runs it.

Loading TorchScript runs only what ``torch.jit.load`` runs (TorchScript code, no Python
pickle); each file is first checked as ``port`` checks one: a regular file, its size
and its archive's entries bounded by what the largest GoogLeNet holds.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import taps, taps_onnx
from .pairing import Layer
from .taps import Run

FRAMEWORK = "torchscript"
ENTRIES = 1024  # an archive's files besides one per tensor: code, constants, metadata


def is_model(model: object) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


def version() -> str:
    return f"torch {torch.__version__} (TorchScript)"


channels = taps.channels
state = taps.state
load = taps.load


def _nodes(block: Any) -> Iterator[Any]:
    """The graph's nodes in order, those inside an ``if`` or a loop where they stand."""
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def order(model: torch.jit.ScriptModule) -> list[str]:
    """The modules whose tensors the inlined graph reads, in the order it first reads
    them (``prim::GetAttr`` chains from ``self``)."""
    graph = model.inlined_graph
    paths: dict[int, tuple[str, ...]] = {next(graph.inputs()).unique(): ()}
    used: list[str] = []
    for node in _nodes(graph):
        if node.kind() != "prim::GetAttr":
            continue
        parent = paths.get(node.input().unique())
        if parent is None:
            continue
        path = (*parent, node.s("name"))
        output = node.output()
        paths[output.unique()] = path
        if output.type().kind() == "TensorType":
            module = ".".join(parent)
            if module not in used:
                used.append(module)
    return used


def layers(model: torch.jit.ScriptModule, x: np.ndarray) -> list[Layer]:
    """Every parametrised module, in the order the graph uses it."""
    return taps.records(model, order(model))


def run(model: torch.jit.ScriptModule, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    """What the program returns; no stage (its modules run inside the compiled graph)."""
    with taps.inference(model):
        first = next(iter(model.parameters()), None)
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        out = model(torch.from_numpy(x).to(dtype))
    return Run(taps.returned(out), [])


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _check_archive(path: Path) -> None:
    """Both formats are zip archives: bounded in bytes and entries before torch reads one."""
    limit = taps_onnx.largest_file()
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"MODEL {path}: {size:,} bytes is more than any GoogLeNet holds ({limit:,})")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"MODEL {path}: not a TorchScript or torch.export archive (not a zip file: {e})") from None
    most = taps_onnx.largest().count + ENTRIES
    if len(entries) > most:
        raise ValueError(
            f"MODEL {path}: its archive holds {len(entries):,} files; a GoogLeNet's holds at most {most:,}"
        )
    unpacked = sum(e.file_size for e in entries)
    if unpacked > limit:
        raise ValueError(
            f"MODEL {path}: its archive unpacks to {unpacked:,} bytes; no GoogLeNet needs more than {limit:,}"
        )


def read(path: Path) -> nn.Module:
    """A ``.pt``/``.ts`` TorchScript module, or a ``.pt2`` program unflattened into modules;
    ValueError naming the file when it is neither."""
    _check_archive(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notes about its own pytree classes
        if path.suffix == ".pt2":
            try:
                program = torch.export.load(str(path))
            except Exception as e:  # noqa: BLE001 - torch's loader on a file it cannot read
                raise ValueError(
                    f"MODEL {path}: not a torch.export program (torch.export.save writes those): "
                    f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                ) from None
            try:
                return torch.export.unflatten(program)
            except Exception:  # noqa: BLE001 - a program unflatten cannot split: its flat module
                return program.module()
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - torch's loader on a file it cannot read
            raise ValueError(
                f"MODEL {path}: not a TorchScript file (torch.jit.save writes those; a checkpoint of weights "
                f"is --weights, with the code that builds the model as MODEL): {type(e).__name__}"
            ) from None

"""What every format module shares: the error a port refuses with, a file as read
(:class:`FileContents`), a format's entry (:class:`Format`), a source and a destination
resolved once (:class:`Source`, :class:`Destination`), and the implementation packages a
format reads, writes and loads with, and the loaders formats share. The format
families' modules and the registry build on it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..canonical import Params, canonical_shapes
from ..frameworks import load
from ..reading import Tensor
from ..spec import Plan
from . import naming

BackendModel = tuple[Any, Any]  # (implementation package, model)
# A file's bytes (or, for a directory or a pair of files, each file's bytes by relative
# path or name ending), and the (backend, model) that wrote it.
Written = tuple[bytes | dict[str, bytes], BackendModel | None]


class PortError(ValueError):
    """A checkpoint or an option that cannot be ported; the message names the file,
    key or option and says what was expected. ``str()`` speaks to a Python caller
    (``force=True``), :attr:`cli` to a command-line user (``--force``)."""

    @property
    def cli(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return python_spelling(self.cli)


_PYTHON_SPELLING = (
    (r"--force\b", "force=True"),
    (r"--transform-input\b", "transform_input=True"),
    (r"--num-classes (\d+)", r"num_classes=\1"),
    (r"--from ([A-Za-z][\w-]*)", r"src_format='\1'"),
    (r"--to ([A-Za-z][\w-]*)", r"dst_format='\1'"),
    (r"--variant ([A-Za-z][\w-]*)", r"variant='\1'"),
    (r"--num-classes\b", "num_classes"),
    (r"--drop-background\b", "drop_background=True"),
    (r"--from\b", "src_format"),
    (r"--to\b", "dst_format"),
    (r"--variant\b", "variant"),
)


def python_spelling(message: str) -> str:
    """A message written for the command line, with options as ``port()``'s arguments."""
    for pattern, replacement in _PYTHON_SPELLING:
        message = re.sub(pattern, replacement, message)
    return message


@dataclass
class FileContents:
    """A file as read: its tensors under the file's own names, as declared (read by
    ``Tensor.load`` only once their declarations were accepted), and what it says of
    itself."""

    tensors: dict[str, Tensor]
    scheme: str  # naming scheme of the keys (see conformance.formats.naming)
    notes: list[str]
    config: dict[str, Any] | None = None  # a .keras file's own record of its variant and options
    # Loads the file as its framework's users do, into a model of the final plan.
    load_natively: Callable[[Plan], BackendModel] | None = field(default=None, repr=False)
    digest: str | None = None  # the SHA-256 of its tensors the file records (the suite's own files)
    # The transform_input the file records (in its metadata, config or graph); None: it
    # records none, as a bare state_dict.
    transform_input: bool | None = None
    variant: str | None = None  # the variant the file records (the suite's own files)


@dataclass(frozen=True)
class Format:
    name: str
    suffixes: tuple[str, ...]
    description: str
    framework: str | None  # the framework that reads and writes it natively; None: any
    sniffed: tuple[str, ...]  # what ``sniff`` reports for such a file
    read: Callable[[Path, Plan], FileContents]
    # The file's bytes, made in memory (a full disk then fails in one place, the final
    # write, which cleans up; HDF5 segfaults when its own write hits a full disk).
    write: Callable[[Params, Plan], Written]
    # Load the path as this format's users load it. ``reference``: the framework for
    # formats that have none; ``into``: a model of this framework to load into.
    load: Callable[[Path, Plan, str, BackendModel | None], BackendModel]
    # The name endings its framework's loader insists on (Keras); empty: any name.
    names: tuple[str, ...] = ()
    writable: bool = True  # False: a format ``port`` reads only (Caffe's)
    readable: bool = True  # False: a format ``port`` writes only (TorchScript's)
    # "file"; "directory" (a SavedModel: DST must not exist); "pair" (DST names the
    # Gluon -symbol.json, its -0000.params is written beside it).
    layout: str = "file"
    # What the format cannot carry (aux heads, an open input size), said in port's log.
    limits: str = ""
    # How a reader's process loads the written file, said in port's log: one line of
    # Python that runs clean as it is printed ("{path}": DST, "{params}": the Gluon
    # pair's parameters, "{framework}": the framework it was verified in, "{build}": the
    # arguments of that framework's ``build`` for the plan, transform_input included).
    loading: str = ""
    # Where the file keeps transform_input ("its metadata", "the graph"); "": nowhere
    # (a state_dict holds tensors only), which port's log says when the transform is on.
    keeps_transform: str = ""
    # What detects a changed byte in its weights when it is read: a checksum the format
    # keeps ("zip CRC-32"), "digest" (the suite's SHA-256 when the file records one), or
    # "" (nothing: a flipped bit is read as a weight, which port's log says).
    checksum: str = ""
    # Why the format cannot hold a plan, in one line ("" if it can): asked as soon as the
    # plan is known, before any framework is imported (a layer the format has no way to
    # express, as keras-builtin's LRN).
    refuses: Callable[[Plan], str] | None = None


@dataclass
class Source:
    """A checkpoint to read, resolved once (:func:`formats.paths.source`) and handed to
    every later step, so none works out again what the path is."""

    path: Path  # what is read: the file, or a TensorFlow checkpoint's prefix
    format: Format
    checked: Path  # the regular, readable file checked on resolving (a prefix's .index)
    tf_prefix: bool  # ``path`` is a TensorFlow checkpoint's prefix
    # What its bytes are (``sniff``), once the registry first read it; None: not yet.
    kind: str | None = None


@dataclass(frozen=True)
class Destination:
    """An output checked once (:func:`formats.paths.destination`) before any work: its
    format, and the temporary file's suffix (the name ending its format is known by)."""

    path: Path
    format: Format
    suffix: str
    force: bool


def backend(name: str):
    """An implementation package, or a PortError with its install hint."""
    found, skipped = load([name])
    if name not in found:
        raise PortError(f"{name} is needed for this format and is {skipped[name]}")
    return found[name]


def built(framework: str, plan: Plan, params: Params | None = None) -> BackendModel:
    """(backend, model) of ``framework`` for the plan's variant and options, holding
    ``params`` when given."""
    b = backend(framework)
    model = b.build(plan.variant.name, **plan.options.asdict())
    if params is not None:
        b.from_canonical(model, params)
    return b, model


def wipe(package, model, plan: Plan) -> None:
    """Set every weight and statistic to NaN: whatever a load does not restore shows."""
    package.from_canonical(model, {k: np.full(s, np.nan, np.float32) for k, s in canonical_shapes(plan).items()})


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def error_line(error: BaseException) -> str:
    """The line of a library's error that says what went wrong: MXNet's start with a
    C++ ``Traceback (most recent call last):`` and end with the check that failed."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    noise = ("Traceback", "File ", "[bt]", "Stack trace", "Error in operator")
    useful = [line for line in lines if not line.startswith(noise) and not line[:1].isdigit()]
    checks = [line for line in useful if "Check failed" in line or "Error" in line]
    return ((checks or useful or lines or [""])[-1 if checks else 0])[:300]


# How a reader's process loads each written format (``Format.loading``): one line of
# Python, run as printed (tests/test_port_transform*.py run each in a fresh process and
# want stderr empty). A format loaded into a model its framework builds starts with
# LOADING_BUILT; MXNet's start with LOADING_MXNET.
LOADING_BUILT = "import {framework}; model = {framework}.build({build}); "
LOADING_MXNET = "import numpy; numpy.bool = bool; import mxnet; "  # MXNet 1.9 uses the alias numpy 1.24 removed


def wiped_model(framework: str, plan: Plan, into: BackendModel | None) -> BackendModel:
    """The model to load into, wiped to NaN first (saves building another)."""
    b, model = into if into is not None else built(framework, plan)
    wipe(b, model, plan)
    return b, model


def load_by_name(
    read: Callable[[Path, Plan], FileContents], framework: str | None
) -> Callable[[Path, Plan, str, BackendModel | None], BackendModel]:
    """Files of canonical tensors (or GluonCV's names): ``read`` them through the naming
    table into ``framework`` (the reference one for canonical files, ``None``)."""

    def load_named(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
        contents = read(path, plan)
        tensors, _ = naming.to_canonical({k: t.load() for k, t in contents.tensors.items()}, contents.scheme, plan)
        return built(framework or reference, plan, tensors)

    return load_named

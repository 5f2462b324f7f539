"""Checkpoint formats, one registry entry each: how a file of that format is
recognised by its bytes, read to canonical parameters, written from them, and loaded
the way that framework's users load it (for verification).

| format          | files            | read / written with                                   |
|-----------------|------------------|-------------------------------------------------------|
| ``safetensors`` | ``.safetensors`` | canonical names (no framework)                        |
| ``npz``         | ``.npz``         | canonical names, ``allow_pickle=False``               |
| ``torch``       | ``.pt`` ``.pth`` | ``torch.load(weights_only=True)``; a state_dict, bare |
|                 |                  | or under ``state_dict`` / ``model``                   |
| ``keras-weights`` | ``.weights.h5`` | ``model.save_weights`` / ``load_weights``            |
| ``keras``       | ``.keras``       | ``model.save`` / ``keras.models.load_model``          |
| ``mxnet``       | ``.params``      | ``save_parameters``; reads Gluon and GluonCV names    |
| ``gluoncv``     | ``.params``      | GluonCV's names (``--to gluoncv``), for its ``googlenet`` |
| ``caffe``       | ``.caffemodel``  | read only: Caffe's ``NetParameter`` (both layer formats), |
|                 |                  | with protobuf and ``caffe.proto``; bvlc_googlenet's names |
| ``tf-checkpoint`` | ``PREFIX``       | read only: ``PREFIX.index`` + ``PREFIX.data-*`` with   |
|                 |                  | ``tf.train.load_checkpoint`` (never the ``.meta`` graph); |
|                 |                  | TF-slim's ``inception_v1`` names (``googlenet_slim``)  |
| ``flax-msgpack`` | ``.msgpack``     | Flax's ``to_bytes`` of an nnx state (bounded msgpack  |
|                 |                  | parse, no jax to read or write); loaded with Flax     |
| ``orbax``       | a directory      | Orbax's ``StandardCheckpointer`` of an nnx state;     |
|                 |                  | read with tensorstore, written with Orbax             |
| ``onnx``, ``torchscript``, ``exported``, ``savedmodel``, ``gluon-export``: deployment  |
| graphs (``conformance.formats.deploy``), verified in a fresh process by their runtimes    |
| ``keras-builtin`` | ``.keras``    | written only (``--to keras-builtin``): a functional model of  |
|                 |                  | Keras's built-in layers (``conformance.formats.keras_builtin``) |

Each family's module exports its :class:`Format` entries (``ENTRIES``); a new format is
one entry in its family's module, a new family one module and one line in :data:`FORMATS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .. import reading
from ..frameworks import FRAMEWORKS, load
from ..reading import Damaged
from ..spec import Plan
from . import (
    bounds,
    caffe,
    canonical_files,
    deploy,
    flax_files,
    gluon,
    keras_builtin,
    keras_files,
    orbax_files,
    tfcheckpoint,
    torch_files,
)
from .base import FileContents, Format, PortError, Source, error_line, one_line
from .sniff import check_content, sniff_probed

# In this order: a name's format is the first whose suffix it ends with (.pt: torch, not
# torchscript; .params: mxnet, not gluoncv), and the CLI lists them so.
FORMATS: dict[str, Format] = {
    f.name: f
    for family in (
        canonical_files,
        torch_files,
        keras_files,
        gluon,
        caffe,
        tfcheckpoint,
        flax_files,
        orbax_files,
        deploy,
        keras_builtin,
    )
    for f in family.ENTRIES
}


def unchecked(fmt: Format, contents: FileContents) -> str:
    """What port's log says of a source whose bytes no checksum covers ("" if one does)."""
    if fmt.checksum and (fmt.checksum != "digest" or contents.digest is not None):
        return ""
    what = (
        "this file records no SHA-256 of its tensors (written by another tool)"
        if fmt.checksum
        else (f"{fmt.description} files carry no checksum")
    )
    return (
        f"{what}: a changed byte in a weight cannot be detected and is read as a weight "
        f"(the outputs are compared with what was read, not with what was first written)"
    )


def infer(path: Path, explicit: str | None, option: str) -> Format:
    """The format named by ``--from``/``--to``, else the one the file name says."""
    tf_prefix = tfcheckpoint.prefix(path) if explicit is None else None
    return format_of(path, explicit, option, tf_prefix is not None)


def format_of(path: Path, explicit: str | None, option: str, tf_prefix: bool) -> Format:
    """:func:`infer` of a path already probed for a TensorFlow checkpoint (``tf_prefix``:
    it names one)."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise PortError(f"{option}: unknown format {explicit!r}; expected one of {', '.join(FORMATS)}")
        return FORMATS[explicit]
    if tf_prefix:  # a prefix has no suffix of its own (model.ckpt-1000)
        return FORMATS["tf-checkpoint"]
    for f in FORMATS.values():
        if path.name.endswith(f.suffixes):
            return f
    suffixes = ", ".join(dict.fromkeys(s for f in FORMATS.values() for s in f.suffixes))
    raise PortError(f"{path}: cannot tell the format from the name (known: {suffixes}); pass {option}")


def read(source: Source, plan: Plan) -> FileContents:
    """Read what ``source`` declares (no tensor yet), its bytes checked to be its format
    (looked at once, whatever the number of reads); corrupt, truncated or misleading
    files become a PortError naming the file."""
    with _reading(source.path, source.format):
        if source.kind is None:
            source.kind = sniff_probed(source.path, source.path if source.tf_prefix else None)
        check_content(source.path, source.format, FORMATS.values(), source.kind)
        return source.format.read(source.path, plan)


def materialise(source: Source, contents: FileContents) -> dict[str, np.ndarray]:
    """Every declared tensor read (call once the declarations were accepted), the
    file's recorded SHA-256 checked where it has one."""
    with _reading(source.path, source.format):
        arrays = {k: t.load() for k, t in contents.tensors.items()}
    if contents.digest is not None and reading.tensor_digest(arrays) != contents.digest:
        raise PortError(
            f"{source.path}: damaged: its tensors do not match the SHA-256 recorded in its metadata "
            f"(the file changed after it was written)"
        )
    return arrays


@contextlib.contextmanager
def _reading(path: Path, fmt: Format) -> Iterator[None]:
    """The one place a reader's failure becomes a refusal: every exception a reader (or
    the library under it) raises is a PortError of one line naming the file."""
    try:
        yield
    except PortError as e:
        if "\n" in e.cli:
            raise PortError(one_line(e.cli)) from None
        raise
    except (Damaged, bounds.BoundsError) as e:
        message = one_line(str(e))
        raise PortError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt: the libraries' own errors, with the file named
        raise PortError(f"{path}: cannot read it as {fmt.description}: {type(e).__name__}: {error_line(e)}") from None


def installed_reference() -> str:
    """The first installed framework (torch, keras, mxnet order), for canonical files."""
    for name in FRAMEWORKS:
        if load([name])[0]:
            return name
    raise PortError("no framework is installed: install one of torch, keras, mxnet to verify a port")

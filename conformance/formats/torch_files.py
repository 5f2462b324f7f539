"""PyTorch state_dicts (``.pth``, ``.pt``): read with ``torch.load(weights_only=True)``
after every pickle in the file was replayed bounded (``conformance.formats.pickles``);
a state_dict bare or under ``state_dict`` / ``model``, DataParallel's ``module.``
prefix removed. TorchScript and ExportedProgram files are deployment graphs
(``conformance.formats.deploy``)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .. import reading
from ..canonical import Params
from ..reading import Tensor
from ..spec import Plan
from . import bounds, naming, pickles
from .base import LOADING_BUILT, BackendModel, FileContents, Format, PortError, Written, built, wiped_model

MAX_PICKLE = 16 << 20  # a state_dict's data.pkl is ~30 KB


def _torch_tensor(value) -> Tensor:
    """A loaded torch tensor as declared: its shape and dtype, read (copied into numpy)
    only when accepted. An expanded tensor declares its full shape while its storage
    holds one element: the shape is checked before anything is materialised."""
    import torch

    shape = tuple(int(d) for d in value.shape)
    if value.layout != torch.strided:
        return Tensor(shape, "sparse", reading.never_loaded, f"a sparse tensor ({value.layout}), not dense weights")
    if value.is_quantized:
        return Tensor(shape, "quantised", reading.never_loaded, f"quantised ({value.dtype}): dequantise it first")
    if value.dtype == torch.bfloat16:
        return Tensor(shape, "bfloat16", lambda: value.detach().float().contiguous().numpy().copy())
    try:
        dtype = np.dtype(str(value.dtype).removeprefix("torch."))
    except TypeError:
        return Tensor(shape, str(value.dtype), reading.never_loaded, f"of dtype {value.dtype}, which numpy cannot hold")
    return Tensor(shape, dtype, lambda: value.detach().contiguous().numpy().copy())


def _read_torch(path: Path, plan: Plan) -> FileContents:
    limit = bounds.ceiling(plan)
    zipped = zipfile.is_zipfile(path)
    if zipped:
        infos = reading.zip_members(path, limit.total, limit.total)
        for info in infos:
            if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE:
                raise PortError(f"{path}: its pickle declares {info.file_size:,} bytes; a state_dict's is a few KB")
        reading.check_crcs(path)  # PyTorch's own reader does not
        _replay_zipped_pickles(path, infos)
    elif path.stat().st_size > bounds.budget(plan).total:  # a legacy pickle reads its storages whole
        raise PortError(
            f"{path}: {path.stat().st_size:,} bytes is more than {plan.variant.name} with {plan.num_classes} classes "
            f"can hold ({bounds.budget(plan).describe()}); pass --num-classes if it has more classes"
        )
    else:
        pickles.check_legacy(path)
    obj = _torch_load(path, mmap=zipped)
    notes = []
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            notes.append(f"took the state_dict under the {wrapper!r} key")
            break
    import torch

    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PortError(
            f"{path}: expected a state_dict (a dict of tensors, possibly under 'state_dict' or 'model'), "
            f"got {type(obj).__name__}"
        )
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
        notes.append("removed the 'module.' prefix (DataParallel)")
    dropped = sum(str(k).endswith("num_batches_tracked") for k in obj)
    if dropped:
        notes.append(f"dropped {dropped} num_batches_tracked counters (not weights)")
    tensors = {str(k): _torch_tensor(v) for k, v in obj.items() if not str(k).endswith("num_batches_tracked")}
    bounds.check_sizes(path, tensors, limit)
    return FileContents(tensors, naming.detect(tensors), notes)


def _replay_zipped_pickles(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Each ``data.pkl`` replayed without allocating (``conformance.formats.pickles``):
    a storage at most its ``data/<key>`` member's bytes, ``bytearray(N)`` at most the
    archive's."""
    for info in infos:
        if not info.filename.endswith("data.pkl"):
            continue
        root = info.filename[: -len("data.pkl")]
        members = {
            i.filename[len(root) + len("data/") :]: i.file_size for i in infos if i.filename.startswith(f"{root}data/")
        }
        pickles.check_zipped(reading.read_member(path, info.filename), info.filename, members, path.stat().st_size)


def _torch_load(path: Path, mmap: bool):
    """``torch.load`` with ``weights_only`` (no code runs); ``mmap`` maps the storages
    from the file instead of reading them, so nothing is allocated until accepted."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise PortError(
            f"{path}: refusing to load: the pickle needs more than tensors and plain containers, and "
            f"running its code is unsafe (torch.load weights_only=True: {first})"
        ) from None


def _write_torch(params: Params, plan: Plan) -> Written:
    import torch

    b, model = built("torch", plan, params)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # with num_batches_tracked: torchvision loads it strictly
    return buffer.getvalue(), (b, model)


def _load_torch(path: Path, plan: Plan, reference: str, into: BackendModel | None) -> BackendModel:
    import torch

    b, model = wiped_model("torch", plan, into)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return b, model


# fmt: off
ENTRIES: tuple[Format, ...] = (
    Format("torch", (".pth", ".pt"), "PyTorch state_dict", "torch", ("torch", "pickle"),
           _read_torch, _write_torch, _load_torch, checksum="zip CRC-32",
           loading="import torch; " + LOADING_BUILT + "model.load_state_dict(torch.load({path}, weights_only=True))"),
)
# fmt: on

"""A user's ``torch.nn.Module`` seen through forward hooks: its parametrised layers in
the order a forward pass uses them, every module's output in the order they finish,
and its own outputs. Nothing of the model is changed but, with ``--weights``, the
values of its tensors; hooks are removed after each pass, and its training flag is
restored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .pairing import Layer, kind_of

FRAMEWORK = "torch"


def is_model(model: object) -> bool:
    return isinstance(model, nn.Module)


def version() -> str:
    return f"torch {torch.__version__}"


def channels(model: nn.Module) -> int:
    """The input channels: the first conv's (three where the model declares none)."""
    for m in model.modules():
        weight = getattr(m, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 4:
            return int(weight.shape[1])
    return 3


def _direct(module: nn.Module) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {k: v for k, v in module.named_parameters(recurse=False) if v is not None}
    tensors.update({k: v for k, v in module.named_buffers(recurse=False) if v is not None})
    return {k: v for k, v in tensors.items() if k != "num_batches_tracked"}


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Inference behaviour (BatchNorm's running statistics, no dropout), then the
    model's own mode back."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def _dtype(model: nn.Module) -> torch.dtype:
    first = next(iter(model.parameters()), None)
    return first.dtype if first is not None and first.is_floating_point() else torch.float32


def layers(model: nn.Module, x: np.ndarray) -> list[Layer]:
    """Every parametrised layer, with whether one forward pass on ``x`` used it, in the
    order of first use (then the unused ones, in declaration order)."""
    found = {name: m for name, m in model.named_modules() if _direct(m)}
    order: list[str] = []
    handles = []
    for name, module in found.items():

        def record(_module: nn.Module, _inputs: Any, name: str = name) -> None:
            if name not in order:
                order.append(name)

        handles.append(module.register_forward_pre_hook(record))
    try:
        with inference(model):
            model(torch.from_numpy(x).to(_dtype(model)))
    finally:
        for h in handles:
            h.remove()
    return records(model, order)


def records(model: nn.Module, order: Sequence[str]) -> list[Layer]:
    """Every module holding tensors as a layer: those named in ``order`` (the ones a
    forward pass used, in the order it used them) first, then the rest in declaration
    order."""
    found = {name: m for name, m in model.named_modules() if _direct(m)}
    out = []
    for name in [*(n for n in order if n in found), *(n for n in found if n not in order)]:
        tensors = _direct(found[name])
        kind = kind_of(tensors) or type(found[name]).__name__
        prefix = f"{name}." if name else ""
        out.append(
            Layer(
                name or type(model).__name__,
                kind,
                {k: v.detach().cpu().float().numpy().copy() for k, v in tensors.items()},
                {k: prefix + k for k in tensors},
                name in order,
                type(found[name]).__name__,
            )
        )
    return out


def state(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's tensors by its own keys (no copy: read-only use)."""
    return {
        k: v.detach().cpu().float().numpy()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def load(model: nn.Module, keys: Mapping[str, str], params: Mapping[str, np.ndarray]) -> None:
    """Write canonical ``params`` into the user's tensors (``keys``: canonical -> theirs)."""
    targets = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for canonical, theirs in keys.items():
            target = targets[theirs]
            target.copy_(torch.from_numpy(np.asarray(params[canonical]).reshape(tuple(target.shape))))


@dataclass
class Event:
    """A module's output as it finished (``value``), or the call of a paired layer."""

    module: str
    value: np.ndarray | None = None


@dataclass
class Run:
    outputs: list[np.ndarray]  # what the model returned: the logits first
    events: list[Event] = field(default_factory=list)


def returned(out: object) -> list[np.ndarray]:
    """The logits first, then any other tensor the model returns (aux logits)."""
    if isinstance(out, torch.Tensor):
        return [out.detach().float().numpy()]
    if isinstance(out, Mapping):
        items = (
            [out["logits"], *(v for k, v in out.items() if k != "logits")] if "logits" in out else list(out.values())
        )
        return [v.detach().float().numpy() for v in items if isinstance(v, torch.Tensor)]
    if isinstance(out, (tuple, list)):
        return [v.detach().float().numpy() for v in out if isinstance(v, torch.Tensor)]
    raise ValueError(f"MODEL: your model returned {type(out).__name__}; expected a tensor of logits (or a tuple)")


def run(model: nn.Module, x: np.ndarray, shapes: set[tuple[int, ...]], calls: set[str]) -> Run:
    """One forward pass: what the model returns, and (in the order they happen) the call
    of each layer named in ``calls`` and every module output whose shape is in ``shapes``
    (copied as it is made: an in-place ReLU would change it afterwards)."""
    events: list[Event] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        if name in calls:

            def called(_m: nn.Module, _i: Any, name: str = name) -> None:
                events.append(Event(name))

            handles.append(module.register_forward_pre_hook(called))

        def finished(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and tuple(out.shape) in shapes:
                events.append(Event(name, out.detach().float().numpy().copy()))

        handles.append(module.register_forward_hook(finished))
    try:
        with inference(model):
            out = model(torch.from_numpy(x).to(_dtype(model)))
            outputs = returned(out)
    finally:
        for h in handles:
            h.remove()
    return Run(outputs, events)

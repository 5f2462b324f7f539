"""What every ``impl_*`` package exposes, and the framework-neutral checks they share.

Each implementation package provides these functions (the harness, tests and
users call them the same way for every framework)::

    build(variant, num_classes=None, aux_logits=False, transform_input=False,
          dtype="float32") -> native model         # num_classes None: the variant's own
    to_canonical(model) -> dict[str, numpy.ndarray]
    from_canonical(model, params) -> None          # strict
    forward(model, x, aux=False) -> logits | (logits, aux2, aux1)
    stages(model, x) -> dict[str, numpy.ndarray]   # every stage, NCHW
    count_params(model) -> (trainable, statistics) # with the framework's own API
    version() -> str
    Trainer(model, lr, momentum, aux_weight=0.3, record=False, deterministic=False)
        .step(x, labels) -> (loss, correct)        # one SGD step, training mode
        .gradients() -> dict[str, numpy.ndarray]   # canonical keys and layouts
        .batch_stats() -> dict[str, numpy.ndarray] # <unit>.bn.batch_mean / batch_var
        .state() -> dict[str, numpy.ndarray]       # momentum by canonical key (the framework's own convention)
        .load_state(state) -> None                 # what state() returned: a resumed run goes on bit for bit
        .reseed(seed) -> None                      # the framework's random numbers (dropout)

``x`` is always NCHW float32; each implementation handles its own layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from .spec import Plan, SpecError, aux_admits, stage_shapes


class Backend(Protocol):
    """What every implementation package exposes (its ``__all__`` lists the same names)."""

    name: str
    build: Callable[..., Any]
    to_canonical: Callable[[Any], dict[str, np.ndarray]]
    from_canonical: Callable[[Any, Mapping[str, np.ndarray]], None]
    forward: Callable[..., Any]
    stages: Callable[[Any, np.ndarray], dict[str, np.ndarray]]
    count_params: Callable[[Any], tuple[int, int]]
    version: Callable[[], str]
    Trainer: Callable[..., Any]


FUNCTIONS = tuple(Backend.__annotations__)  # ("name", "build", ..., "Trainer")


def check_input(p: Plan, x: object) -> np.ndarray:
    """``x`` as a contiguous NCHW float32 array the plan can run, or a clear error."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy.ndarray (NCHW float32), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != p.in_channels:
        raise ValueError(f"x: expected shape (N, {p.in_channels}, H, W), got {x.shape}")
    if x.dtype != np.float32:
        raise ValueError(f"x: expected dtype float32, got {x.dtype}")
    if x.shape[0] < 1:
        raise ValueError("x: expected a batch of at least one image, got 0")
    stage_shapes(p, x.shape[2:])  # raises SpecError when the image is too small
    return np.ascontiguousarray(x)


def aux_wanted(p: Plan, x: np.ndarray, aux: bool) -> bool:
    """Validate a request for aux logits at this input size."""
    if not aux:
        return False
    if not p.aux:
        raise ValueError("aux=True: the model was built with aux_logits=False")
    if not aux_admits(p, x.shape[2:]):
        raise SpecError(
            f"aux=True: at input {x.shape[2]} x {x.shape[3]} the aux pool does not give "
            f"the {p.aux[0].pooled} x {p.aux[0].pooled} map fc1 expects"
        )
    return True


Run = Callable[[Any, np.ndarray, bool], dict[str, np.ndarray]]
"""A framework's forward: (model, NCHW input, with_aux) -> every stage as NCHW numpy."""


def forward(run: Run, model: Any, x: object, aux: bool = False) -> Any:
    """Logits, or (logits, aux2, aux1) in torchvision's order, with inference behaviour."""
    x = check_input(model.plan, x)
    out = run(model, x, aux_wanted(model.plan, x, aux))
    if not aux:
        return out["logits"]
    return (out["logits"], *(out[head.name] for head in reversed(model.plan.aux)))


def stages(run: Run, model: Any, x: object) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and, where the
    input size admits them, the aux logits."""
    x = check_input(model.plan, x)
    return run(model, x, bool(model.plan.aux) and aux_admits(model.plan, x.shape[2:]))

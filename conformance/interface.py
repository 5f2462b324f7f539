"""What every ``impl_*`` package exposes, and the framework-neutral checks they share.

Each implementation package provides these functions (the harness, tests and
users call them the same way for every framework)::

    build(variant, num_classes=None, aux_logits=False, transform_input=False,
          dtype="float32") -> native model         # num_classes None: the variant's own
    to_canonical(model) -> dict[str, numpy.ndarray]
    from_canonical(model, params) -> None          # strict
    MODES -> tuple[str, ...]                       # inference paths, the default first
    forward(model, x, aux=False, mode=MODES[0]) -> logits | (logits, aux2, aux1)
    stages(model, x, mode=MODES[0]) -> dict[str, numpy.ndarray]   # every stage, NCHW
    count_params(model) -> (trainable, statistics) # with the framework's own API
    to_onnx(model, shape, with_aux, every_stage) -> bytes  # the ONNX graph; needs .[onnx]
    version() -> str
    Trainer(model, lr, momentum, aux_weight=0.3, record=False, deterministic=False)
        .step(x, labels) -> (loss, correct)        # one SGD step, training mode
        .gradients() -> dict[str, numpy.ndarray]   # canonical keys and layouts
        .batch_stats() -> dict[str, numpy.ndarray] # <unit>.bn.batch_mean / batch_var
        .state() -> dict[str, numpy.ndarray]       # momentum by canonical key (the framework's own convention)
        .load_state(state) -> None                 # what state() returned: a resumed run goes on bit for bit
        .reseed(seed) -> None                      # the framework's random numbers (dropout)

``x`` is always NCHW float32; each implementation handles its own layout.

Modes: ``"eager"`` (every framework has it) runs the model op by op as written, the
reference the other modes are checked against (``check`` compares the default with it,
stage by stage, and ``check --modes all`` every mode). The default is the framework's
fast inference path: the one a user would pick to serve the model (PyTorch channels-last under ``inference_mode``, Keras
a ``tf.function`` graph, Gluon a hybridized static graph). A mode that compiles
caches what it compiled per model, input shape and outputs (:func:`compiled`), so a
second call costs no tracing; it never changes the model, so eager training is
unaffected. Modes after eager are compiled extras (``torch.compile``, XLA, oneDNN
fusion), whose first call compiles; a compiler that cannot run a variant or size raises
:class:`Unsupported`, which the check reports as skipped with its reason.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from .spec import Plan, SpecError, aux_admits, stage_shapes

EAGER = "eager"

VERSION = 1
"""The version of this contract. A package declares the one it implements as
``INTERFACE_VERSION``; a package that declares another is refused by name."""


class Backend(Protocol):
    """What every implementation package exposes (its ``__all__`` lists the same names)."""

    name: str
    MODES: tuple[str, ...]
    build: Callable[..., Any]
    to_canonical: Callable[[Any], dict[str, np.ndarray]]
    from_canonical: Callable[[Any, Mapping[str, np.ndarray]], None]
    forward: Callable[..., Any]
    stages: Callable[..., dict[str, np.ndarray]]
    count_params: Callable[[Any], tuple[int, int]]
    version: Callable[[], str]
    Trainer: Callable[..., Any]
    to_onnx: Callable[..., bytes]


class Unsupported(RuntimeError):
    """What a judge cannot run (its exporter lacks an operator the model needs): the
    check reports it as skipped, with the exporter's reason, not as a disagreement."""


def is_judge(b: object) -> bool:
    """An independent runtime (``conformance.check.judges``): it runs inference only,
    so the harness compares its stages but neither counts, round-trips nor trains it."""
    return bool(getattr(b, "judge", False))


MODE_SETS = ("default", "all")
"""What ``check --modes`` compares with each framework's eager run: ``default`` its
default mode (``MODES[0]``, what a first call runs); ``all`` every mode it has, the
compiled extras after eager too (whose first call compiles for seconds to minutes)."""


def checked_modes(b: object, modes: str) -> list[str]:
    """The modes of ``b`` that ``check --modes modes`` compares with its eager run (a
    judge's one mode is compared across frameworks instead)."""
    if modes not in MODE_SETS:
        raise ValueError(f"--modes: expected one of {', '.join(MODE_SETS)}, got {modes!r}")
    if is_judge(b):
        return []
    own: tuple[str, ...] = b.MODES  # type: ignore[attr-defined]
    return [m for m in (own if modes == "all" else own[:1]) if m != EAGER]


def check_mode(mode: object, modes: Sequence[str]) -> str:
    """``mode`` if the framework has it, else an error naming the choices."""
    if not isinstance(mode, str) or mode not in modes:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, modes))}, got {mode!r}")
    return mode


FUNCTIONS = tuple(Backend.__annotations__)  # ("name", "build", ..., "Trainer")


def breaches(package: object) -> list[str]:
    """What keeps ``package`` (a module, or any object) from being a :class:`Backend`,
    each as a phrase ("has no `to_onnx`"); empty when it conforms. Only what can be
    seen without running it: what its functions return, the check itself judges."""
    found = []
    declared = getattr(package, "INTERFACE_VERSION", None)
    if declared != VERSION:
        found.append(
            f"declares INTERFACE_VERSION = {declared!r}, this suite speaks {VERSION}"
            if declared is not None
            else f"has no INTERFACE_VERSION (this suite speaks {VERSION})"
        )
    for attribute in FUNCTIONS:
        if not hasattr(package, attribute):
            found.append(f"has no `{attribute}`")
        elif attribute == "name":
            if not isinstance(package.name, str) or not package.name:  # type: ignore[attr-defined]
                found.append("has a `name` that is not a non-empty string")
        elif attribute == "MODES":
            modes = package.MODES  # type: ignore[attr-defined]
            if not isinstance(modes, tuple) or not modes or not all(isinstance(m, str) for m in modes):
                found.append("has `MODES` that is not a non-empty tuple of strings")
            elif EAGER not in modes:
                found.append(f"has no {EAGER!r} in `MODES` (the mode every other mode is checked against)")
        elif not callable(getattr(package, attribute)):
            found.append(f"has a `{attribute}` that is not callable")
    return found


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


def output_names(p: Plan, with_aux: bool, every_stage: bool) -> tuple[str, ...]:
    """What a run returns, in a fixed order (a compiled graph returns a tuple): every
    stage, ``flatten`` and ``logits``, or the logits alone; then the aux logits."""
    heads = tuple(head.name for head in p.aux) if with_aux else ()
    if not every_stage:
        return ("logits", *heads)
    return (*(stage.name for stage in p.stages), "flatten", "logits", *heads)


Run = Callable[[Any, np.ndarray, bool, str, bool], dict[str, np.ndarray]]
"""A framework's inference: (model, NCHW input, with_aux, mode, every_stage) -> the
:func:`output_names` as NCHW numpy."""


def forward(run: Run, modes: Sequence[str], model: Any, x: object, aux: bool, mode: str) -> Any:
    """Logits, or (logits, aux2, aux1) in torchvision's order, with inference behaviour."""
    mode = check_mode(mode, modes)
    x = check_input(model.plan, x)
    out = run(model, x, aux_wanted(model.plan, x, aux), mode, False)
    if not aux:
        return out["logits"]
    return (out["logits"], *(out[head.name] for head in reversed(model.plan.aux)))


def stages(run: Run, modes: Sequence[str], model: Any, x: object, mode: str) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and, where the
    input size admits them, the aux logits."""
    mode = check_mode(mode, modes)
    x = check_input(model.plan, x)
    return run(model, x, bool(model.plan.aux) and aux_admits(model.plan, x.shape[2:]), mode, True)


T = TypeVar("T")
_COMPILED: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def compiled(model: Any, key: Hashable, make: Callable[[], T]) -> T:
    """What ``make`` compiles for ``model`` (a traced graph, a hybridized block, an
    inference session), made on the first call with this ``key`` (mode, input shape,
    outputs) and reused after: a second call costs no tracing. The cache lives beside
    the model, not in it, so it never reaches a checkpoint or a pickle, and goes when the
    model goes: what ``make`` returns must not hold the model itself (a weak reference,
    or its variables)."""
    cache = _COMPILED.setdefault(model, {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


def forget_compiled(model: Any, shape: tuple[int, ...] | None = None) -> None:
    """Drop what was compiled for ``model`` (e.g. a graph that holds weights as constants,
    after the weights changed); with ``shape``, only what was compiled for inputs of that
    shape (a key that holds it): what serves any shape stays."""
    if shape is None:
        _COMPILED.pop(model, None)
        return
    cache = _COMPILED.get(model, {})
    for key in [k for k in cache if isinstance(k, tuple) and shape in k]:
        del cache[key]

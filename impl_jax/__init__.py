"""GoogLeNet in JAX + Flax (``flax.nnx``): the shared interface (see
``conformance.interface``). Inputs and outputs are NCHW numpy; the model runs NHWC.

Not a built-in framework: it registers through the ``googlenet_conformance.backends``
entry point (framework name ``jax``), as a third party's package would; the ``jax``
extra (in ``all``) pins jax 0.7 and flax 0.11, the last to run on numpy < 2 beside MXNet.
It has no data-parallel Trainer, so no ``distributed.py``: ``check --distributed`` and
``train --workers`` are for torch, keras and mxnet."""

from __future__ import annotations

import flax
import jax
import numpy as np
from flax import nnx

from conformance import interface
from conformance.canonical import default_params
from conformance.spec import Variant, resolve

from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

# float64 arrays exist in JAX only with x64 on (process-wide, and only before arrays are
# made); the training-parity check trains in float64. A float32 model stays float32:
# every parameter and input is made with the model's dtype.
jax.config.update("jax_enable_x64", True)

name = "jax"
INTERFACE_VERSION = interface.VERSION
__all__ = [
    "MODES",
    "GoogLeNet",
    "Trainer",
    "build",
    "count_params",
    "forward",
    "from_canonical",
    "stages",
    "to_canonical",
    "to_onnx",
    "version",
]

# jit: the whole network traced once per model, outputs and input shape and compiled by
# XLA (fused, with its own layouts); eager dispatches each jax.numpy op as it comes. The
# default: what a JAX user serves with.
MODES = ("jit", interface.EAGER)


def version() -> str:
    return f"jax {jax.__version__} (flax {flax.__version__}, {jax.default_backend()})"


def build(
    variant: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
    dtype: str = "float32",
) -> GoogLeNet:
    """A GoogLeNet in eval mode holding the suite's initial weights (torchvision's
    initialisation, ``conformance.canonical.default_params``). The options are
    ``conformance.spec.resolve``'s; ``dtype``: float64 for the training-parity check."""
    p = resolve(variant, num_classes, aux_logits, transform_input)
    model = GoogLeNet(p, dtype=np.dtype(dtype))
    from_canonical(model, default_params(p))
    model.eval()
    return model


def _outputs(net: GoogLeNet, x: jax.Array, with_aux: bool, every_stage: bool) -> tuple[jax.Array, ...]:
    """The :func:`interface.output_names` of an NHWC run, as the network gives them (maps
    NHWC: :func:`_run` turns them NCHW in numpy, an exact copy that compiles nothing)."""
    out = net.forward_stages(x, with_aux=with_aux)
    return tuple(out[k] for k in interface.output_names(net.plan, with_aux, every_stage))


def _pure(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, with_aux: bool, every_stage: bool):
    """Inference as a pure function of the model's state: what ``jax.jit`` compiles. A
    copy of the model in eval mode, so the model itself keeps its own."""
    net = nnx.merge(graphdef, state)
    net.eval()
    return _outputs(net, x, with_aux, every_stage)


def _nchw(value: jax.Array) -> np.ndarray:
    array = np.asarray(value)
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if array.ndim == 4 else array


def _run(model: GoogLeNet, x: np.ndarray, with_aux: bool, mode: str, every_stage: bool) -> dict[str, np.ndarray]:
    names = interface.output_names(model.plan, with_aux, every_stage)
    inputs = jax.numpy.asarray(x.transpose(0, 2, 3, 1), model.dtype)
    graphdef, state = nnx.split(model)
    if mode == "jit":
        # one jit per model: it traces again only for a new input shape or model structure
        # (the graphdef is a static argument), and goes when the model goes
        run = interface.compiled(model, mode, lambda: jax.jit(_pure, static_argnums=(0, 3, 4)))
        out = run(graphdef, state, inputs, with_aux, every_stage)
    else:
        out = _pure(graphdef, state, inputs, with_aux, every_stage)
    return {k: _nchw(v) for k, v in zip(names, out, strict=True)}


def forward(model: GoogLeNet, x: np.ndarray, aux: bool = False, mode: str = MODES[0]):
    """Logits (or logits, aux2, aux1) as numpy, with inference behaviour."""
    return interface.forward(_run, MODES, model, x, aux, mode)


def stages(model: GoogLeNet, x: np.ndarray, mode: str = MODES[0]) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and the aux logits
    where the input size admits them."""
    return interface.stages(_run, MODES, model, x, mode)


def to_onnx(model: GoogLeNet, shape: tuple[int, ...], with_aux: bool, every_stage: bool) -> bytes:
    """Not available: no maintained JAX -> ONNX exporter is installed (jax2onnx is young
    and outside this suite's environment; ``jax2tf`` + tf2onnx would need TensorFlow in
    JAX's environment). The check reports it as skipped with this reason."""
    raise interface.Unsupported("jax: no maintained JAX -> ONNX exporter is installed (jax2onnx, jax2tf + tf2onnx)")


def count_params(model: GoogLeNet) -> tuple[int, int]:
    """(parameters, BatchNorm running statistics), as Flax sorts its variables."""
    params = nnx.state(model, nnx.Param)
    stats = nnx.state(model, nnx.BatchStat)
    return (
        sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params)),
        sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(stats)),
    )

"""What Gluon's trainer and backend need beside the layers: the network's base that
retraces per training mode, Gluon's private accessors (operator arguments, named blocks
and parameters, SGD's momentum states), the ``onnx.mapping`` shim the ONNX exporter
needs, and the catch of each BatchNorm's batch statistics during a training step.

Mirrors ``impl_torch/engine.py``, ``impl_keras/engine.py`` and ``impl_jax/engine.py``:
the same ``BatchStats`` in each, so every ``Trainer`` hands its batch statistics back
the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import types
import warnings
from collections.abc import Iterator

import mxnet as mx
import numpy as np
from mxnet.gluon import nn


class BatchStats:
    """Each BatchNorm's batch mean and (biased) variance of the last training step, by
    ``<unit>.bn.batch_mean`` / ``.batch_var``: Gluon's forward hooks see each BatchNorm's
    input as it runs, when the network runs imperatively (a hybridized graph calls no
    hook inside it, so the trainer does not hybridize while it keeps them)."""

    def __init__(self, model: nn.Block) -> None:
        self.stats: dict[str, np.ndarray] = {}
        for name, block in named_blocks(model):
            if isinstance(block, nn.BatchNorm):
                block.register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(block: nn.Block, inputs: tuple, output: mx.nd.NDArray) -> None:
            if mx.autograd.is_training():
                with mx.autograd.pause():
                    x = inputs[0]
                    mean = x.mean(axis=(0, 2, 3), keepdims=True)
                    var = mx.nd.square(mx.nd.broadcast_sub(x, mean)).mean(axis=(0, 2, 3))
                    self.stats[f"{name}.batch_mean"] = mean.reshape((-1,)).asnumpy()
                    self.stats[f"{name}.batch_var"] = var.asnumpy()

        return hook

    def last(self) -> dict[str, np.ndarray]:
        return dict(self.stats)


class Network(nn.HybridBlock):
    """The network's base: one hybridized graph per mode. Gluon traces ``hybrid_forward``
    once, at the first call after ``hybridize()``, so what it decides on
    ``autograd.is_training()`` (torchvision's aux logits in training only, BatchNorm's
    statistics update) would stay as that first call had it; this block retraces when the
    mode changes, and exports only its inference graph."""

    def forward(self, x, *args):
        training = mx.autograd.is_training()
        if training != getattr(self, "traced_training", None):
            retrace(self)
            self.traced_training = training
        with unused_aux_ignored(self):
            return super().forward(x, *args)

    def export(self, path: str, epoch: int = 0, remove_amp_cast: bool = True) -> None:
        if getattr(self, "traced_training", False):
            raise RuntimeError(
                "export: the last graph traced is the training one (aux outputs, statistics updates); "
                "run a forward outside autograd.record() first"
            )
        super().export(path, epoch, remove_amp_cast)


UNUSED = re.compile(r"Parameter (.*) is not used by any computation\. Is this intended\?")


@contextlib.contextmanager
def unused_aux_ignored(net: nn.HybridBlock) -> Iterator[None]:
    """Drop Gluon's warning that parameters are unused when they are all the aux heads'
    (in inference the graph has no aux heads, as torchvision's); re-issue every other."""
    aux = {p.name for head in net.plan.aux for p in getattr(net, head.name).collect_params().values()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        unused = UNUSED.fullmatch(str(w.message))
        if not (unused and set(unused.group(1).split(", ")) <= aux):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# Gluon 1.9 keeps several things public only as private attributes; these are the suite's
# only calls into them.


def retrace(block: nn.HybridBlock) -> None:
    """Drop a hybridized block's graph, so the next call traces it again:
    ``HybridBlock._clear_cached_op`` (``hybridize()`` does it, and resets the options)."""
    block._clear_cached_op()


def options(block: nn.Block) -> dict:
    """The operator arguments a Gluon layer runs with (``eps``, ``momentum``, ...):
    ``Block._kwargs``; Gluon has no public accessor."""
    return block._kwargs


def named_blocks(block: nn.Block, prefix: str = "") -> Iterator[tuple[str, nn.Block]]:
    """(attribute path, block) for every block in the tree: ``conv1.bn``, ``inception3a.branch2.1.bn``.
    ``Block._children``: Gluon 1.x has no ``named_children``."""
    for name, child in block._children.items():
        path = f"{prefix}{name}"
        yield path, child
        yield from named_blocks(child, path + ".")


def structural_params(block: nn.Block) -> dict[str, mx.gluon.Parameter]:
    """Parameters by attribute path, the names ``save_parameters`` writes:
    ``Block._collect_params_with_prefix``; ``collect_params`` names them by prefix instead."""
    return block._collect_params_with_prefix()


def make_trainable(param: mx.gluon.Parameter) -> None:
    """Let a parameter Gluon made fixed train (``grad_req="write"``): a BatchNorm built
    with ``scale=False`` keeps its gamma with ``Parameter._differentiable`` False, which
    makes the ``grad_req`` setter keep "null". For the pitfall that gives TF-slim's
    BatchNorm a scale."""
    param._differentiable = True
    param.grad_req = "write"


def momentum_states(trainer: mx.gluon.Trainer) -> dict[str, mx.nd.NDArray]:
    """SGD's momentum by parameter name: ``Trainer._updaters[0].states``, keyed by the
    parameter's index in ``Trainer._params`` and made at its first update (one device,
    so the trainer updates locally, not on a kvstore)."""
    updater = trainer._updaters[0]
    return {trainer._params[i].name: s for i, s in updater.states.items() if s is not None}


def set_momentum_states(trainer: mx.gluon.Trainer, states: dict[str, mx.nd.NDArray]) -> None:
    """Set the momentums ``momentum_states`` returned, before or after a first update."""
    updater = trainer._updaters[0]
    for i, param in enumerate(trainer._params):
        if param.name in states:
            updater.states[i] = states[param.name]
            updater.states_synced[i] = True


@contextlib.contextmanager
def onnx_mapping() -> Iterator[None]:
    """``mx.onnx.export_model`` imports ``onnx.mapping``, a module recent onnx releases
    no longer have (onnx 1.23: ``ImportError``): for the export, its two tables are
    rebuilt from ``onnx.helper``'s public functions, then removed again."""
    import onnx
    from onnx import helper

    if "onnx.mapping" in sys.modules or importlib.util.find_spec("onnx.mapping") is not None:
        yield
        return
    mapping = types.ModuleType("onnx.mapping")
    types_ = [t for t in onnx.TensorProto.DataType.values() if t != onnx.TensorProto.UNDEFINED]
    to_np = {}
    for t in types_:
        with contextlib.suppress(KeyError, TypeError, ValueError):  # a type numpy lacks (bfloat16, ...)
            to_np[t] = np.dtype(helper.tensor_dtype_to_np_dtype(t))
    mapping.TENSOR_TYPE_TO_NP_TYPE = to_np  # type: ignore[attr-defined]
    mapping.NP_TYPE_TO_TENSOR_TYPE = {  # type: ignore[attr-defined]
        np.dtype(n): helper.np_dtype_to_tensor_dtype(np.dtype(n)) for n in set(to_np.values())
    }
    sys.modules["onnx.mapping"] = mapping  # for "from onnx import mapping"
    setattr(onnx, "mapping", mapping)  # for onnx.mapping.NP_TYPE_TO_TENSOR_TYPE  # noqa: B010 - onnx declares none
    try:
        yield
    finally:
        sys.modules.pop("onnx.mapping", None)
        delattr(onnx, "mapping")

"""GoogLeNet in MXNet Gluon: the shared interface (see ``conformance.interface``)."""

from __future__ import annotations

import numpy as np

if "bool" not in np.__dict__:  # mxnet 1.9.1 uses numpy.bool, which numpy 1.24 removed
    np.bool = bool  # type: ignore[attr-defined]

import mxnet as mx

from conformance import interface
from conformance.canonical import default_params
from conformance.spec import Variant, resolve

from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

name = "mxnet"
__all__ = [
    "GoogLeNet",
    "Trainer",
    "build",
    "count_params",
    "forward",
    "from_canonical",
    "stages",
    "to_canonical",
    "version",
]


def version() -> str:
    return f"mxnet {mx.__version__}"


def build(
    variant: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
    dtype: str = "float32",
) -> GoogLeNet:
    """An initialised GoogLeNet holding the suite's initial weights (torchvision's
    initialisation, ``conformance.canonical.default_params``). The options are
    ``conformance.spec.resolve``'s; ``dtype``: float64 for the training-parity check."""
    model = GoogLeNet(resolve(variant, num_classes, aux_logits, transform_input))
    model.initialize(mx.init.Zero(), ctx=mx.cpu())  # overwritten below
    if dtype != "float32":
        model.cast(dtype)
    from_canonical(model, default_params(model.plan))
    return model


def _run(model: GoogLeNet, x: np.ndarray, with_aux: bool) -> dict[str, np.ndarray]:
    # Outside autograd.record() Gluon runs BatchNorm and Dropout in inference mode.
    out = model.forward_stages(mx.nd.array(x, dtype=np.float32), with_aux=with_aux)
    return {k: v.asnumpy() for k, v in out.items()}


def forward(model: GoogLeNet, x: np.ndarray, aux: bool = False):
    """Logits (or logits, aux2, aux1) as numpy, with inference behaviour."""
    return interface.forward(_run, model, x, aux)


def stages(model: GoogLeNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and the aux logits
    where the input size admits them."""
    return interface.stages(_run, model, x)


def count_params(model: GoogLeNet) -> tuple[int, int]:
    """(trainable parameters, BatchNorm running statistics): Gluon marks the statistics
    with ``grad_req='null'``, and the fixed gamma of a BatchNorm without scale (TF-slim's),
    which is no parameter of the network and is not counted."""
    params = model.collect_params().values()
    trainable = sum(int(np.prod(p.shape)) for p in params if p.grad_req != "null")
    stats = ("running_mean", "running_var")
    return trainable, sum(int(np.prod(p.shape)) for p in params if p.grad_req == "null" and p.name.endswith(stats))

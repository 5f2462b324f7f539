"""GoogLeNet in Keras 3 (TensorFlow backend): the shared interface (see
``conformance.interface``). Inputs and outputs are NCHW numpy; the model runs NHWC."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of reports

from conformance.frameworks import quiet_stderr

with quiet_stderr():  # TensorFlow's absl and oneDNN lines, printed before its logging starts
    import keras

import numpy as np

from conformance import interface
from conformance.canonical import default_params
from conformance.spec import Variant, resolve

from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

name = "keras"
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
    return f"keras {keras.__version__} ({keras.backend.backend()} {_backend_version()})"


def _backend_version() -> str:
    import importlib

    module = importlib.import_module(keras.backend.backend())
    return getattr(module, "__version__", "?")


def build(
    variant: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
    dtype: str = "float32",
) -> GoogLeNet:
    """A built GoogLeNet holding the suite's initial weights (torchvision's
    initialisation, ``conformance.canonical.default_params``). The options are
    ``conformance.spec.resolve``'s; ``dtype``: float64 for the training-parity check."""
    p = resolve(variant, num_classes, aux_logits, transform_input)
    model = GoogLeNet(p, dtype=dtype)
    from_canonical(model, default_params(p))
    return model


def _run(model: GoogLeNet, x: np.ndarray, with_aux: bool) -> dict[str, np.ndarray]:
    out = {
        k: keras.ops.convert_to_numpy(v)
        for k, v in model.forward_stages(x.transpose(0, 2, 3, 1), with_aux=with_aux, training=False).items()
    }
    # NHWC -> NCHW for every 4-D activation; a flattened map from (H, W, C) to (C, H, W) order.
    flat = model.plan.fc.flattened_from
    if flat is not None:
        c, h, w = flat
        out["flatten"] = out["flatten"].reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, c * h * w)
    return {k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for k, v in out.items()}


def forward(model: GoogLeNet, x: np.ndarray, aux: bool = False):
    """Logits (or logits, aux2, aux1) as numpy, with inference behaviour."""
    return interface.forward(_run, model, x, aux)


def stages(model: GoogLeNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and the aux logits
    where the input size admits them."""
    return interface.stages(_run, model, x)


def count_params(model: GoogLeNet) -> tuple[int, int]:
    """(trainable weights, non-trainable weights: BatchNorm's moving statistics), as Keras
    counts them. ``model.count_params()`` would add the two."""
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    return trainable, sum(int(np.prod(v.shape)) for v in model.non_trainable_weights)

"""torchvision's own GoogLeNet: its state_dict loads into all three frameworks and they
reproduce its outputs.

torchvision is not a dependency (0.29.1 needs torch 2.14.1), so
``scripts/make_torchvision_reference.py`` recorded its outputs for seeded canonical
weights into ``tests/data``; these tests check every installed framework against that
record. Where torchvision itself is importable, a live test compares directly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import agreement

from .conftest import backend_or_skip
from .helpers import random_images

DATA = Path(__file__).parent / "data"
SEED, SIZES, BATCH = 7, (224, 97), 2  # as scripts/make_torchvision_reference.py
OPTIONS = {"aux_logits": True, "transform_input": True}


def reference_params() -> dict[str, np.ndarray]:
    p = spec.resolve("googlenet_bn", **OPTIONS)
    return canonical.random_params(p, SEED)


def reference_input(size: int) -> np.ndarray:
    """The input the recorded outputs were computed from (``data/torchvision_googlenet_outputs.npz``)."""
    return random_images(BATCH, size, seed=[SEED, size])


@pytest.fixture(scope="module")
def recorded():
    with np.load(DATA / "torchvision_googlenet_outputs.npz") as f:
        return {k: f[k] for k in f.files}


def test_recorded_weights_are_the_ones_regenerated_here(recorded):
    h = hashlib.sha256()
    for key, value in reference_params().items():
        h.update(key.encode())
        h.update(value.tobytes())
    assert h.hexdigest() == str(recorded["params_sha256"]), "numpy's seeded stream changed"


@pytest.mark.parametrize("name", ["torch", "keras", "mxnet"])
def test_frameworks_reproduce_torchvision(name, recorded):
    b = backend_or_skip(name)
    model = b.build("googlenet_bn", **OPTIONS)
    b.from_canonical(model, reference_params())
    for size in SIZES:
        logits, aux2, aux1 = b.forward(model, reference_input(size), aux=True)
        for label, got in (("logits", logits), ("aux1", aux1), ("aux2", aux2)):
            a = agreement(recorded[f"{label}_{size}"], got, logits=True)
            assert a.passed, f"{name} {label} at {size}: {a}"


@pytest.mark.parametrize("name", ["torch", "keras", "mxnet"])
def test_live_torchvision_state_dict_loads(name):
    tv = pytest.importorskip(
        "torchvision",
        reason="torchvision not installed (0.29.1 needs torch 2.14.1: "
        "pip install torch==2.14.1 torchvision==0.29.1 in a side venv); the recorded "
        "reference above covers this case",
    )
    import torch

    b = backend_or_skip(name)
    model = tv.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    with torch.no_grad():  # torchvision initialises BN statistics to 0/1: make them count
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(1e-3, 1e-2)
    x = reference_input(224)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    ours = b.build("googlenet_bn")
    b.from_canonical(ours, canonical.from_state_dict(model.state_dict()))
    a = agreement(expected, b.forward(ours, x), logits=True)
    assert a.passed, f"{name}: {a}"

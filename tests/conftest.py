"""Shared fixtures: frameworks load once, models are built once per session (a Keras
GoogLeNet takes a second or two to build on 2 cores)."""

from __future__ import annotations

import contextlib
import types

import pytest

from conformance import canonical, frameworks, spec
from conformance.check.harness import full_options

# Only where torchvision is installed (a side venv): its CUDA build of torch 2.14.1
# segfaults when TensorFlow was imported before it.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401

FRAMEWORKS = list(frameworks.FRAMEWORKS)
_BACKENDS, _SKIPPED = frameworks.load(FRAMEWORKS)
_MODELS: dict[tuple, object] = {}


def backend_or_skip(name: str):
    if name not in _BACKENDS:
        pytest.skip(f"{name}: {_SKIPPED[name]}")
    return _BACKENDS[name]


def installed() -> dict:
    return dict(_BACKENDS)


@pytest.fixture(params=FRAMEWORKS)
def backend(request):
    """Each framework in turn; skipped with its install hint where it is not installed."""
    return backend_or_skip(request.param)


def full_plan(variant: str) -> spec.Plan:
    return spec.resolve(variant, **full_options(spec.VARIANTS[variant]))


def loaded_model(b, variant: str, seed: int = 0):
    """A model with every option on (aux heads, input transform), holding the seeded
    canonical weights. Shared: tests must not change its weights."""
    key = (b.name, variant, seed)
    if key not in _MODELS:
        model = b.build(variant, **full_options(spec.VARIANTS[variant]))
        b.from_canonical(model, canonical.random_params(full_plan(variant), seed))
        _MODELS[key] = model
    return _MODELS[key]


FUNCTIONS = (
    "name",
    "MODES",
    "build",
    "to_canonical",
    "from_canonical",
    "forward",
    "stages",
    "count_params",
    "version",
    "Trainer",
    "to_onnx",
)


def patched(b, **overrides) -> types.SimpleNamespace:
    """A backend with some functions replaced: how the negative controls break a port."""
    return types.SimpleNamespace(**{**{f: getattr(b, f) for f in FUNCTIONS}, **overrides})

"""Shared fixtures: frameworks load once, models are built once per session (per worker
with pytest-xdist; a Keras GoogLeNet takes a second or two to build on 2 cores)."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import types
from pathlib import Path

import filelock
import pytest

from conformance import canonical, frameworks, spec
from conformance.check.inputs import full_options
from conformance.interface import EAGER
from conformance.teach import pitfalls

from .helpers import command

# Only where torchvision is installed (a side venv): its CUDA build of torch 2.14.1
# segfaults when TensorFlow was imported before it.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
# Each program XLA compiles in a test (JAX's, and TensorFlow's jit_compile) runs a few times
# at most: LLVM's optimisation of its generated loops (float64 convolutions above all) costs
# more than it saves. It changes how the machine code runs, not which operations it runs:
# the same tolerances hold the results. Set before any framework starts XLA, and inherited
# by the suite's own processes.
XLA_ONE_CALL = "--xla_backend_optimization_level=0"
if XLA_ONE_CALL not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_ONE_CALL}".strip()
# TensorFlow turns oneDNN on by itself on some CPUs only (not on AMD's): on, the suite runs
# the same kernels on every x86 machine, and a channels_first Keras model runs on the CPU.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# A third party's package and its own tests: tests/test_plugins.py installs it first.
collect_ignore = ["plugin_demo"]
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


def patched(b, **overrides) -> types.SimpleNamespace:
    """A backend with some functions replaced: how the negative controls break a port."""
    return pitfalls.patched(b, **overrides)


def eager_only(backends: dict) -> dict:
    """``backends`` with their eager mode only, for a negative control: the harness compares
    the frameworks' eager stages, so a broken port fails there; each fast mode is held to
    eager by the checks of correct ports (tests/test_modes.py, the check itself)."""
    return {name: patched(b, MODES=(EAGER,)) for name, b in backends.items()}


def torch_state(variant: str, aux: bool = True, seed: int = 0, num_classes: int = 1000, **options):
    """A PyTorch state_dict as torchvision writes one (num_batches_tracked included)."""
    t = backend_or_skip("torch")
    model = t.build(variant, num_classes, aux, **options)
    t.from_canonical(model, canonical.random_params(model.plan, seed))
    return model.state_dict()


def mnist_pth(path: Path, variant: str = "inception_mnist") -> Path:
    """A PyTorch state_dict of ``variant`` (its own classes, no aux) with the seeded weights."""
    t = backend_or_skip("torch")
    import torch

    model = t.build(variant)
    t.from_canonical(model, canonical.random_params(model.plan, 0))
    torch.save(model.state_dict(), path)
    return path


def save_torch(obj, path: Path) -> Path:
    import torch

    torch.save(obj, path)
    return path


def cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m conformance ARGS`` in a fresh process, on this tree's code (whatever ``cwd``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        command(*args),
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


PITFALL_BATCH = 4  # the command's default is 64; the first divergent stage does not depend on it
EAGER_STAGES = {"keras", "mxnet"}  # the frameworks whose stages the pitfall fixture runs eagerly


# Measured by the long tests only (pytest -m e2e): each compiles a float64 training step with
# XLA, whose CPU convolutions in float64 are generated loops, not a library's call.
XLA_TRAINING = frozenset(n for n, p in pitfalls.PITFALLS.items() if p.framework == "jax" and p.kind == "training")


def measure_pitfalls(names: list[str]) -> dict:
    """``names`` on each of their default variants (small batch), by (pitfall, variant)."""
    from conformance.teach import measure

    # the optional frameworks whose ports the catalogue names (jax): skipped with the reason where not installed
    optional = sorted({pitfalls.PITFALLS[n].framework for n in names} - set(FRAMEWORKS))
    extra, extra_skipped = frameworks.load(optional)
    backends, skipped = {**_BACKENDS, **extra}, {**_SKIPPED, **extra_skipped}
    # Stages eagerly: the default modes compile the whole network first (Keras's traced graph,
    # Gluon's hybrid graph) for one batch here. The stage where a port first diverges is the
    # same in either mode; the command test in tests/test_pitfalls.py measures through the
    # default modes. JAX's default, one XLA program with every stage an output, compiled
    # without LLVM's optimisation (XLA_ONE_CALL), costs less than its eager mode, which
    # compiles each operation of each shape on its own.
    for name in EAGER_STAGES & set(backends):
        backends[name] = patched(backends[name], stages=functools.partial(backends[name].stages, mode=EAGER))
    results = measure.run(names, None, backends, skipped, batch=PITFALL_BATCH)
    return {(m.pitfall, m.variant): m for m in results}


def skip_without_jax(measured: dict) -> None:
    """Skip, with the catalogue's reason, where every one of ``measured`` went unmeasured for want of jax."""
    if all(m.skipped for m in measured.values()):
        reason = next(iter(measured.values())).skipped
        assert reason.startswith("jax is not installed")
        pytest.skip(reason)


def measured_once(key: str, names: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """:func:`measure_pitfalls` once for the whole run. Under pytest-xdist each worker is a
    session of its own: the first worker to ask measures and writes the ``pitfalls --json``
    report into the run's shared temporary directory, and the others wait on its lock and
    read it (xdist's documented pattern for a session fixture)."""
    from conformance.teach import measure

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return measure_pitfalls(names)
    # the run's own name too: with remote workers (no basetemp given) the parent outlives the run
    path = tmp_path_factory.getbasetemp().parent / f"{key}-{os.environ.get('PYTEST_XDIST_TESTRUNUID', '')}.json"
    with filelock.FileLock(f"{path}.lock"):
        if not path.is_file():
            measured = measure_pitfalls(names)
            measure.write_json(list(measured.values()), path, PITFALL_BATCH, 0)
            return measured
    return {(m.pitfall, m.variant): m for m in measure.read_json(path, key)[0]}


@pytest.fixture(scope="session")
def pitfall_measurements(tmp_path_factory):
    """Every pitfall but ``XLA_TRAINING`` on each of its default variants, measured once per run."""
    names = [n for n in pitfalls.PITFALLS if n not in XLA_TRAINING]
    return measured_once("pitfall_measurements", names, tmp_path_factory)


@pytest.fixture(scope="session")
def xla_training_pitfall_measurements(tmp_path_factory):
    """The ``XLA_TRAINING`` pitfalls on each of their default variants (for -m e2e: three
    of its files read them), measured once per run."""
    return measured_once("xla_training_pitfall_measurements", sorted(XLA_TRAINING), tmp_path_factory)

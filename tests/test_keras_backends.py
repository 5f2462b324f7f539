"""Keras 3's promise, one model on three backends: ``impl_keras`` on tensorflow, jax and
torch, each in a process of its own (Keras fixes its backend on import), held to the
spec's counts and to impl_torch's stages and training step, within the suite's
tolerance (``conformance.check.compare``). The worker is tests/keras_backend_worker.py.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conformance import spec
from conformance.canonical import random_params
from conformance.check.compare import agreement
from conformance.check.inputs import seeded_input
from conformance.check.training import train_row, zero_gradients

WORKER = Path(__file__).with_name("keras_backend_worker.py")
ROOT = WORKER.parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
STAGES = ("googlenet_bn", 64, "float32")  # BatchNorm, ceil-mode pools, aux-free at 64
TRAIN = ("googlenet_cifar", 32, "float64")  # BatchNorm in training mode, conv biases, at its own size
EXPORT = ("inception_mnist", 28)  # the smallest network: an export traces the whole graph
SEED, BATCH = 0, 2  # the worker's
SWAPPED = "torch"  # the backend whose process also loads the negative control's swapped weights
# The float64 step against impl_torch's: float64's rounding (1.1e-16) grown over the
# forward and backward passes' sums stays orders below these; one float32 operation
# inside (a rounding of 6e-8) lands orders above them (measured: docs/frameworks.md,
# "One model, three backends").
FLOAT64_LOSS = 1e-12
FLOAT64_GRADIENTS = 1e-10


# The worker's jobs one after another in one process: Keras and its backend import once
# (seconds each), and each job is the command line the worker takes on its own.
IN_ONE_PROCESS = (
    "import runpy, shlex, sys\n"
    "main = runpy.run_path(sys.argv[1])['main']\n"
    "for job in sys.argv[2:]:\n"
    "    sys.argv = [sys.argv[1], *shlex.split(job)]\n"
    "    main()\n"
)


def run_jobs(backend: str, tmp_path: Path, *jobs: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """What the worker found for each job (its arguments after the output file), in one
    process of ``backend``."""
    outs = [tmp_path / f"{backend}-{i}-{job[0]}.npz" for i, job in enumerate(jobs)]
    lines = [" ".join([job[0], str(out), *job[1:]]) for job, out in zip(jobs, outs, strict=True)]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", IN_ONE_PROCESS, str(WORKER), *lines],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = []
    for out in outs:
        with np.load(out) as contents:
            found.append({k: contents[k] for k in contents.files})
    return found


def torch_stages(variant: str, size: int, dtype: str) -> dict[str, np.ndarray]:
    import impl_torch

    plan = spec.resolve(variant)
    model = impl_torch.build(variant, dtype=dtype)
    impl_torch.from_canonical(model, random_params(plan, SEED))
    return impl_torch.stages(model, seeded_input(plan, size, BATCH, SEED))


def torch_step(variant: str, size: int, dtype: str) -> dict[str, np.ndarray]:
    import impl_torch

    plan = spec.resolve(spec.without_dropout(spec.variant(variant)))
    model = impl_torch.build(plan.variant, dtype=dtype)
    impl_torch.from_canonical(model, random_params(plan, SEED, training=True))
    x = seeded_input(plan, size, BATCH, SEED).astype(dtype)
    y = np.random.default_rng([SEED, size, 1]).integers(0, plan.num_classes, BATCH)
    trainer = impl_torch.Trainer(model, lr=0.01, momentum=0.9, record=True)
    loss, _ = trainer.step(x, y)
    return {"loss": np.array([loss]), **{f"grad/{k}": v for k, v in trainer.gradients().items()}}


def disagreements(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], prefix: str) -> list[str]:
    """The stages of ``got`` (under ``prefix``) outside the suite's tolerance of ``ref``."""
    mine = {k.removeprefix(prefix): v for k, v in got.items() if k.startswith(prefix)}
    assert set(mine) == set(ref)
    return [k for k in ref if not agreement(ref[k], mine[k], logits=k == "logits").passed]


def step_disagreements(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], variant: str) -> list[str]:
    plan = spec.resolve(spec.without_dropout(spec.variant(variant)))
    grads = {k.removeprefix("grad/"): v for k, v in got.items() if k.startswith("grad/")}
    ref_grads = {k.removeprefix("grad/"): v for k, v in ref.items() if k.startswith("grad/")}
    worst, agree = train_row("gradients", ref_grads, grads, zero_gradients(plan))
    failed = [] if agree.passed else [f"gradients ({worst})"]
    return failed + ([] if agreement(ref["loss"], got["loss"]).passed else ["loss"])


def float64_errors(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], variant: str) -> tuple[float, float]:
    """(the loss's relative error, the worst gradient's largest error over its largest
    value; a gradient that is exactly zero, over its unit's weight gradient's)."""
    plan = spec.resolve(spec.without_dropout(spec.variant(variant)))
    scale = zero_gradients(plan)
    loss = float(abs(got["loss"][0] - ref["loss"][0]) / abs(ref["loss"][0]))
    grads = [k.removeprefix("grad/") for k in ref if k.startswith("grad/")]
    worst = max(
        float(np.abs(got[f"grad/{k}"] - ref[f"grad/{k}"]).max() / np.abs(ref[f"grad/{scale.get(k, k)}"]).max())
        for k in grads
    )
    return loss, worst


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, np.ndarray]]:
    return {"stages": torch_stages(*STAGES), "train": torch_step(*TRAIN)}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Callable[[str], dict[str, dict[str, np.ndarray]]]:
    """Each backend's counts, stages and training step, from one process per backend
    (started when a test first asks for that backend)."""
    found: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    def of(backend: str) -> dict[str, dict[str, np.ndarray]]:
        if backend not in found:
            jobs = {
                "counts": ("counts",),
                "stages": ("stages", *map(str, STAGES)),
                "train": ("train", *map(str, TRAIN)),
            }
            if backend == SWAPPED:  # the negative control's jobs: Keras and its backend import once for both
                jobs |= {
                    "swapped stages": ("stages", *map(str, STAGES), "--swap"),
                    "swapped train": ("train", *map(str, TRAIN), "--swap"),
                }
            results = run_jobs(backend, tmp_path_factory.mktemp(backend), *jobs.values())
            found[backend] = dict(zip(jobs, results, strict=True))
        return found[backend]

    return of


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_variant_builds_with_the_spec_counts(backend, measured):
    counts = measured(backend)["counts"]
    assert set(counts) == set(spec.VARIANTS)
    for variant, (trainable, statistics, spec_trainable, spec_statistics) in counts.items():
        assert (trainable, statistics) == (spec_trainable, spec_statistics), variant


@pytest.mark.parametrize("backend", BACKENDS)
def test_stages_match_torch_and_the_round_trip_is_exact(backend, measured, reference):
    found = measured(backend)["stages"]
    assert bool(found["round_trip_identical"])
    assert disagreements(reference["stages"], found, "default/") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_training_step_matches_torch(backend, measured, reference):
    found = measured(backend)["train"]
    assert step_disagreements(reference["train"], found, TRAIN[0]) == []
    loss, gradients = float64_errors(reference["train"], found, TRAIN[0])
    assert loss < FLOAT64_LOSS and gradients < FLOAT64_GRADIENTS, (loss, gradients)


@pytest.mark.e2e  # a float64 training step of googlenet_cifar of its own
def test_float32_promotion_inside_the_float64_step_is_caught(tmp_path, reference):
    """Negative control: Keras's own type promotion on the torch backend (float64 to
    float32 in ``ops.matmul`` and ``ops.mean``, which ``impl_keras.engine.keep_float64``
    mends) still passes the suite's float32 tolerance, and fails the float64 bounds."""
    (found,) = run_jobs("torch", tmp_path, ("train", *map(str, TRAIN), "--float32-promotion"))
    assert step_disagreements(reference["train"], found, TRAIN[0]) == []
    loss, gradients = float64_errors(reference["train"], found, TRAIN[0])
    assert loss > FLOAT64_LOSS * 1000 and gradients > FLOAT64_GRADIENTS * 100, (loss, gradients)


def test_a_swapped_weight_fails_the_stages_and_the_step(measured, reference):
    """Negative control: two of conv1's output channels exchanged when loading (a wrong
    mapping) moves every stage from conv1 on, and the step's loss and gradients."""
    found, stepped = measured(SWAPPED)["swapped stages"], measured(SWAPPED)["swapped train"]
    assert bool(found["round_trip_identical"]) is False  # what went in is not what comes out
    assert disagreements(reference["stages"], found, "default/")[:1] == ["conv1"]
    assert step_disagreements(reference["train"], stepped, TRAIN[0]) != []


def test_keras_names_spell_canonical_names_one_to_one():
    """The dash spelling (torch's ParameterDict refuses '.') maps back to every canonical
    layer name, and a canonical name holding the dash itself is refused, as it would map
    two names to one."""
    from impl_keras.weights import canonical_name, keras_name, table

    for variant in spec.VARIANTS:
        plan = spec.resolve(variant, aux_logits=bool(spec.variant(variant).aux))
        layers = {row.layer for row in table(plan).values()}
        assert all("." not in layer for layer in layers)
        assert len({canonical_name(layer) for layer in layers}) == len(layers)
    assert canonical_name(keras_name("inception3a.branch2.1.conv")) == "inception3a.branch2.1.conv"
    assert canonical_name("inception3a.branch2.1.conv") == "inception3a.branch2.1.conv"  # the old spelling
    with pytest.raises(ValueError, match="holds '-'"):
        keras_name("inception3a.branch-2")


@pytest.mark.e2e  # torch.onnx.export traces the whole model, then ONNX Runtime runs it
def test_keras_on_torch_exports_onnx_and_refuses_a_savedmodel(tmp_path):
    """torch's ONNX export (``torch.onnx.export``, under Keras's ``export``) run by ONNX
    Runtime agrees with the backend's own stages; a SavedModel is refused in one line
    naming the backend and why."""
    (found,) = run_jobs("torch", tmp_path, ("exports", *map(str, EXPORT)))
    assert str(found["savedmodel_refused"]).startswith("keras on torch: SavedModel export needs TensorFlow's backend")
    if "onnx_refused" in found:
        pytest.skip(str(found["onnx_refused"]))
    onnx = {k.removeprefix("onnx/"): v for k, v in found.items() if k.startswith("onnx/")}
    assert onnx and disagreements(onnx, found, "default/") == []


def test_keras_on_jax_refuses_what_it_cannot_export(tmp_path):
    """Keras's ONNX export on JAX runs jax2onnx: refused in one line where it is not
    installed, else held to the backend's stages; a SavedModel is refused in one line."""
    (found,) = run_jobs("jax", tmp_path, ("exports", *map(str, EXPORT)))
    assert str(found["savedmodel_refused"]).startswith("keras on jax: SavedModel export needs TensorFlow's backend")
    if importlib.util.find_spec("jax2onnx") is None:
        assert str(found["onnx_refused"]) == (
            "keras on jax: Keras's ONNX export on jax runs jax2onnx, which is not installed (pip install jax2onnx)"
        )
    else:
        onnx = {k.removeprefix("onnx/"): v for k, v in found.items() if k.startswith("onnx/")}
        assert onnx and disagreements(onnx, found, "default/") == []


@pytest.mark.parametrize(("backend", "fmt"), [("torch", "keras"), ("jax", "savedmodel")])
def test_port_refuses_keras_formats_on_another_backend(backend, fmt, tmp_path):
    """port writes Keras's files with Keras on TensorFlow: with KERAS_BACKEND set
    otherwise it says so in one line, exit 2, before reading anything, and writes
    nothing. The source is not even a checkpoint: it is never read."""
    source = tmp_path / "weights.npz"
    source.write_bytes(b"not read")
    target = tmp_path / f"out.{fmt}"
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "conformance", "port", str(source), str(target), "--to", fmt],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --to {fmt}: this process has KERAS_BACKEND={backend}, ")
    assert "unset KERAS_BACKEND" in lines[0] and not target.exists()
    assert ("SavedModel export needs TensorFlow" in lines[0]) == (fmt == "savedmodel")


def test_init_refuses_a_keras_file_on_another_backend(tmp_path):
    """init writes seeded weights as port does: the same one line before any work."""
    target = tmp_path / "out.keras"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "conformance", "init", str(target), "--variant", "inception_mnist"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --to keras: this process has KERAS_BACKEND=jax, ") and not target.exists()

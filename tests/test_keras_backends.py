"""Keras 3's promise, one model on three backends: ``impl_keras`` on tensorflow, jax and
torch, each in a process of its own (Keras fixes its backend on import), held to the
spec's counts and to impl_torch's stages and training step, within the suite's
tolerance (``conformance.check.compare``). The worker is tests/keras_backend_worker.py.
"""

from __future__ import annotations

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
SEED, BATCH = 0, 2  # the worker's


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


def test_a_swapped_weight_fails_the_stages_and_the_step(tmp_path, reference):
    """Negative control: two of conv1's output channels exchanged when loading (a wrong
    mapping) moves every stage from conv1 on, and the step's loss and gradients."""
    found, stepped = run_jobs(
        "torch", tmp_path, ("stages", *map(str, STAGES), "--swap"), ("train", *map(str, TRAIN), "--swap")
    )
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

"""Aux heads that are built but not admitted at the input size (issue 24): outside the
loss, they take no gradient, and no engine may update them. ``googlenet`` at 47 (what
``check --distributed`` runs by default) builds both heads, whose 5 x 5 / 3 pool needs
a 14-16 map that only sizes 223 and up give.

What each engine must do, and what the tests hold it to:

* PyTorch: their ``.grad`` stays None, which ``torch.optim.SGD`` skips (no update, the
  momentum buffer not applied); DDP must be built with ``find_unused_parameters``, or
  its reducer waits for gradients that never come.
* Keras: they are left out of the step's variables (``impl_keras.train.trained_variables``):
  no None gradient reaches the optimizer, which would skip it with a warning that breaks
  into the report, and ``gradients()`` names none of them.
* MXNet: ``grad_req='null'`` for the step (``impl_mxnet.train.Trainer.update``): Gluon
  neither all-reduces nor updates them, and its stale-gradient check, which refused the
  step before, still guards every other parameter.
"""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

from conformance import spec
from conformance.canonical import random_params
from conformance.check import distributed, distributed_runs

from .conftest import ROOT, backend_or_skip
from .helpers import command

FRAMEWORKS = ("torch", "keras", "mxnet")
RESTING = 47  # googlenet's default size here: the aux heads are built, not admitted
ADMITTING = 224
FLAGS = ("--frameworks", "torch")  # one engine keeps the command-line test short


def _plan() -> spec.Plan:
    return distributed_runs.plan("googlenet")


def test_the_sizes_tell_the_heads_apart():
    p = _plan()
    assert p.aux and not spec.aux_admits(p, RESTING) and spec.aux_admits(p, ADMITTING)
    assert distributed.default_size("googlenet") == RESTING
    keys = distributed.resting_keys(p, RESTING)
    assert len(keys) == 12 and all(k.startswith(("aux1.", "aux2.")) for k in keys)
    assert distributed.resting_keys(p, ADMITTING) == []


@pytest.mark.parametrize("variant", list(spec.VARIANTS))
def test_every_variant_gets_a_size_it_admits(variant):
    """Row 9: the MNIST nets run only at 28-31, below the usual 32 (a StopIteration then)."""
    size = distributed.default_size(variant)
    assert any(lo <= size <= hi for lo, hi in spec.admitted(spec.resolve(variant)))


# -- the check's row, and its negative controls ---------------------------------------------


def _results(p: spec.Plan, params, workers: int = 2) -> list[dict[str, np.ndarray]]:
    """What workers that left the resting heads alone save (weights only matter here)."""
    return [{f"weights/{k}": v.copy() for k, v in params.items()} for _ in range(workers)]


def test_the_resting_row_passes_untouched_heads_and_fails_a_moved_or_graded_one():
    p = _plan()
    params = random_params(p, 0, training=True)
    rows = distributed.resting_rows(p, RESTING, params, _results(p, params))
    assert len(rows) == 2 and all(r.passed and r.keys == 12 for r in rows)

    moved = _results(p, params)
    w = moved[1]["weights/aux2.fc1.weight"]
    w.flat[0] = np.nextafter(
        w.flat[0], w.dtype.type(np.inf)
    )  # one ulp: an update of a zero gradient with momentum does more
    rows = distributed.resting_rows(p, RESTING, params, moved)
    assert rows[0].passed and not rows[1].passed
    assert rows[1].worst == "aux2.fc1.weight" and rows[1].agreement.max_abs > 0

    graded = _results(p, params)
    graded[0]["gradients/aux1.conv.conv.weight"] = np.zeros_like(params["aux1.conv.conv.weight"])
    rows = distributed.resting_rows(p, RESTING, params, graded)
    assert not rows[0].passed and rows[0].worst == "aux1.conv.conv.weight has a gradient"

    assert distributed.resting_rows(p, ADMITTING, params, moved) == []  # admitted: trained, nothing to hold


# -- each engine: distributed, and its single process ---------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_every_engine_leaves_a_resting_head_without_gradient_and_unchanged(fw):
    b = backend_or_skip(fw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case, _ = distributed.check_framework(fw, b, "googlenet", RESTING, 2, seed=0)
    assert case.error is None, case.error
    assert case.passed, distributed.render([case])
    rows = {r.quantity: r for r in case.rows}
    resting = [r for q, r in rows.items() if q.startswith("aux not admitted")]
    assert len(resting) == (1 if fw == "keras" else 2)  # a row per process: Keras holds both replicas in one
    assert all(r.keys == 12 and r.agreement.max_abs == 0.0 for r in resting), distributed.render([case])
    assert rows["gradients of step 1"].keys == rows[f"weights after step {distributed.STEPS}"].keys - 12
    # Keras's "Gradients do not exist for variables [aux1...]" broke into the report
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_a_resting_head_is_not_moved_by_momentum_left_in_it(fw):
    """No gradient is not a zero gradient: with momentum in the heads (a resumed run that
    trained them at a size admitting them), a step at a size that does not admit them must
    leave their weights and momentum to the bit, while the rest trains."""
    b = backend_or_skip(fw)
    p = _plan()
    model = b.build(p.variant, **p.options.asdict())
    b.from_canonical(model, random_params(p, 0, training=True))
    trainer = b.Trainer(model, lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((2, 3, RESTING, RESTING)).astype(np.float32), rng.integers(0, p.num_classes, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.step(x, labels)
        keys = distributed.resting_keys(p, RESTING)
        shapes = {k: v.shape for k, v in b.to_canonical(model).items()}
        # the control: a zero-gradient update would move them, their momentum is not zero
        trainer.load_state({k: np.full(shapes[k], 1e-2, np.float32) for k in keys})
        before, momentum = b.to_canonical(model), trainer.state()
        trainer.step(x, labels)
    after, state = b.to_canonical(model), trainer.state()
    assert [k for k in keys if not np.array_equal(after[k], before[k])] == []
    assert {k: state[k].tobytes() for k in keys} == {k: momentum[k].tobytes() for k in keys}
    assert all(np.abs(state[k]).min() > 0 for k in keys)
    assert not np.array_equal(after["fc.weight"], before["fc.weight"])  # the rest trained
    assert not set(keys) & set(trainer.gradients())
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]


def test_mxnet_trains_the_heads_again_at_a_size_that_admits_them():
    """Gluon's grad_req is held at 'null' for one step only: at 224, after a step at 47,
    the heads have fresh gradients again (the hybridized graph) and move."""
    b = backend_or_skip("mxnet")
    p = _plan()
    model = b.build(p.variant, **p.options.asdict())
    b.from_canonical(model, random_params(p, 0, training=True))
    trainer = b.Trainer(model, lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, p.num_classes, 2)
    trainer.step(rng.standard_normal((2, 3, RESTING, RESTING)).astype(np.float32), labels)
    before = b.to_canonical(model)
    trainer.step(rng.standard_normal((2, 3, ADMITTING, ADMITTING)).astype(np.float32), labels)
    after = b.to_canonical(model)
    keys = distributed.resting_keys(p, RESTING)
    assert set(keys) <= set(trainer.gradients())
    assert all(not np.array_equal(after[k], before[k]) for k in keys)


def test_keras_refuses_a_trained_variable_without_gradient():
    """The negative control of Keras's guard: a variable among the trained ones that the
    loss does not reach is named, not skipped with a warning."""
    backend_or_skip("keras")
    import tensorflow as tf

    from impl_keras import engine, train

    b = backend_or_skip("keras")
    p = _plan()
    model = b.build(p.variant, **p.options.asdict())
    variables = train.trained_variables(model, with_aux=True)  # the heads included
    x = tf.constant(np.zeros((1, RESTING, RESTING, 3), np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model.forward_stages(x, with_aux=False, training=True)["logits"])
    with pytest.raises(ValueError, match=r"no gradient reaches aux1/"):
        engine.every_gradient(variables, tape.gradient(loss, variables))
    assert len(train.trained_variables(model, with_aux=False)) == len(variables) - 12


@pytest.mark.e2e
def test_check_distributed_on_an_mnist_net_runs_instead_of_a_traceback():
    """Row 9, as a user types it (PyTorch only, to keep the test short)."""
    backend_or_skip("torch")
    done = subprocess.run(
        command("check", "--distributed", *("--variant", "inception_mnist"), *FLAGS),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "torch inception_mnist at 31, 2 workers x 2, float64: PASS" in done.stdout

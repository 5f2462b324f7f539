"""Keras's data-parallel figures, measured in a fresh process: ``python -m
tests.distributed_keras_run`` prints one JSON object. Fresh, because MirroredStrategy's
logical CPUs must be configured before TensorFlow initialises its devices, which any
Keras op in the pytest process would already have done.

Two replicas x batch 2 against one process with batch 4 (the plain ``impl_keras``
Trainer), float64, dropout off (as ``check --train``):

* ``parity``: googlenet_d2l at 32, two steps of SGD (lr 0.01, momentum 0.9): the loss per
  step, every gradient of step 1, every weight after step 2; and the two faults.
* ``batchnorm``: googlenet_cifar at 8, one step: each replica's batch statistics against
  a single-process Trainer on its shard, and its running statistics against NumPy
  combining the shards' batch statistics by each candidate rule (own, mean, rank 0).
* ``synchronized``: the same with synchronized=True against one process with batch 4.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping

import numpy as np

import impl_keras
from conformance import canonical, spec
from conformance.check.compare import agreement
from conformance.check.harness import without_dropout, zero_gradients
from conformance.world import FAULTS, World
from impl_keras import distributed
from impl_keras.layers import BatchNorm, walk

WORKERS, BATCH = 2, 2
LR, MOMENTUM = 0.01, 0.9


def errors(
    got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], scales: Mapping[str, str] | None = None
) -> dict[str, float]:
    """The worst key's absolute and relative error (``compare.agreement``'s: relative to
    the key's largest magnitude, or to ``scales[key]``'s where the exact value is zero,
    as ``check --train`` measures a conv bias before BatchNorm). Both need the same keys."""
    if got.keys() != ref.keys():
        raise AssertionError(f"different keys: {sorted(got.keys() ^ ref.keys())[:3]}")
    scales = scales or {}
    rows = [
        agreement(ref[k], got[k], scale=float(np.max(np.abs(ref[scales[k]]))) if k in scales else None) for k in ref
    ]
    return {"abs": max(a.max_abs for a in rows), "rel": max(a.max_rel for a in rows)}


def data(p: spec.Plan, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p.in_channels, size, size)), rng.integers(0, p.num_classes, n)


def model(variant: spec.Variant, params: Mapping[str, np.ndarray], distributed_: bool):
    if distributed_:
        with distributed.scope():
            m = impl_keras.build(variant, dtype="float64")
    else:
        m = impl_keras.build(variant, dtype="float64")
    impl_keras.from_canonical(m, params)
    return m


def parity() -> dict:
    variant = without_dropout(spec.variant("googlenet_d2l"))
    p = spec.resolve(variant)
    params = canonical.random_params(p, 0, training=True)
    x, y = data(p, 32, WORKERS * BATCH, 1)

    def run(make: Callable, in_scope: bool) -> tuple[list[float], dict, dict]:
        m = model(variant, params, in_scope)
        trainer = make(m)
        losses = [trainer.step(x, y)[0]]
        grads = trainer.gradients()
        losses.append(trainer.step(x, y)[0])
        return losses, grads, impl_keras.to_canonical(m)

    world = World(WORKERS)
    ref = run(lambda m: impl_keras.Trainer(m, LR, MOMENTUM), False)
    out: dict = {"reference_loss": ref[0]}
    for fault in (None, *FAULTS):
        got = run(lambda m, f=fault: distributed.Trainer(m, LR, MOMENTUM, world=world, fault=f), True)
        out[fault or "ok"] = {
            "loss": got[0],
            "loss_abs": max(abs(a - b) for a, b in zip(got[0], ref[0], strict=True)),
            "gradients": errors(got[1], ref[1]),
            "weights": errors(got[2], ref[2]),
        }
    return out


def bn_counts(m) -> dict[str, int]:
    """Rows each BatchNorm averaged over in a training call (N x H x W), seen by wrapping
    its ``call``: the n of the unbiased running variance, n / (n - 1)."""
    counts: dict[str, int] = {}
    for layer in walk(m):
        if isinstance(layer, BatchNorm):

            def call(x, training=None, mask=None, layer=layer, inner=layer.call):
                counts[layer.name] = int(np.prod(x.shape[:3]))
                return inner(x, training=training, mask=mask)

            layer.call = call
    return counts


def running(params: Mapping[str, np.ndarray], stats: Mapping[str, np.ndarray], counts: Mapping[str, int]) -> dict:
    """NumPy: the running statistics after one step from ``params``'s, folding batch
    statistics in as PyTorch does (momentum 0.1, unbiased variance)."""
    out = {}
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}  # float64, as the model holds them
    for bn, n in counts.items():
        mean, var = stats[f"{bn}.batch_mean"], stats[f"{bn}.batch_var"]
        out[f"{bn}.running_mean"] = 0.9 * params[f"{bn}.running_mean"] + 0.1 * mean
        out[f"{bn}.running_var"] = 0.9 * params[f"{bn}.running_var"] + 0.1 * var * n / (n - 1)
    return out


def subset(params: Mapping[str, np.ndarray], keys) -> dict[str, np.ndarray]:
    return {k: params[k] for k in keys}


def batchnorm(synchronized: bool) -> dict:
    variant = without_dropout(spec.variant("googlenet_cifar"))
    p = spec.resolve(variant)
    params = canonical.random_params(p, 0, training=True)
    x, y = data(p, 8, WORKERS * BATCH, 2)
    world = World(WORKERS)
    dist = distributed.Trainer(
        model(variant, params, True), LR, MOMENTUM, record=True, world=world, synchronized=synchronized
    )
    dist_loss = dist.step(x, y)[0]
    out: dict = {"replicas": dist.replicas()}
    if synchronized:  # N*b parity: one process on the whole global batch
        m = model(variant, params, False)
        counts = bn_counts(m)
        single = impl_keras.Trainer(m, LR, MOMENTUM, record=True)
        loss = single.step(x, y)[0]
        expected = running(params, single.batch_stats(), counts)
        out["loss_abs"] = abs(dist_loss - loss)
        out["gradients"] = errors(dist.gradients(), single.gradients(), zero_gradients(p))
        for r in dist.replicas():
            out[f"batch_stats_{r}"] = errors(dist.batch_stats(r), single.batch_stats())
            out[f"running_{r}"] = errors(dist.running_stats(r), expected)
        return out
    shards = []  # each shard's batch statistics, from a single-process Trainer on its rows
    for r in range(WORKERS):
        m = model(variant, params, False)
        counts = bn_counts(m)
        single = impl_keras.Trainer(m, LR, MOMENTUM, record=True)
        rows = slice(*world.bounds(len(x), r))
        single.step(x[rows], y[rows])
        shards.append(single.batch_stats())
        out[f"batch_stats_{r}"] = errors(dist.batch_stats(r), shards[r])
    keys = dist.running_stats(0).keys()
    rules = {
        "own": [running(params, shards[r], counts) for r in range(WORKERS)],
        "rank 0": [running(params, shards[0], counts)] * WORKERS,
        "mean": [running(params, {k: np.mean([s[k] for s in shards], axis=0) for k in shards[0]}, counts)] * WORKERS,
    }
    for rule, expected in rules.items():
        out[f"running_{rule}"] = [errors(dist.running_stats(r), subset(expected[r], keys)) for r in dist.replicas()]
    out["checkpoint_is_replica_0"] = errors(subset(impl_keras.to_canonical(dist.model), keys), dist.running_stats(0))
    return out


def main() -> None:
    distributed.start(World(WORKERS))
    figures = {
        "engine": distributed.ENGINE,
        "threads": distributed.threads(),
        "reduce": distributed.measured_reduce(),
        "parity": parity(),
        "batchnorm": batchnorm(False),
        "synchronized": batchnorm(True),
    }
    distributed.stop()
    json.dump(figures, sys.stdout, indent=1)


if __name__ == "__main__":
    main()

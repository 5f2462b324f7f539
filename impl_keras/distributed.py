"""Data-parallel training of GoogLeNet in Keras 3 with TensorFlow's own engine, ``tf.distribute``.

Mirrors ``impl_torch/distributed.py`` and ``impl_mxnet/distributed.py`` (the contract of
issue 14). What differs, and why:

* One process holds every replica: ``MirroredStrategy`` over N logical CPU devices
  (``tf.config.set_logical_device_configuration`` splits the physical CPU, which must
  happen before TensorFlow initialises its devices). There is no rendezvous, so
  ``World.timeout`` has nothing to wait for; rank is always 0 and ``replicas()`` lists
  the N replica ids. The N devices share one intra-op thread pool (``threads()``).
* On a cluster, ``TF_CONFIG`` set: ``MultiWorkerMirroredStrategy``, one replica per
  process, whose collectives time out after ``World.timeout`` (``CommunicationOptions``).
  The same ``Trainer`` runs there: replica ids are global, so each process takes its own
  shard (measured: two local TF_CONFIG workers, googlenet_d2l, give the MirroredStrategy
  run's losses to the last bit).
* Dropout: each Dropout's seed state is a variable with aggregation ``"none"`` too
  (keras/src/random/seed_generator.py), so every replica draws from its own copy of the
  same state: equal shards get equal masks, not one process's mask over the global batch.
  The parity checks run with dropout off, as ``check --train`` does.
* Keras's optimizer sums the replicas' gradients (``GRADIENTS``); Keras's own ``fit``
  divides each replica's loss by the number of replicas, and so does ``Trainer.step``.
* BatchNorm's moving statistics are variables with aggregation ``"none"``: each
  replica's assignment updates its own copy (``BATCHNORM``). ``synchronized=True`` is
  Keras's ``BatchNormalization(synchronized=True)``: the global batch's moments.
"""

from __future__ import annotations

import contextlib
import json
import os
import re

import keras
import numpy as np
import tensorflow as tf

from conformance.interface import Unsupported
from conformance.spec import aux_admits
from conformance.world import World, WorldError

from . import train
from .engine import every_gradient, op_determinism
from .model import GoogLeNet
from .weights import canonical_name

ENGINE = (
    "tf.distribute.MirroredStrategy over N logical CPU devices in one process "
    "(MultiWorkerMirroredStrategy with TF_CONFIG on a cluster)"
)

_KERAS = "https://github.com/keras-team/keras/blob/v3.15.1/keras/src/"
_TF = "https://github.com/tensorflow/tensorflow/blob/v2.21.0/tensorflow/python/"

BATCHNORM = {
    "batch": "replica",
    "running": "own",
    "source": _TF + "distribute/values.py#L52",
    "detail": (
        "Keras's BatchNormalization.build creates moving_mean/moving_variance with add_weight's default "
        'aggregation "none" (keras/src/layers/layer.py#L534, backend/tensorflow/core.py#L48); tf.distribute\'s '
        "_on_write_update_replica then applies an assign in replica context to that replica's own copy only "
        "(values.py#L52-L55), never synchronised; the checkpoint and to_canonical read replica 0's. "
        "With synchronized=True the moments are all-reduced (keras/src/backend/tensorflow/nn.py#L1515 "
        "_compute_moments_sync), so every replica's batch and running statistics are the global batch's."
    ),
}

GRADIENTS = {
    "reduce": "sum",
    "source": _KERAS + "backend/tensorflow/optimizer.py#L141",
    "detail": (
        "TFOptimizer._backend_update_step all-reduces the replicas' gradients with ReduceOp.SUM "
        "(_all_reduce_sum_gradients); Keras's own fit makes that a mean by scaling each replica's loss by "
        "1 / num_replicas_in_sync (keras/src/losses/loss.py#L160, scale_loss_for_distribution). Trainer.step "
        "does the same (shard mean loss x world.weight / N), so the applied gradient is the global batch's "
        "mean loss's and the learning rate is the single-process one."
    ),
}

_strategy: tf.distribute.Strategy | None = None
_world: World | None = None


def threads() -> int:
    """Intra-op threads of this process, shared by its N replicas (TensorFlow's default,
    0, is one per schedulable CPU)."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    return configured or len(os.sched_getaffinity(0))


def _split_cpu(count: int) -> list[str]:
    """The names of ``n`` logical CPU devices, splitting the physical CPU if TensorFlow
    has not initialised its devices yet."""
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        with contextlib.suppress(RuntimeError):  # already initialised: what exists is checked below
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < count:
        raise WorldError(
            f"--workers {count}: TensorFlow initialised its devices ({len(devices)} CPU) before "
            "impl_keras.distributed.start could split the CPU; call start before any TensorFlow op"
        )
    return devices[:count]


def _cluster(world: World) -> tuple[tf.distribute.Strategy, World]:
    """MultiWorkerMirroredStrategy from ``TF_CONFIG``: one replica per worker task."""
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        workers, rank = len(config["cluster"]["worker"]), int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise WorldError(f"TF_CONFIG: expected {{'cluster': {{'worker': [...]}}, 'task': {{'index': i}}}} ({e})") from e
    if workers != world.workers:
        raise WorldError(f"--workers {world.workers}: TF_CONFIG lists {workers} workers")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=world.timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return strategy, World(workers, rank, world.address, world.port, world.timeout)


def start(world: World) -> World:
    """Create the strategy: MirroredStrategy over ``world.workers`` logical CPUs (one
    process, no rendezvous: returns at once), or MultiWorkerMirroredStrategy when
    ``TF_CONFIG`` is set."""
    global _strategy, _world
    if _strategy is not None:
        if _world != world and not os.environ.get("TF_CONFIG"):
            raise WorldError(f"impl_keras.distributed: already started with {_world}, asked for {world}")
        assert _world is not None
        return _world
    if os.environ.get("TF_CONFIG"):
        _strategy, _world = _cluster(world)
    else:
        devices = _split_cpu(world.workers)
        # ReductionToOneDevice: what MirroredStrategy picks without GPUs, named so it never changes
        _strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        _world = World(world.workers, 0, world.address, world.port, world.timeout)
    return _world


def stop(failed: bool = False) -> None:
    """Forget the strategy (it holds no connection in one process). Idempotent."""
    global _strategy, _world
    _strategy, _world = None, None


def strategy() -> tf.distribute.Strategy:
    if _strategy is None:
        raise WorldError("impl_keras.distributed: call start(world) first")
    return _strategy


def scope() -> contextlib.AbstractContextManager:
    """Build the model inside it: its variables become mirrored across the replicas."""
    return strategy().scope()


def measured_reduce() -> str:
    """How Keras's optimizer combines the replicas' gradients, measured: replica r
    applies gradient r + 1 to a zero variable with SGD at lr 1; "sum" or "mean"."""
    s = strategy()
    n = s.num_replicas_in_sync
    with s.scope():
        var = keras.Variable(np.zeros(()), dtype="float64")
        sgd = keras.optimizers.SGD(learning_rate=1.0)
        sgd.build([var])

    @tf.function
    def run():
        def replica():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            sgd.apply_gradients([(tf.cast(rid + 1, "float64"), var)])

        s.run(replica)

    run()
    moved = -float(var.numpy())
    total = n * (n + 1) / 2
    if np.isclose(moved, total):
        return "sum"
    if np.isclose(moved, total / n):
        return "mean"
    raise AssertionError(f"replicas' gradients 1..{n} moved the variable by {moved}: neither sum nor mean")


def _local(value) -> list:
    return list(strategy().experimental_local_results(value))


class Trainer(train.Trainer):
    """``impl_keras.train.Trainer`` over the strategy's replicas: each takes its shard of
    the global batch (``World.bounds`` by replica id) in one ``strategy.run``."""

    def __init__(
        self,
        model: GoogLeNet,
        lr: float,
        momentum: float,
        aux_weight: float = 0.3,
        record: bool = False,
        deterministic: bool = False,
        *,
        world: World,
        synchronized: bool = False,
    ) -> None:
        if keras.backend.backend() != "tensorflow":
            raise Unsupported(
                f"data-parallel Keras training is tf.distribute's, on the TensorFlow backend only; this process "
                f"runs Keras on {keras.backend.backend()} (KERAS_BACKEND)"
            )
        s = strategy()
        if world.workers != s.num_replicas_in_sync:
            raise WorldError(f"--workers {world.workers}: the strategy has {s.num_replicas_in_sync} replicas")
        with s.scope():  # Keras's TF optimizer binds to the strategy it is made under
            super().__init__(model, lr, momentum, aux_weight, record, deterministic)
            # built here, in cross-replica context: its variables cannot be made in a replica
            self.optimizer.build(model.trainable_variables)
        self.world, self.record = world, record
        for layer in self.bns:
            layer.synchronized = synchronized
        self._ids = [int(i) for i in _local(s.experimental_distribute_values_from_function(_replica_id))]
        self._run = tf.function(self._replicated)
        self._stats: list[dict[str, np.ndarray]] = []
        self._stepped = False

    def replicas(self) -> list[int]:
        """The replica ids (global ranks) this process holds."""
        return list(self._ids)

    def _replica_step(self, x, y, weight, share, with_aux: bool):
        """One replica's part: its shard's loss times ``weight`` (:meth:`loss_weight`), whose
        gradient Keras's optimizer all-reduces (SUM) and applies, and times ``share`` (its
        rows' fraction of the global batch) for the global batch's mean loss."""
        variables = train.trained_variables(self.model, with_aux)
        with tf.GradientTape() as tape:
            out = self.model.forward_stages(x, with_aux=with_aux, training=True)
            loss = self.loss(out, y, with_aux)
            scaled = loss * keras.ops.cast(weight, loss.dtype)
        grads = every_gradient(variables, tape.gradient(scaled, variables))
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        predicted = keras.ops.cast(keras.ops.argmax(out["logits"], 1), y.dtype)
        correct = keras.ops.sum(keras.ops.cast(predicted == y, "int32"))
        rid = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        stats = [layer.replica_stats[int(rid)] for layer in self.bns] if self.record else []
        return loss * keras.ops.cast(share, loss.dtype), correct, grads, stats

    def _replicated(self, x, y, weight, share, with_aux: bool):
        s = strategy()
        loss, correct, grads, stats = s.run(self._replica_step, args=(x, y, weight, share, with_aux))
        total = s.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        right = s.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None)
        applied = [s.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]  # what the optimizer did
        return total, right, applied, stats

    def shard(self, rows: int, replica: int) -> tuple[int, int]:
        """Rows [start, stop) of a global batch of ``rows`` that ``replica`` trains on."""
        return self.world.bounds(rows, replica)

    def loss_weight(self, rows: int, replica: int) -> float:
        """What ``replica`` multiplies its shard's mean loss by before the gradient: the
        optimizer sums the replicas' gradients, so ``World.weight`` over N (Keras's own
        scale_loss_for_distribution divides by N too) makes that sum the gradient of the
        global batch's mean loss."""
        return self.world.weight(rows, replica) / self.world.workers

    def _shards(self, x: np.ndarray, y: np.ndarray):
        """Per-replica values: its rows (:meth:`shard`), its loss weight
        (:meth:`loss_weight`) and its rows' fraction of the global batch."""
        n = len(x)
        self.world.check_batch(n)

        def replica(ctx: tf.distribute.experimental.ValueContext) -> int:
            return int(ctx.replica_id_in_sync_group)

        def take(values: np.ndarray):
            return lambda ctx: tf.constant(values[slice(*self.shard(n, replica(ctx)))])

        def weight(ctx: tf.distribute.experimental.ValueContext):
            return tf.constant(self.loss_weight(n, replica(ctx)), tf.float64)

        def share(ctx: tf.distribute.experimental.ValueContext):
            start, stop = self.shard(n, replica(ctx))
            return tf.constant((stop - start) / n, tf.float64)

        s = strategy()
        return (
            s.experimental_distribute_values_from_function(take(x)),
            s.experimental_distribute_values_from_function(take(y)),
            s.experimental_distribute_values_from_function(weight),
            s.experimental_distribute_values_from_function(share),
        )

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on the GLOBAL batch (NCHW float, int labels), split over the
        replicas: (mean loss over the global batch, correct over the global batch)."""
        with_aux = aux_admits(self.model.plan, x.shape[2:])
        xs, ys, weights, shares = self._shards(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y.astype(np.int64))
        with op_determinism(self.deterministic), _peers(self.world):
            loss, correct, grads, stats = self._run(xs, ys, weights, shares, with_aux)
        self._last = (train.trained_variables(self.model, with_aux), grads)
        self._stats = [
            {
                f"{canonical_name(layer.name)}.{kind}": np.asarray(_local(value)[i])
                for layer, (mean, var) in zip(self.bns, stats, strict=True)
                for kind, value in (("batch_mean", mean), ("batch_var", var))
            }
            for i in range(len(self._ids))
        ]
        self._stepped = True
        return float(loss), int(correct)

    def batch_stats(self, replica: int = 0) -> dict[str, np.ndarray]:
        """That replica's batch statistics of the last step (record=True)."""
        if not self.record:
            raise ValueError("batch_stats: the Trainer was made without record=True")
        return dict(self._stats[self._ids.index(replica)]) if self._stats else {}

    def running_stats(self, replica: int = 0) -> dict[str, np.ndarray]:
        """That replica's running statistics now, by canonical key: its own copy of each
        mirrored moving_mean / moving_variance."""
        i = self._ids.index(replica)
        return {
            f"{canonical_name(layer.name)}.{key}": np.asarray(_local(var.value)[i])
            for layer in self.bns
            for key, var in (("running_mean", layer.moving_mean), ("running_var", layer.moving_variance))
        }

    def state(self) -> dict[str, np.ndarray]:
        """As the single-process Trainer's (empty before the first step), the same in
        every replica: the momentums are updated with the same all-reduced gradient."""
        return super().state() if self._stepped else {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        super().load_state(state)  # assigned in cross-replica context: every replica's copy
        self._stepped = self._stepped or bool(state)


# What a collective raises when a peer of MultiWorkerMirroredStrategy is gone: its
# coordination service's heartbeats stop (Unavailable), the collective's timeout
# (DeadlineExceeded), or the abort that either makes of the other collectives.
_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
)


@contextlib.contextmanager
def _peers(world: World):
    """A collective that fails because a peer or the network is gone, as a WorldError of one
    line naming the tasks TensorFlow names (only with TF_CONFIG: one process has no peers)."""
    try:
        yield
    except _PEER_ERRORS as e:
        if not os.environ.get("TF_CONFIG"):
            raise
        message = str(e.message)
        tasks = {int(t) for t in re.findall(r"/job:worker/(?:replica:\d+/)?task:(\d+)", message)} - {world.rank}
        if not tasks and world.workers == 2:  # a timeout names no task: the one peer it waited for
            tasks = {1 - world.rank}
        lost = ", ".join(f"worker {t}" for t in sorted(tasks)) or "a peer"
        # TensorFlow's message starts with where the op was defined (indented lines)
        said = [line for line in message.splitlines() if line.strip() and not line.startswith((" ", "\t"))]
        said = [line for line in said if not line.startswith(("Graph execution error", "Detected at node"))]
        raise WorldError(
            f"worker {world.rank}: lost {lost} of the MultiWorkerMirroredStrategy group "
            f"({type(e).__name__}: {(said or [''])[0][:200]})"
        ) from None


def _replica_id(ctx: tf.distribute.experimental.ValueContext):
    return tf.constant(ctx.replica_id_in_sync_group)

"""Data-parallel training of GoogLeNet in MXNet Gluon with KVStore ``dist_sync``.

Mirrors ``impl_torch/distributed.py`` and ``impl_keras/distributed.py``. ps-lite runs one
scheduler, one server and N worker processes, all started with ``DMLC_ROLE``
(scheduler | server | worker), ``DMLC_PS_ROOT_URI``, ``DMLC_PS_ROOT_PORT``,
``DMLC_NUM_SERVER=1`` and ``DMLC_NUM_WORKER=N``. The scheduler and the server run
``python -m impl_mxnet.distributed`` (:data:`SERVER_COMMAND`): in MXNet 1.x importing
``mxnet`` with DMLC_ROLE=server or scheduler runs the server loop
(``python/mxnet/kvstore/kvstore_server.py``, ``_init_kvstore_server_module``) and exits
when the workers stop; ``impl_mxnet`` must do that import, because it sets ``numpy.bool``
first. Each worker calls :func:`start` and gets its rank from the scheduler.

What MXNet does, from its source at 1.9.1 (links in :data:`GRADIENTS`, :data:`BATCHNORM`):

* ``gluon.Trainer.step`` pushes every gradient to the server and pulls back, into the same
  arrays, the SUM over the workers (the server adds each worker's push into ``merged``
  and, with no optimizer of its own, copies it to the stored value once all N pushed);
  then each worker's own updater applies ``rescale_grad = 1 / batch_size`` times it.
  Each worker's loss is its shard's mean times ``World.weight``, so the suite passes
  ``step(N)``: the update is the global batch's mean gradient, the single-process run's
  ``step(1)`` on the global batch, at the same learning rate.
* ``update_on_kvstore=False``: the optimizer runs in every worker (on identical summed
  gradients, so identical momentum), so ``state()`` / ``load_state()`` read and set it
  there, as in one process; with True it would live on the server, out of reach.
* dist_sync carries float64 as float32 (measured: 1/3 + 4/3 pushed in float64 comes back
  7.9e-8 off): the server's ``multi_precision_`` flag is never initialised in
  ``KVStoreDistServer``'s constructor (``src/kvstore/kvstore_dist_server.h``, L156-166,
  L807) and reads true, so every non-float32 push is summed in a float32 copy. The
  float64 parity therefore holds to float32's rounding of the summed gradients.
* BatchNorm's running statistics have ``grad_req='null'``: ``_allreduce_grads`` skips
  them, so every worker keeps its own. The Trainer is initialised on the store before
  the first forward (``_init_params`` broadcasts rank 0's values of every parameter,
  statistics included, and would otherwise do it inside the first ``step``, AFTER that
  step's forward: every worker's running statistics would be replaced by rank 0's once).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import mxnet as mx
import numpy as np

from conformance.interface import Unsupported
from conformance.world import World, WorldError

from .model import GoogLeNet
from .train import Trainer as SingleTrainer
from .weights import located

MXNET = "https://github.com/apache/mxnet/blob/1.9.1"
ENGINE = "MXNet KVStore dist_sync (ps-lite: 1 scheduler, 1 server, N workers) + gluon.Trainer(update_on_kvstore=False)"
# What the engine's all-reduce sums in: dist_sync's server sums float64 in float32 (above)
REDUCES_IN = "float32"
SERVER_COMMAND = ("-m", "impl_mxnet.distributed")  # after the interpreter, with DMLC_ROLE=scheduler|server

GRADIENTS = {
    "reduce": "sum",
    "detail": (
        "dist_sync's server adds the N workers' pushed gradients (updates.merged += recved) and "
        "hands the sum back to every worker's pull; gluon.Trainer.step(batch_size) then updates "
        "with rescale_grad = 1 / batch_size times it. Each worker's loss is its shard's mean "
        "times World.weight, so the suite calls step(N): the global batch's mean gradient at "
        "the single-process learning rate."
    ),
    "source": f"{MXNET}/src/kvstore/kvstore_dist_server.h#L753",
    "trainer": f"{MXNET}/python/mxnet/gluon/trainer.py#L338",
}
BATCHNORM = {
    "batch": "replica",
    "running": "own",
    "source": f"{MXNET}/python/mxnet/gluon/trainer.py#L376",
    "detail": (
        "BatchNorm normalises with its own shard's statistics (the operator sees one worker's "
        "batch). Trainer._allreduce_grads pushes only parameters whose grad_req is not 'null', "
        "and running_mean/running_var are 'null', so each worker keeps the statistics of its own "
        "shards; only _init_params' one broadcast of rank 0's values at the start touches them."
    ),
}
SYNC_BN = (
    "MXNet 1.9's only synchronised BatchNorm, gluon.contrib.nn.SyncBatchNorm, syncs the devices "
    "of ONE process (its _contrib_SyncBatchNorm operator meets them in a shared in-process "
    "barrier keyed by 'key', num_devices of them); it cannot reach other dist_sync worker processes"
)
SYNC_BN_SOURCE = f"{MXNET}/src/operator/contrib/sync_batch_norm-inl.h"

FAILED_LEAVE = 5.0  # seconds a failed worker waits for ps-lite to finalise (see stop)
_STATS_KEY = 1 << 30  # the store's key of the (loss, correct) sums: above any parameter index
_state: dict[str, Any] = {}  # "kv": this process's store (None: a group of one), "world": its World
_trainers: weakref.WeakSet[Trainer] = weakref.WeakSet()


def threads() -> int:
    """The OpenMP threads MXNet's operators take in this worker: cores // workers, set by
    ``impl_mxnet`` before MXNet's import (a user's OMP_NUM_THREADS wins)."""
    return int(os.environ.get("OMP_NUM_THREADS") or os.environ.get("MXNET_OMP_MAX_THREADS") or 0)


def _environment(world: World) -> str | None:
    """Why this process cannot join as a dist_sync worker of ``world``, or None."""
    role, wanted = os.environ.get("DMLC_ROLE"), str(world.workers)
    if role != "worker":
        return f"DMLC_ROLE is {role!r}, expected 'worker' (start the workers with the launcher)"
    missing = [k for k in ("DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER") if not os.environ.get(k)]
    if missing:
        return f"{', '.join(missing)} not set"
    if os.environ.get("DMLC_NUM_WORKER") != wanted:
        return f"DMLC_NUM_WORKER is {os.environ.get('DMLC_NUM_WORKER')!r}, expected {wanted} (--workers)"
    return None


def start(world: World) -> World:
    """Join the dist_sync group; the world with the rank the scheduler assigned. A group of
    one without the DMLC variables runs with no store. Bounded by ``world.timeout``:
    ps-lite's join barrier has no timeout, so it runs in a daemon thread that is given up."""
    if "kv" in _state:
        raise WorldError("MXNet dist_sync: this process already joined a group (call stop() first)")
    why = _environment(world)
    if why is not None:
        if world.workers == 1 and os.environ.get("DMLC_ROLE") is None:
            _state.update(kv=None, world=world)
            return world
        raise WorldError(f"MXNet dist_sync worker: {why}")
    made: list[mx.kv.KVStore] = []
    joining = threading.Thread(target=lambda: made.append(mx.kv.create("dist_sync")), daemon=True)
    joining.start()
    joining.join(world.timeout)
    if not made:
        # The joining thread stays blocked in ps-lite, whose threads abort the C++ exit
        # ("terminate called without an active exception", status 134, measured): once
        # Python is done, leave without the C++ destructors, with WorldError's status 1.
        atexit.register(_leave_now, 1)
        where = f"{os.environ['DMLC_PS_ROOT_URI']}:{os.environ['DMLC_PS_ROOT_PORT']}"
        raise WorldError(
            f"MXNet dist_sync: the scheduler at {where}, its server and {world.workers} workers "
            f"did not all join within {world.timeout:g} s"
        )
    kv = made[0]
    if kv.num_workers != world.workers:
        raise WorldError(f"MXNet dist_sync: the scheduler counts {kv.num_workers} workers, expected {world.workers}")
    joined = dataclasses.replace(world, rank=kv.rank)
    _state.update(kv=kv, world=joined)
    return joined


def stop(failed: bool = False) -> None:
    """Leave the group: free the store, whose destructor meets the other workers in a
    barrier, then rank 0 stops the server and ps-lite shuts down (the scheduler and server
    then exit). ``failed``: skip that barrier (a peer may be gone, or stuck in a step it
    cannot finish): ps-lite is finalised alone. Either way bounded by the world's timeout:
    a barrier not met by then is given up, and the process leaves without ps-lite's
    aborting C++ exit, with status 1. A barrier given up after a run that did not fail
    raises :class:`WorldError` saying so: a peer lost after the last step is still a lost
    peer, and the caller says it in one line (a failed run has said its line). Idempotent."""
    kv = _state.pop("kv", None)
    world: World | None = _state.pop("world", None)
    for trainer in list(_trainers):  # the store's other references: the C++ destructor runs below
        trainer.trainer._kvstore = trainer.trainer._kvstore_params["kvstore"] = trainer.kv = None
    if kv is None:
        return
    # A gluon.Trainer whose Trainer is gone may outlive it: its Parameters point at it, and
    # a model the suite's forward() cached (train's evaluation) keeps those alive.
    for holder in gc.get_referrers(kv):
        if isinstance(holder, mx.gluon.Trainer):
            holder._kvstore = None
        elif isinstance(holder, dict) and holder.get("kvstore") is kv:
            holder["kvstore"] = None
    if failed:
        mx.base.check_call(mx.base._LIB.MXKVStoreSetBarrierBeforeExit(kv.handle, 0))
    gone, held = weakref.ref(kv), [kv]
    del kv

    def leave() -> None:
        held.clear()  # the last reference: KVStore.__del__ -> MXKVStoreFree -> ~KVStoreDist
        gc.collect()

    leaving = threading.Thread(target=leave, daemon=True)
    leaving.start()
    # a failed worker's peers or network may be gone: a few seconds for ps-lite to
    # finalise, not the whole timeout it has already waited once
    leaving.join(FAILED_LEAVE if failed else world.timeout if world else None)
    if leaving.is_alive():  # the other workers never met the barrier
        atexit.register(_leave_now, 1)
        if not failed and world is not None:
            raise WorldError(
                f"worker {world.rank}: lost the dist_sync group while leaving it ({_peers(world)}): "
                f"no reply within {world.timeout:g} s"
            )
    elif gone() is not None:  # a reference outside this module: the group is not left
        raise WorldError("MXNet dist_sync: the KVStore is still referenced, so this worker cannot leave the group")


def _peers(world: World) -> str:
    """Who a worker waits for: ps-lite does not say which peer is gone."""
    where = f"{os.environ.get('DMLC_PS_ROOT_URI')}:{os.environ.get('DMLC_PS_ROOT_PORT')}"
    return f"the server of scheduler {where}, or another of the {world.workers} workers"


def _leave_now(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Build the model inside: nothing to place in MXNet (every worker holds a whole model)."""
    yield


class Trainer(SingleTrainer):
    """The single-process Trainer with a dist_sync store: each worker steps on its shard
    of the global batch (see the module's docstring for what MXNet does)."""

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
        if synchronized:
            raise Unsupported(f"synchronized BatchNorm: {SYNC_BN} ({SYNC_BN_SOURCE})")
        if "world" not in _state:
            raise WorldError("MXNet dist_sync: call distributed.start(world) before building the Trainer")
        self.world: World = _state["world"]
        if world.workers != self.world.workers:
            raise ValueError(f"world: {world.workers} workers, but this process joined {self.world.workers}")
        super().__init__(model, lr, momentum, aux_weight, record, deterministic)
        self.kv = _state["kv"]
        if self.kv is not None:
            self.trainer = mx.gluon.Trainer(
                model.collect_params(),
                "sgd",
                {"learning_rate": lr, "momentum": momentum, "wd": 0.0},
                kvstore=self.kv,
                update_on_kvstore=False,
            )
            # Broadcast rank 0's parameters now, before any forward (see the module docstring).
            self.trainer._init_kvstore()
            self.trainer._init_params()
            self.kv.init(_STATS_KEY, mx.nd.zeros(2, dtype=np.float64))
            _trainers.add(self)

    def shard(self, rows: int, replica: int) -> tuple[int, int]:
        """Rows [start, stop) of a global batch of ``rows`` that ``replica`` trains on."""
        return self.world.bounds(rows, replica)

    def loss_weight(self, rows: int, replica: int) -> float:
        """What ``replica`` multiplies its shard's mean loss by before backward: the store
        sums the workers' gradients and the update divides the sum by N (``step(N)``), so
        ``World.weight`` makes that the gradient of the global batch's mean loss."""
        return self.world.weight(rows, replica)

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One step on this worker's shard of the global batch ``x``, ``y``: the global
        batch's mean loss and correct count (the same in every worker)."""
        n = len(x)
        self.world.check_batch(n, "x")
        start, stop = self.shard(n, self.world.rank)
        loss, correct = self.backward(x[start:stop], y[start:stop], self.loss_weight(n, self.world.rank))
        sums = mx.nd.array([float(loss.asscalar()) * (stop - start) / n, float(correct.asscalar())], dtype=np.float64)

        def exchange() -> np.ndarray:
            self.update(self.world.workers)  # the summed gradients over N: the global mean
            if self.kv is not None:
                self.kv.pushpull(_STATS_KEY, sums, out=sums)
            # every pull and update of this step, not only the sums: MXNet's engine runs
            # them asynchronously, and a pull left pending would block the next forward,
            # outside the bound
            mx.nd.waitall()
            return sums.asnumpy()

        total_loss, total_correct = self._bounded(exchange) if self.kv is not None else exchange()
        return float(total_loss), int(np.rint(total_correct))

    def _bounded(self, exchange: Any) -> np.ndarray:
        """``exchange()`` (the pushes and pulls of a step) within the world's timeout: ps-lite
        waits for a server reply forever, and a peer or network that is gone sends none. It
        runs in a daemon thread, given up after the timeout (the WorldError then ends the
        run; the thread stays blocked in ps-lite, so the process leaves as ``start`` does)."""
        done: list[np.ndarray] = []
        failed: list[BaseException] = []

        def run() -> None:
            try:
                done.append(exchange())
            except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
                failed.append(e)

        waiting = threading.Thread(target=run, daemon=True)
        waiting.start()
        waiting.join(self.world.timeout)
        if failed:
            raise failed[0]
        if not done:
            atexit.register(_leave_now, 1)
            raise WorldError(
                f"worker {self.world.rank}: lost the dist_sync group ({_peers(self.world)}): "
                f"no reply within {self.world.timeout:g} s"
            )
        return done[0]

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradient the update applied: the pulled sum over the workers, over N."""
        return {key: g / self.world.workers for key, g in super().gradients().items()}

    def reseed(self, seed: int) -> None:
        """Each worker its own stream of dropout masks (with one seed the workers would
        drop the same units of their shards' rows), drawn from ``seed`` and the rank."""
        super().reseed(int(np.random.SeedSequence([seed, self.world.rank]).generate_state(1)[0]))

    def replicas(self) -> list[int]:
        return [self.world.rank]

    def batch_stats(self, replica: int | None = None) -> dict[str, np.ndarray]:
        self._own(replica)
        return super().batch_stats()

    def running_stats(self, replica: int | None = None) -> dict[str, np.ndarray]:
        """This worker's BatchNorm running statistics, by canonical key."""
        self._own(replica)
        stats = ("running_mean", "running_var")
        return {k: p.data().asnumpy() for k, p in located(self.model, self.model.plan) if k.endswith(stats)}

    def _own(self, replica: int | None) -> None:
        if replica is not None and replica != self.world.rank:
            raise ValueError(f"replica: this worker holds replica {self.world.rank}, not {replica}")


if __name__ == "__main__":  # reached only by a worker or without DMLC_ROLE: servers never return from the import
    raise SystemExit(
        "python -m impl_mxnet.distributed is the dist_sync scheduler and server: run it with "
        "DMLC_ROLE=scheduler or server and the other DMLC_* variables set"
    )

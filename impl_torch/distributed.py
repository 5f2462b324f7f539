"""Data-parallel training of GoogLeNet in PyTorch with PyTorch's own engine:
``torch.distributed`` over ``gloo`` and ``DistributedDataParallel`` (DDP).

Mirrors ``impl_keras/distributed.py`` and ``impl_mxnet/distributed.py`` (the same
names, see issue 14's contract). A worker is one process, started with torchrun's
variables (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
so the same code runs under the suite's launcher and under
``torchrun --nproc_per_node N``. Every worker sees the same global batch and takes
its shard (``conformance.world.World.bounds``); DDP averages the gradients in
backward; the Trainer is ``impl_torch.train.Trainer`` (loss with aux heads, record
hooks, momentum state) with DDP wrapped around its model.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from conformance.frameworks import usable_cores
from conformance.interface import Unsupported
from conformance.spec import aux_admits
from conformance.world import World, WorldError

from . import train
from .model import GoogLeNet
from .weights import to_canonical

ENGINE = "torch.distributed (gloo) + DistributedDataParallel"

_TAG = "https://github.com/pytorch/pytorch/blob/v2.13.0"  # the installed torch 2.13.0

BATCHNORM = {
    "batch": "replica",
    "running": "rank 0",
    "when": "before each forward",
    "source": f"{_TAG}/torch/nn/parallel/distributed.py#L2405-L2423",
    "detail": (
        "Each process runs plain nn.BatchNorm2d on its own shard (batch statistics per replica; "
        "nn.SyncBatchNorm is refused on CPU). With forward_sync_buffers (broadcast_buffers) at its "
        "default True, DistributedDataParallel._pre_forward calls _sync_buffers, which broadcasts every "
        "buffer from authoritative_rank = 0: so after a step worker r holds rank 0's running statistics "
        "from before the step, updated with its own shard's batch statistics, until the next forward "
        "replaces them with rank 0's."
    ),
}

GRADIENTS = {
    "reduce": "mean",
    "source": f"{_TAG}/torch/csrc/distributed/c10d/reducer.hpp#L511-L514",
    "detail": (
        "Without a communication hook, DDP's C++ Reducer (Reducer::mark_variable_ready_dense) copies each "
        "gradient into its bucket multiplied by 1 / div_factor_ (the process group's size), then all-reduces "
        "the bucket with SUM: the mean of the workers' gradients (the Python allreduce_hook in "
        "torch/distributed/algorithms/ddp_comm_hooks/default_hooks.py does the same, div_ then all_reduce). "
        "Each worker weights its shard's mean loss by World.weight, so the mean is the global batch's "
        "gradient and the single-process learning rate carries over unchanged."
    ),
}

# What DDP prints when given nn.SyncBatchNorm on CPU (filled by the first measurement).
_refusal: str | None = None
_threads_before: int | None = None  # the intra-op threads before start() shared the cores out


def threads() -> int:
    """The intra-op threads this worker computes with."""
    return torch.get_num_threads()


def _share_cores(world: World) -> None:
    """Give each of the workers on this machine an equal share of its cores (at least
    one): N workers with every core each would oversubscribe them. A user's
    ``OMP_NUM_THREADS`` (torchrun sets 1 when it starts several workers) is kept: torch
    already honours it."""
    global _threads_before
    if "OMP_NUM_THREADS" in os.environ:
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world.workers))  # torchrun's: workers on this host
    if _threads_before is None:
        _threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, usable_cores() // max(1, local)))


def _line(error: BaseException) -> str:
    """The first line of an engine's message (gloo's and c10d's run to many lines)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^\[[^\]]*\.(cc|cpp):\d+\] ", "", line)  # gloo's "[.../pair.cc:553] " prefix


def from_env(timeout: float = World.timeout) -> World:
    """The World torchrun's variables describe, or a WorldError naming the variable."""
    values: dict[str, int] = {}
    for key in ("MASTER_PORT", "RANK", "WORLD_SIZE"):
        raw = os.environ.get(key)
        if raw is None or not raw.isdigit():
            raise WorldError(f"{key}: expected a non-negative integer in the environment, got {raw!r}")
        values[key] = int(raw)
    try:
        return World(
            workers=values["WORLD_SIZE"],
            rank=values["RANK"],
            address=os.environ.get("MASTER_ADDR", "127.0.0.1"),
            port=values["MASTER_PORT"],
            timeout=timeout,
        )
    except ValueError as e:
        raise WorldError(f"RANK, WORLD_SIZE: {e}") from None


def start(world: World) -> World:
    """Join the gloo group, waiting at most ``world.timeout`` seconds for every worker;
    a WorldError (one line) otherwise. One worker without a port: a group of one in
    memory (no socket)."""
    if dist.is_initialized():
        raise WorldError("start: this process is already in a torch.distributed group; call stop() first")
    _share_cores(world)
    held = _Held()
    try:
        with held:
            _join(world, timedelta(seconds=world.timeout))
    except (RuntimeError, ValueError) as e:  # DistStoreError, DistNetworkError, gloo's RuntimeError
        stop()
        raise WorldError(
            f"worker {world.rank} of {world.workers} could not join the gloo group at "
            f"{world.address}:{world.port} within {world.timeout:g} s: {_line(e)}"
        ) from None
    return World(
        workers=dist.get_world_size(),
        rank=dist.get_rank(),
        address=world.address,
        port=world.port,
        timeout=world.timeout,
    )


def _join(world: World, timeout: timedelta) -> None:
    if world.workers == 1 and world.port == 0:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        return
    # env:// rather than tcp://: under torchrun the workers must join the store its
    # agent already serves at MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE), not open one.
    # Set only while joining: left behind, they would tell every process this one starts
    # (a later `train`) that torchrun started it as one of the workers.
    wanted = {"MASTER_ADDR": world.address, "MASTER_PORT": str(world.port), "RANK": str(world.rank)}
    wanted |= {"WORLD_SIZE": str(world.workers), "LOCAL_RANK": os.environ.get("LOCAL_RANK", str(world.rank))}
    before = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        dist.init_process_group("gloo", init_method="env://", timeout=timeout)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Held:
    """Holds back what c10d's C++ logging writes to stderr while joining: a client that
    cannot reach the store logs every retry with a native stack trace (measured: 40
    lines a try), which the one-line WorldError replaces. Passed on when the join
    succeeds, so nothing else is hidden."""

    def __enter__(self) -> None:
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.file = tempfile.TemporaryFile()
        os.dup2(self.file.fileno(), 2)

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        with self.file:
            self.file.seek(0)
            text = self.file.read().decode(errors="replace")
        if error is None and text:
            sys.stderr.write(text)


def stop(failed: bool = False) -> None:
    """Leave the group and give back the threads ``start`` took away (a process that
    goes on, e.g. after a failed join, computes on every core again): idempotent, and
    safe after a peer died (nothing is raised). ``failed``: nothing to wait for here
    (gloo's destroy does not meet the peers)."""
    global _threads_before
    del failed
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    if _threads_before is not None:
        torch.set_num_threads(_threads_before)
        _threads_before = None


def scope() -> contextlib.AbstractContextManager[None]:
    """Where to build the model: anywhere in PyTorch (DDP wraps it afterwards)."""
    return contextlib.nullcontext()


@contextlib.contextmanager
def _peers(rank: int, workers: int = 0) -> Iterator[None]:
    """A collective that fails because a peer is gone (gloo: connection closed or reset,
    or the group's timeout when the network drops its packets) as a WorldError of one
    line naming the peer (gloo's message names its address when the connection closed)."""
    try:
        yield
    except RuntimeError as e:  # DistError and gloo's errors are RuntimeErrors
        if not isinstance(e, dist.DistError) and "gloo" not in str(e).lower():
            raise  # not the engine's: a bug, with its traceback
        others = [r for r in range(workers) if r != rank]
        lost = f"worker {others[0]}" if len(others) == 1 else "a peer"
        said = _line(e).split(" This is typically caused")[0]  # gloo's advice to read the peer's log
        raise WorldError(f"worker {rank}: lost {lost} of the gloo group: {said}") from None


def sync_batchnorm_refusal() -> str:
    """What DDP says when given ``nn.SyncBatchNorm`` on CPU, measured on a one-channel
    module in the current group ("" if it accepts it). Every worker must call it: DDP's
    construction runs collectives before it refuses."""
    global _refusal
    if _refusal is None:
        try:
            DistributedDataParallel(nn.SyncBatchNorm(1))
            _refusal = ""
        except ValueError as e:
            _refusal = _line(e)
    return _refusal


class _Heads(nn.Module):
    """What DDP wraps: the network's logits and the aux logits the loss needs. DDP runs
    its hooks (buffer broadcast, gradient reduction) around the module's ``forward``,
    so that must be the call that trains; GoogLeNet.forward cannot be it, since in
    training it always asks for the aux heads, which small inputs do not admit."""

    def __init__(self, net: GoogLeNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        out = self.net.forward_stages(x, with_aux=with_aux)
        return {k: out[k] for k in ("logits", *(head.name for head in self.net.plan.aux if with_aux))}


class Trainer(train.Trainer):
    """impl_torch.train.Trainer on this worker's shard of each global batch, its model
    wrapped in DistributedDataParallel (start() first)."""

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
        if not dist.is_initialized():
            raise WorldError("Trainer: this process has not joined a group; call impl_torch.distributed.start first")
        if dist.get_world_size() != world.workers or dist.get_rank() != world.rank:
            raise ValueError(
                f"world: worker {world.rank} of {world.workers}, but the group has this process as "
                f"{dist.get_rank()} of {dist.get_world_size()}"
            )
        if synchronized:
            with _peers(world.rank):
                refusal = sync_batchnorm_refusal()
            raise Unsupported(
                f"synchronised BatchNorm: {version_line()} refuses nn.SyncBatchNorm on CPU: {refusal!r}"
                if refusal
                else f"synchronised BatchNorm: {version_line()} accepts nn.SyncBatchNorm on CPU, "
                "but this suite does not convert the model to it yet"
            )
        super().__init__(model, lr, momentum, aux_weight, record, deterministic)
        self.world = world
        self.heads = _Heads(model)
        self.wrapped: tuple[bool, DistributedDataParallel] | None = None

    def _ddp(self, with_aux: bool) -> DistributedDataParallel:
        """DDP around the model, made at the first step (and again should the input size
        switch the aux heads on or off): a plan with aux heads at a size they do not admit
        leaves them without gradient, which DDP must be told to expect
        (find_unused_parameters, which otherwise costs a graph walk and a warning each
        step). Making it broadcasts rank 0's weights and buffers: every worker starts equal."""
        if self.wrapped is None or self.wrapped[0] != with_aux:
            unused = bool(self.model.plan.aux) and not with_aux
            self.wrapped = None  # the old Reducer removes its hooks from the parameters
            self.wrapped = with_aux, DistributedDataParallel(self.heads, find_unused_parameters=unused)
        return self.wrapped[1]

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One SGD step on this worker's shard of the global batch ``x``, ``y`` (the same
        arrays in every worker): (mean loss, correct count) over the global batch."""
        n = len(x)
        self.world.check_batch(n, "x")
        start, stop = self.shard(n, self.world.rank)
        plan = self.model.plan
        with_aux = aux_admits(plan, x.shape[2:])
        target = torch.from_numpy(y[start:stop].astype(np.int64))
        with _peers(self.world.rank, self.world.workers):
            ddp = self._ddp(with_aux)
            ddp.train()
            out = ddp(torch.from_numpy(np.ascontiguousarray(x[start:stop])), with_aux)
            loss = self.loss(out, target, with_aux)
            self.optimizer.zero_grad()
            (loss * self.loss_weight(n, self.world.rank)).backward()  # DDP's hooks all-reduce here
            self.optimizer.step()
            correct = int((out["logits"].argmax(1) == target).sum())
            totals = torch.tensor([float(loss.detach()) * (stop - start), correct], dtype=torch.float64)
            dist.all_reduce(totals)
        return float(totals[0]) / n, int(totals[1])

    def shard(self, rows: int, replica: int) -> tuple[int, int]:
        """Rows [start, stop) of a global batch of ``rows`` that ``replica`` trains on."""
        return self.world.bounds(rows, replica)

    def loss_weight(self, rows: int, replica: int) -> float:
        """What ``replica`` multiplies its shard's mean loss by before backward: DDP averages
        the workers' gradients, so ``World.weight`` makes that mean the gradient of the
        global batch's mean loss (unequal shards included)."""
        return self.world.weight(rows, replica)

    def reseed(self, seed: int) -> None:
        """Each worker its own stream of dropout masks (with one seed the workers would
        drop the same units of their shards' rows), drawn from ``seed`` and the rank."""
        super().reseed(int(np.random.SeedSequence([seed, self.world.rank]).generate_state(1)[0]))

    def replicas(self) -> list[int]:
        """The ranks of the replicas this process holds: its own."""
        return [self.world.rank]

    def _own(self, replica: int) -> None:
        if replica not in self.replicas():
            raise ValueError(f"replica: this worker holds replica {self.world.rank} only, got {replica}")

    def batch_stats(self, replica: int | None = None) -> dict[str, np.ndarray]:
        """This replica's batch statistics of the last step (needs ``record``)."""
        self._own(self.world.rank if replica is None else replica)
        return super().batch_stats()

    def running_stats(self, replica: int | None = None) -> dict[str, np.ndarray]:
        """This replica's BatchNorm running statistics now, by canonical key."""
        self._own(self.world.rank if replica is None else replica)
        return {k: v for k, v in to_canonical(self.model).items() if k.endswith(("running_mean", "running_var"))}


def version_line() -> str:
    return f"torch {torch.__version__}"

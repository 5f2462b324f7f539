"""impl_torch.distributed: two gloo workers under DistributedDataParallel compute what one
process computes (issue 14's contract, points 1-4), its faults break that, its
BatchNorm and gradient rules are the ones the module states, and a failed join or a
dead peer ends in one line.

Workers are separate processes started with torchrun's variables
(tests/distributed_torch_worker.py); each run of two costs about 10 s on 2 cores, so
every run is made once per module and shared. ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conformance.check.compare import Agreement, agreement
from conformance.frameworks import usable_cores
from conformance.world import World, WorldError

from .conftest import ROOT, backend_or_skip

backend_or_skip("torch")

import impl_torch  # noqa: E402
from impl_torch import distributed  # noqa: E402

from .distributed_torch_worker import batch, model  # noqa: E402

WORKERS = 2
JOB = {"size": 32, "dtype": "float64", "batch": 4, "steps": 2, "seed": 0, "lr": 0.01, "momentum": 0.9}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(tmp: Path, name: str, ranks: range | list[int] = range(WORKERS), **job) -> list[tuple[int, str]]:
    """Start the workers of one job with torchrun's variables: (exit code, stderr) each."""
    job = {**JOB, **job, "out": str(tmp / name)}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(job))
    port = free_port()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.distributed_torch_worker", str(path)],
            cwd=ROOT,
            env={
                **base,
                "PYTHONPATH": str(ROOT),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "RANK": str(r),
                "WORLD_SIZE": str(WORKERS),
                "LOCAL_RANK": str(r),
            },
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ranks
    ]
    try:
        return [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


class Runs:
    """Each job run once (lazily), its workers' results by rank."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.done = tmp, {}

    def __call__(self, name: str, **job) -> list[dict[str, np.ndarray]]:
        if name not in self.done:
            codes = launch(self.tmp, name, **job)
            assert all(code == 0 for code, _ in codes), codes
            self.done[name] = [dict(np.load(f"{self.tmp / name}.{r}.npz")) for r in range(WORKERS)]
        return self.done[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("distributed-torch"))


def single(variant: str, steps: int = 2, shard: tuple[int, int] | None = None, **job) -> dict[str, np.ndarray]:
    """The plain single-process Trainer on the whole global batch (or rows ``shard`` of
    it), keyed as the workers' results."""
    job = {**JOB, **job, "variant": variant}
    net = model(job)
    trainer = impl_torch.Trainer(net, lr=job["lr"], momentum=job["momentum"], record=True)
    shape = (net.plan.in_channels, job["size"], job["size"])
    found: dict[str, np.ndarray] = {}
    for step in range(1, steps + 1):
        x, y = batch(job, step, shape, net.plan.fc.out_features)
        a, b = shard or (0, len(x))
        found[f"loss/{step}"] = np.array(trainer.step(x[a:b], y[a:b])[0])
        for k, v in trainer.batch_stats().items():
            found[f"batch/{step}/{k}"] = v
        if step == 1:
            found.update({f"grad/{k}": v for k, v in trainer.gradients().items()})
    found.update({f"weight/{k}": v for k, v in impl_torch.to_canonical(net).items()})
    return found


def worst(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], kind: str) -> tuple[str, Agreement]:
    """The key of ``kind`` (loss, grad, weight, ...) that agrees least, and its agreement."""
    keys = [k for k in ref if k.startswith(f"{kind}/") and not k.endswith("num_batches_tracked")]
    assert keys and all(k in got for k in keys), f"{kind}: keys missing on one side"
    agree = {k: agreement(ref[k], got[k]) for k in keys}
    key = max(agree, key=lambda k: agree[k].max_rel)
    return key, Agreement(agree[key].max_abs, agree[key].max_rel, passed=all(a.passed for a in agree.values()))


def show(label: str, key: str, a: Agreement) -> None:
    print(f"{label}: worst {key}: max abs {a.max_abs:.3g}, max rel {a.max_rel:.3g}")


# 1. Parity without BatchNorm -------------------------------------------------------


@pytest.fixture(scope="module")
def d2l_single() -> dict[str, np.ndarray]:
    return single("googlenet_d2l")


@pytest.mark.parametrize("kind", ["loss", "grad", "weight"])
def test_two_workers_of_batch_2_equal_one_process_of_batch_4(runs, d2l_single, kind):
    """googlenet_d2l (no BatchNorm) in float64 at 32 x 32, SGD lr 0.01 momentum 0.9: the
    loss of each step, every gradient of step 1, every weight after step 2. Measured:
    max rel 1.5e-15 (the two workers' sums in another order); REL_TOL is 1e-4."""
    for rank, got in enumerate(runs("d2l", variant="googlenet_d2l")):
        key, a = worst(d2l_single, got, kind)
        show(f"rank {rank} {kind}", key, a)
        assert a.passed, (rank, key, a)


def test_unequal_shards_still_give_the_global_batch(runs):
    """A global batch of 3 on two workers (shards of 2 and 1): World.weight makes the
    average of the workers' gradients the global mean loss's gradient."""
    ref = single("googlenet_d2l", batch=3)
    got = runs("d2l-odd", variant="googlenet_d2l", batch=3)[1]
    for kind in ("loss", "grad", "weight"):
        key, a = worst(ref, got, kind)
        show(f"batch 3 on 2 workers, rank 1 {kind}", key, a)
        assert a.passed, (kind, key, a)


def test_every_worker_holds_the_same_weights_and_momentum(runs):
    ranks = runs("d2l", variant="googlenet_d2l")
    differ = [
        k for k in ranks[0] if k.startswith(("weight/", "state/")) and not np.array_equal(ranks[0][k], ranks[1][k])
    ]
    assert not differ and any(k.startswith("state/") for k in ranks[0])


# 2. The faults make it fail ---------------------------------------------------------


@pytest.mark.parametrize(("fault", "kinds"), [("sum", ["grad", "weight"]), ("same-shard", ["loss", "grad", "weight"])])
def test_each_fault_breaks_the_parity(runs, d2l_single, fault, kinds):
    """Negative controls: summed gradients (twice the mean with two workers: grad max
    rel 1.0) and every worker on shard 0 must fail the comparison above."""
    got = runs(f"d2l-{fault}", variant="googlenet_d2l", fault=fault)[0]
    for kind in kinds:
        key, a = worst(d2l_single, got, kind)
        show(f"fault {fault} {kind}", key, a)
        assert not a.passed, (fault, kind, a)


# 3. BatchNorm: the rule the module states, measured ------------------------------------


def bn_counts(variant: str) -> tuple[dict[str, int], dict[str, float]]:
    """Per BatchNorm (canonical ``<unit>.bn``): the values per channel one image gives
    at JOB's size (for the unbiased variance torch keeps), and its momentum."""
    from torch import nn

    net = model({**JOB, "variant": variant})
    counts: dict[str, int] = {}
    momenta: dict[str, float] = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            momenta[name] = float(module.momentum)
            module.register_forward_hook(lambda m, i, o, name=name: counts.__setitem__(name, i[0][0, 0].numel()))
    net.train()
    shape = (net.plan.in_channels, JOB["size"], JOB["size"])
    import torch

    with torch.no_grad():
        net.forward_stages(torch.from_numpy(batch(JOB, 1, shape, 2)[0][:1]))
    return counts, momenta


def update(old: dict[str, np.ndarray], stats: dict[str, np.ndarray], step: int, n: int, counts, momenta):
    """torch's running-statistics update, in NumPy: (1 - m) old + m batch, the variance
    unbiased over n images of ``counts`` values each."""
    new = {}
    for bn, per_image in counts.items():
        c, m = n * per_image, momenta[bn]
        mean, var = stats[f"batch/{step}/{bn}.batch_mean"], stats[f"batch/{step}/{bn}.batch_var"] * c / (c - 1)
        new[f"{bn}.running_mean"] = (1 - m) * old[f"{bn}.running_mean"] + m * mean
        new[f"{bn}.running_var"] = (1 - m) * old[f"{bn}.running_var"] + m * var
    return new


RULES = {  # what worker r starts step 2 from, given every worker's running stats after step 1
    "rank 0": lambda after1, r: after1[0],
    "own": lambda after1, r: after1[r],
    "mean": lambda after1, r: {k: np.mean([a[k] for a in after1], axis=0) for k in after1[0]},
}


@pytest.fixture(scope="module")
def cifar(runs):
    return runs("cifar", variant="googlenet_cifar")


def test_each_replica_normalises_with_its_own_shard(cifar):
    """batch "replica": worker r's step-1 batch statistics are those of a single process
    trained on shard r alone (same weights), and differ from the global batch's."""
    assert distributed.BATCHNORM["batch"] == "replica"
    whole = single("googlenet_cifar", steps=1)
    for rank, got in enumerate(cifar):
        alone = single("googlenet_cifar", steps=1, shard=World(WORKERS, rank).bounds(JOB["batch"]))
        key, a = worst(alone, got, "batch/1")
        show(f"rank {rank} batch statistics vs its shard alone", key, a)
        assert a.passed
        key, a = worst(whole, got, "batch/1")
        show(f"rank {rank} batch statistics vs the global batch", key, a)
        assert not a.passed


def test_running_statistics_follow_the_stated_rule_and_no_other(cifar):
    """After step 1 each worker holds the initial statistics updated with its shard's;
    after step 2, rank 0's after step 1 updated with its own step-2 shard's (DDP
    broadcasts rank 0's buffers before each forward). Computed in NumPy from the
    per-shard batch statistics; the other two rules must not match (negative control)."""
    from conformance.canonical import random_params
    from conformance.spec import resolve

    rule = distributed.BATCHNORM["running"]
    assert rule in RULES and distributed.BATCHNORM["when"] == "before each forward"
    counts, momenta = bn_counts("googlenet_cifar")
    params = random_params(resolve("googlenet_cifar"), seed=JOB["seed"], training=True)
    # float64 as the model's: (1 - m) * a float32 array stays float32 in NumPy
    initial = {k: v.astype(np.float64) for k, v in params.items() if k.endswith(("running_mean", "running_var"))}
    shard = JOB["batch"] // WORKERS
    after1 = [update(initial, got, 1, shard, counts, momenta) for got in cifar]
    for rank, got in enumerate(cifar):
        measured = {k[len("running/2/") :]: v for k, v in got.items() if k.startswith("running/2/")}
        step1 = {k[len("running/1/") :]: v for k, v in got.items() if k.startswith("running/1/")}
        assert set(step1) == set(after1[rank])
        a1 = [agreement(after1[rank][k], step1[k]) for k in step1]
        assert all(a.passed for a in a1), max(a.max_rel for a in a1)
        for name, start in RULES.items():
            expected = update(start(after1, rank), got, 2, shard, counts, momenta)
            agree = [agreement(expected[k], measured[k]) for k in expected]
            rel = max(a.max_rel for a in agree)
            print(f"rank {rank} running statistics after step 2 vs rule {name!r}: max rel {rel:.3g}")
            if name == rule:
                assert all(a.passed for a in agree), (rank, name, rel)
            elif rank == 1 or name == "mean":  # worker 0's own statistics are rank 0's
                assert not all(a.passed for a in agree), (rank, name, rel)


# 4. Gradient reduction measured ------------------------------------------------------


def test_ddp_averages_the_workers_gradients(runs):
    """What DDP applied against each shard's own gradient (a single process on the shard,
    same weights): the mean of the two, not their sum, as GRADIENTS says. So the suite
    keeps the single-process learning rate for PyTorch."""
    got = runs("d2l", variant="googlenet_d2l")[0]
    shards = [single("googlenet_d2l", steps=1, shard=World(WORKERS, r).bounds(JOB["batch"])) for r in range(WORKERS)]
    keys = [k for k in got if k.startswith("grad/")]
    reduced = {
        "mean": {k: (shards[0][k] + shards[1][k]) / 2 for k in keys},
        "sum": {k: shards[0][k] + shards[1][k] for k in keys},
    }
    found = {}
    for how, ref in reduced.items():
        key, a = worst(ref, got, "grad")
        show(f"applied gradient vs the {how} of the shards' gradients", key, a)
        found[how] = a.passed
    assert distributed.GRADIENTS["reduce"] == "mean"
    assert found == {"mean": True, "sum": False}


# Engine behaviour: threads, group of one, SyncBatchNorm, failures ------------------------


def test_each_worker_takes_its_share_of_the_cores(runs):
    got = runs("d2l", variant="googlenet_d2l")
    assert [int(r["threads"]) for r in got] == [max(1, usable_cores() // WORKERS)] * WORKERS


@pytest.fixture
def group_of_one():
    import torch

    threads = torch.get_num_threads()
    world = distributed.start(World())
    yield world
    distributed.stop()
    distributed.stop()  # idempotent
    torch.set_num_threads(threads)


def test_a_group_of_one_trains_as_the_plain_trainer(group_of_one):
    job = {**JOB, "variant": "googlenet_d2l", "steps": 1}
    net = model(job)
    trainer = distributed.Trainer(net, lr=0.01, momentum=0.9, world=group_of_one)
    x, y = batch(job, 1, (net.plan.in_channels, 32, 32), net.plan.fc.out_features)
    loss, _ = trainer.step(x, y)
    ref = single("googlenet_d2l", steps=1)
    assert loss == pytest.approx(float(ref["loss/1"]), rel=1e-12)
    key, a = worst(ref, {f"grad/{k}": v for k, v in trainer.gradients().items()}, "grad")
    assert a.passed, (key, a)
    assert trainer.replicas() == [0]
    with pytest.raises(ValueError, match="replica"):
        trainer.running_stats(1)


def test_aux_heads_a_size_does_not_admit_train_as_in_one_process(group_of_one):
    """googlenet with aux heads at 64 x 64, where they are not used: DDP is told to expect
    parameters without gradient, and the step is the plain Trainer's."""
    import torch

    job = {**JOB, "variant": "googlenet", "size": 64}
    steps = {}
    for kind in ("plain", "ddp"):
        net = impl_torch.build(model(job).plan.variant, aux_logits=True, dtype="float64")
        torch.manual_seed(0)
        trainer = (
            impl_torch.Trainer(net, lr=0.01, momentum=0.9)
            if kind == "plain"
            else distributed.Trainer(net, lr=0.01, momentum=0.9, world=group_of_one)
        )
        x, y = batch(job, 1, (3, 64, 64), net.plan.fc.out_features)
        steps[kind] = trainer.step(x, y), trainer.gradients()
    assert steps["ddp"][0] == steps["plain"][0]
    assert steps["ddp"][1].keys() == steps["plain"][1].keys()
    assert not any(k.startswith("aux") for k in steps["ddp"][1])
    assert all(np.array_equal(steps["ddp"][1][k], steps["plain"][1][k]) for k in steps["plain"][1])


def test_synchronised_batchnorm_is_unsupported_with_torchs_own_reason(group_of_one):
    from conformance.interface import Unsupported

    net = model({**JOB, "variant": "googlenet_cifar"})
    with pytest.raises(Unsupported, match="SyncBatchNorm layers only work with GPU modules") as caught:
        distributed.Trainer(net, lr=0.01, momentum=0.9, world=group_of_one, synchronized=True)
    print(caught.value)


def test_an_unknown_fault_is_refused(group_of_one):
    net = model({**JOB, "variant": "googlenet_d2l"})
    with pytest.raises(ValueError, match="fault: expected None or one of 'sum', 'same-shard'"):
        distributed.Trainer(net, lr=0.01, momentum=0.9, world=group_of_one, fault="mean")


def test_a_worker_alone_gives_up_after_the_timeout_in_one_line():
    started = time.monotonic()
    with pytest.raises(WorldError) as caught:
        distributed.start(World(workers=2, rank=0, port=free_port(), timeout=2))
    took = time.monotonic() - started
    print(f"lone rank 0 gave up after {took:.1f} s: {caught.value}")
    assert "\n" not in str(caught.value) and "could not join the gloo group" in str(caught.value)
    assert took < 30
    distributed.stop()


def test_a_dead_peer_ends_the_other_worker_in_one_line(tmp_path):
    """Rank 1 exits without leaving after step 1 (os._exit): rank 0's next collective
    fails with gloo's reason, as a WorldError (exit 4 in the worker)."""
    started = time.monotonic()
    (code0, err0), (code1, _) = launch(tmp_path, "die", variant="googlenet_d2l", steps=3, die_after=1, timeout=30)
    print(f"after {time.monotonic() - started:.1f} s: rank 0 exit {code0}: {err0.strip()}")
    assert (code0, code1) == (4, 9)
    assert err0.count("\n") == 1 and "a peer left the gloo group" in err0

"""What each replica's BatchNorm statistics must be after a distributed step, in NumPy:
per-shard batch statistics pooled where BatchNorm is synchronised, and the running
statistics updated by the engine's stated rule (``impl_*.distributed.BATCHNORM``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .. import spec


def bn_counts(p: spec.Plan, size: int) -> dict[str, int]:
    """Values each BatchNorm averages over per image (H x W of its conv's output), by
    ``<unit>.bn``; from the spec's multiply-add count of each conv."""
    units = {u.name: u for u in p.conv_units() if u.norm is not None}
    counts = {}
    for row in spec.layer_counts(p, size):
        u = units.get(row.name)
        if u is not None and row.macs:
            counts[f"{u.name}.bn"] = row.macs // (u.out_channels * u.in_channels * u.kernel * u.kernel)
    return counts


Stats = dict[str, np.ndarray]  # <unit>.bn.batch_mean / .batch_var, or .running_mean / .running_var


def pooled(
    shards: Sequence[Mapping[str, np.ndarray]], counts: Sequence[int], unit: str
) -> tuple[np.ndarray, np.ndarray]:
    """The moments of the union of the shards (what synchronised BatchNorm normalises with)
    from each shard's biased mean and variance over ``counts`` values."""
    total = sum(counts)
    means = [s[f"{unit}.batch_mean"] for s in shards]
    mean = sum(c * mu for c, mu in zip(counts, means, strict=True)) / total
    second = sum(c * (s[f"{unit}.batch_var"] + mu**2) for c, s, mu in zip(counts, shards, means, strict=True))
    return np.asarray(mean), np.asarray(second / total - mean**2)


def running_update(
    running: Sequence[Mapping[str, np.ndarray]],
    batch: Sequence[Mapping[str, np.ndarray]],
    counts: Sequence[int],
    unit: str,
    m: float,
    rule: Mapping[str, str],
) -> list[Stats]:
    """One BatchNorm's running statistics in each replica after a step, in NumPy, by the
    engine's rule, from each replica's before the step and the batch statistics it
    normalised with (biased, over ``counts`` values each). PyTorch's update, the spec's
    convention: r = (1 - m) r + m s, the variance unbiased (n / (n - 1))."""
    n = len(running)
    start = running
    if rule["running"] == "rank 0" and rule.get("when") == "before each forward":
        start = [running[0]] * n  # DDP's broadcast_buffers: rank 0's replace every replica's first
    out: list[Stats] = []
    for r in range(n):
        c = counts[r] if rule["batch"] == "replica" else sum(counts)
        unbiased = batch[r][f"{unit}.batch_var"] * c / (c - 1)
        out.append(
            {
                f"{unit}.running_mean": (1 - m) * start[r][f"{unit}.running_mean"] + m * batch[r][f"{unit}.batch_mean"],
                f"{unit}.running_var": (1 - m) * start[r][f"{unit}.running_var"] + m * unbiased,
            }
        )
    if rule["running"] == "mean":
        return [{k: np.mean([o[k] for o in out], axis=0) for k in out[0]}] * n
    if rule["running"] == "rank 0" and rule.get("when") != "before each forward":
        return [out[0]] * n
    return out


def expected_statistics(
    p: spec.Plan,
    params: Mapping[str, np.ndarray],
    shards: Sequence[Mapping[str, np.ndarray]],
    sizes: Sequence[int],
    spatial: Mapping[str, int],
    rule: Mapping[str, str],
    recorded: Sequence[Sequence[Mapping[str, np.ndarray]]] = (),
) -> dict[str, list[Stats]]:
    """By step and quantity ("batch statistics/step 1", "running statistics/step 1", ...),
    each replica's statistics in NumPy. Step 1's batch statistics are each shard's, from
    one process per shard (``shards``), pooled where BatchNorm is synchronised; a later
    step's are the replicas' own ``recorded`` ones (they depend on the averaged update),
    from which the rule must give the running statistics."""
    momentum = {
        f"{u.name}.bn": u.norm.momentum for u in p.conv_units() if u.norm is not None and f"{u.name}.bn" in spatial
    }
    n = len(shards)

    def normalised(batch: Sequence[Mapping[str, np.ndarray]]) -> list[Stats]:
        if rule["batch"] == "replica":
            return [{k: v for k, v in b.items() if k.rsplit(".", 1)[0] in momentum} for b in batch]
        out: Stats = {}
        for unit in momentum:
            counts = [c * spatial[unit] for c in sizes]
            out[f"{unit}.batch_mean"], out[f"{unit}.batch_var"] = pooled(batch, counts, unit)
        return [out] * n

    before: list[Stats] = [{k: v for k, v in params.items() if "running_" in k}] * n
    expected: dict[str, list[Stats]] = {}
    for step, batch in enumerate([shards, *recorded], 1):
        stats = normalised(batch) if step == 1 else [dict(b) for b in batch]
        after: list[Stats] = [{} for _ in range(n)]
        for unit, m in momentum.items():
            counts = [c * spatial[unit] for c in sizes]
            for r, values in enumerate(running_update(before, stats, counts, unit, m, rule)):
                after[r].update(values)
        expected[f"batch statistics/step {step}"] = stats
        expected[f"running statistics/step {step}"] = after
        before = after
    return expected


def replica_results(results: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Each replica's statistics, in replica order, whichever process held it."""
    by_replica: dict[int, dict[str, np.ndarray]] = {}
    for values in results:
        for key, value in values.items():
            if key.startswith(("batch statistics/", "running statistics/")):
                by_replica.setdefault(int(key.split("/")[2]), {})[key] = value
    return [by_replica[r] for r in sorted(by_replica)]


def stated_rule(rule: Mapping[str, str], synchronized: bool) -> dict[str, str]:
    """The engine's rule, with synchronised BatchNorm's batch statistics global."""
    return {**rule, "batch": "global"} if synchronized else dict(rule)

"""Which fast inference path each framework gets by default: the candidates, side by side.

``python -m conformance bench`` measures the modes the implementations have; this
measures the paths that were considered for them, so the choice can be checked:

* PyTorch: eager; channels-last input under ``inference_mode`` (the default); the
  same with a channels-last copy of the weights; ``torch.jit.trace`` +
  ``torch.jit.freeze`` on that copy (BatchNorm folded into the convs);
  ``torch.compile`` (inductor; its first call compiles C++, so ``--no-compile``
  leaves it out);
* Keras: eager; a ``tf.function`` graph (the default); the same with XLA
  (``jit_compile=True``);
* Gluon: eager; hybridized with static memory and shapes (the default); hybridized
  without them; with the MKLDNN subgraph backend (fused conv + BatchNorm + ReLU).

Each framework runs in its own process; inside it the candidates alternate round by
round, so a change of load falls on all of them. Printed: images/s (best call, median),
the ratio to the framework's default, the first call, and each candidate's largest
relative difference from eager on the logits:

    python benchmarks/bench_candidates.py [--variant googlenet_bn] [--batch 8] [--input-size 224]
                                          [--rounds 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def candidates_torch(variant: str, x: np.ndarray, compile_: bool) -> dict[str, Callable[[], np.ndarray]]:
    import torch

    import impl_torch as T

    model = T.build(variant)
    xt = torch.from_numpy(x)
    xc = xt.contiguous(memory_format=torch.channels_last)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(channels_last), xc))
    found: dict[str, Callable[[], np.ndarray]] = {
        "eager": lambda: T.forward(model, x, mode="eager"),
        "channels_last (default)": lambda: T.forward(model, x),
    }

    def weights_too() -> np.ndarray:
        with torch.inference_mode():
            return channels_last(xc).contiguous().numpy()

    found["channels-last weights too (a converted copy)"] = weights_too

    def freeze() -> np.ndarray:
        with torch.no_grad():
            return frozen(xc).numpy()

    found["jit.trace + jit.freeze, channels-last"] = freeze
    if compile_:
        compiled = torch.compile(channels_last)

        def inductor() -> np.ndarray:
            with torch.inference_mode():
                return compiled(xc).contiguous().numpy()

        found["torch.compile (inductor), channels-last"] = inductor
    return found


def candidates_keras(variant: str, x: np.ndarray, compile_: bool) -> dict[str, Callable[[], np.ndarray]]:
    import tensorflow as tf

    import impl_keras as K

    model = K.build(variant)
    xla = tf.function(lambda a: model(tf.transpose(a, (0, 2, 3, 1)), training=False), jit_compile=True)
    return {
        "eager": lambda: K.forward(model, x, mode="eager"),
        "graph (default)": lambda: K.forward(model, x),
        "graph with XLA (jit_compile=True)": lambda: xla(x).numpy(),
    }


def candidates_mxnet(variant: str, x: np.ndarray, compile_: bool) -> dict[str, Callable[[], np.ndarray]]:
    import mxnet as mx

    import impl_mxnet as M

    model = M.build(variant)
    data = mx.nd.array(x)

    def block(**options: object) -> mx.gluon.SymbolBlock:
        var = mx.sym.var("data", dtype=np.float32)
        b = mx.gluon.SymbolBlock(model.forward_stages(var)["logits"], var, params=model.collect_params())
        if "backend" in options:
            b.optimize_for(data, **options)
        else:
            b.hybridize(**options)
        return b

    plain, mkldnn = block(), block(backend="MKLDNN", static_alloc=True, static_shape=True)
    return {
        "eager": lambda: M.forward(model, x, mode="eager"),
        "hybrid, static memory and shapes (default)": lambda: M.forward(model, x),
        "hybrid, without static memory": lambda: plain(data).asnumpy(),
        "hybrid, MKLDNN subgraph backend": lambda: mkldnn(data).asnumpy(),
    }


def measure(framework: str, variant: str, batch: int, size: int, rounds: int, compile_: bool) -> dict:
    """In this process: every candidate's first call, then alternating rounds."""
    from conformance import frameworks, spec

    frameworks.load([framework])  # the suite's thread setting, as the implementations run
    p = spec.resolve(variant)
    x = np.random.default_rng(0).standard_normal((batch, p.in_channels, size, size)).astype(np.float32)
    make = {"torch": candidates_torch, "keras": candidates_keras, "mxnet": candidates_mxnet}[framework]
    calls = make(variant, x, compile_)
    first: dict[str, float] = {}
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, np.ndarray] = {}
    for name, call in calls.items():
        start = time.perf_counter()
        outputs[name] = np.asarray(call())
        first[name] = time.perf_counter() - start
        call()  # warm-up
    for r in range(rounds):
        for name in calls if r % 2 == 0 else list(calls)[::-1]:
            for _ in range(2):
                start = time.perf_counter()
                calls[name]()
                seconds[name].append(time.perf_counter() - start)
    eager = outputs["eager"]
    scale = float(np.abs(eager).max())
    return {
        name: {
            "best": batch / min(s),
            "median": batch / statistics.median(s),
            "first": first[name],
            "max_rel_vs_eager": float(np.abs(outputs[name] - eager).max()) / scale,
        }
        for name, s in seconds.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="googlenet_bn")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (its first call is long)")
    parser.add_argument("--framework", help=argparse.SUPPRESS)  # a worker: measure this one, print JSON
    args = parser.parse_args()
    if args.framework:
        figures = measure(args.framework, args.variant, args.batch, args.input_size, args.rounds, not args.no_compile)
        print(json.dumps(figures))
        return
    print(
        f"fast-path candidates: {args.variant}, batch {args.batch}, {args.input_size} x {args.input_size}, "
        f"best of {args.rounds} rounds x 2 calls; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for framework in ("torch", "keras", "mxnet"):
        worker = [sys.executable, __file__, "--framework", framework, *sys.argv[1:]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(worker, capture_output=True, text=True, cwd=ROOT, env=env, check=False)  # this checkout
        if done.returncode != 0:
            print(f"\n{framework}: failed\n{done.stderr[-2000:]}")
            continue
        figures = json.loads(done.stdout.splitlines()[-1])
        default = next(f for name, f in figures.items() if "(default)" in name)
        print(f"\n{framework:<44} {'images/s':>9} {'median':>8} {'x default':>10} {'first call':>11} {'vs eager':>9}")
        for name, f in figures.items():
            print(
                f"  {name:<42} {f['best']:9.1f} {f['median']:8.1f} {f['best'] / default['best']:10.2f} "
                f"{f['first']:9.1f} s {f['max_rel_vs_eager']:9.1e}"
            )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

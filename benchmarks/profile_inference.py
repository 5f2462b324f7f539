"""Where inference time goes: each runtime's time per operator type, beside ONNX Runtime's.

For each runtime (a framework in one of its modes, or ONNX Runtime on PyTorch's ONNX
export) a child process builds the model with the suite's initial weights, runs a few
warm-up calls, times ``--runs`` calls without a profiler (the step), then profiles
``--runs`` more with the framework's own profiler and sums each operator's own time
over the network: PyTorch's ``torch.profiler`` (self CPU time; Inductor's C++ kernels
named by ``cpp.enable_kernel_profile``), TensorFlow's ``tf.profiler`` trace (each op's
time on the executor's threads, read from the XPlane file), MXNet's ``mx.profiler``
(aggregate statistics) and ONNX Runtime's ``SessionOptions.enable_profiling`` (each
node's kernel time). The operators are grouped by type (convolution, BatchNorm, ReLU,
pooling, concatenation, copies and layout changes, ...) and printed in ms per batch and
% of the profiled step; "outside operators" is the step's time no operator accounts for
(dispatch, Python, waiting). The children run one after the other, so none takes
another's cores, and `uptime` is printed before and after.

    python benchmarks/profile_inference.py
    python benchmarks/profile_inference.py --runtimes onnx,torch:channels_last --runs 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance import limits, spec  # noqa: E402
from conformance.bench.run import Worker  # noqa: E402 - the checkout's, not an installed copy
from conformance.bench.settings import ONNX, Settings, check_settings  # noqa: E402
from conformance.frameworks import FRAMEWORKS  # noqa: E402

# Each framework's fastest mode in `bench` and its default, and ONNX Runtime: the limit.
DEFAULT_RUNTIMES = ("onnx", "torch:compile", "torch:channels_last", "keras:graph", "mxnet:hybrid")
MAX_RUNS = 200
MAX_WARMUP = 20
CHILD_TIMEOUT_S = 1800  # a cold torch.compile on a loaded machine takes minutes

# Operator name (lower case) -> type, first match wins: a fused convolution (oneDNN's
# conv + BatchNorm + ReLU, ONNX Runtime's FusedConv) counts as a convolution; a kernel
# that fuses BatchNorm with what follows (Inductor's) as BatchNorm.
RULES: tuple[tuple[str, str], ...] = (
    ("convolution", r"conv"),
    ("batchnorm (or fused BN + ReLU)", r"batch_?norm|batchnormalization"),
    ("relu", r"relu|activation|clamp_min"),
    ("pooling", r"pool"),
    ("concat", r"concat|aten::cat$|\bcat\b"),
    ("copies / layout / pad", r"copy|transpose|reorder|contiguous|clone|to_dense|permute|reshape|pad|cast|const"),
    ("fully connected", r"linear|addmm|matmul|gemm|fullyconnected|\bmm\b"),
    ("elementwise (add, mul, ...)", r"add|mul|sub|rsqrt|sqrt|div|neg|maximum|minimum|fused"),
)
OTHER, OUTSIDE = "other operators", "outside operators"
CATEGORIES = (*(name for name, _ in RULES), OTHER, OUTSIDE)


def category(op: str) -> str:
    """The type of an operator, from its name in any of the four profilers."""
    lowered = op.lower()
    for name, pattern in RULES:
        if re.search(pattern, lowered):
            return name
    return OTHER


# ------------------------------------------------------------------------------------
# The child: one runtime, its step timed, then profiled.
# ------------------------------------------------------------------------------------


def _timed(call: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _torch_ops(call: Callable[[], object], runs: int, steps: list[float]) -> dict[str, float]:
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities):
        call()  # the profiler's own start-up (a second or more) is not the network's
    with torch.profiler.profile(activities=activities) as prof:
        steps += _timed(call, runs)
    return {e.key: e.self_cpu_time_total / 1000 for e in prof.key_averages() if e.self_cpu_time_total > 0}


def _keras_ops(call: Callable[[], object], runs: int, logdir: str, steps: list[float]) -> dict[str, float]:
    """Each TensorFlow op's time on the threads that run the graph's ops (events named
    ``node:Type`` in the host plane of the trace), by op type."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    steps += _timed(call, runs)
    tf.profiler.experimental.stop()
    (trace,) = Path(logdir).rglob("*.xplane.pb")
    space = xplane_pb2.XSpace()
    space.ParseFromString(trace.read_bytes())
    ops: collections.defaultdict[str, float] = collections.defaultdict(float)
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                op = (meta.display_name or meta.name.rsplit(":", 1)[-1]).strip()
                # ``node:Type`` events are ops; a function call holds its ops (not counted twice)
                if ":" in meta.name and "::" not in meta.name and not op.startswith("__inference"):
                    ops[op] += event.duration_ps / 1e9
    return dict(ops)


def _mxnet_ops(call: Callable[[], object], runs: int, logdir: str, steps: list[float]) -> dict[str, float]:
    import mxnet as mx

    mx.profiler.set_config(
        profile_symbolic=True,
        profile_imperative=True,
        profile_memory=False,
        profile_api=False,
        aggregate_stats=True,
        filename=str(Path(logdir) / "mxnet-profile.json"),
    )
    mx.profiler.set_state("run")
    steps += _timed(call, runs)
    mx.nd.waitall()
    mx.profiler.set_state("stop")
    stats = json.loads(mx.profiler.dumps(format="json"))
    ops: collections.defaultdict[str, float] = collections.defaultdict(float)
    for domain, table in stats.get("Time", {}).items():
        if domain.startswith("operator"):
            for op, figures in table.items():
                ops[op] += figures["Total"]
    return dict(ops)


def _onnx_ops(
    graph: str, images: np.ndarray, warmup: int, runs: int, logdir: str
) -> tuple[dict[str, float], list[float], list[float]]:
    """ONNX Runtime's session as ``bench`` runs it, profiling on: each node's kernel time
    in the last ``runs`` runs, by operator type; and the unprofiled step's times (a
    second session without profiling)."""
    import onnxruntime as ort

    from conformance.check.judges import session

    plain = session(Path(graph).read_bytes())
    feed = {plain.get_inputs()[0].name: images}
    for _ in range(warmup):
        plain.run(None, feed)
    wall = _timed(lambda: plain.run(None, feed), runs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = plain.get_session_options().intra_op_num_threads
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(logdir) / "ort")
    profiled = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup + runs):
        profiled.run(None, feed)
    events = json.loads(Path(profiled.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    since = starts[-runs]
    ops: collections.defaultdict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= since:
            ops[e["args"]["op_name"]] += e["dur"] / 1000
    profiled = [e["dur"] / 1e6 for e in events if e.get("name") == "model_run"][-runs:]
    return dict(ops), profiled, wall


def child(runtime: str, s: Settings, warmup: int, graph: str | None) -> dict[str, Any]:
    """One runtime's step times and operator totals (ms over ``s.calls`` profiled runs)."""
    from conformance.frameworks import load

    plan = spec.resolve(s.variant)
    images = np.random.default_rng(0).standard_normal((s.batch, plan.in_channels, s.size, s.size)).astype(np.float32)
    runs = s.calls
    with tempfile.TemporaryDirectory(prefix="profile-") as logdir:
        if runtime == ONNX:
            assert graph is not None
            import onnxruntime as ort

            ops, profiled, wall = _onnx_ops(graph, images, warmup, runs, logdir)
            return {"version": f"onnxruntime {ort.__version__}", "wall": wall, "profiled": profiled, "ops": ops}
        framework, mode = runtime.split(":")
        if framework == "torch" and mode == "compile":
            import torch._inductor.config as inductor

            inductor.cpp.enable_kernel_profile = True  # Inductor's kernels by name in the profile
        backends, skipped = load([framework])
        if framework not in backends:
            return {"skipped": skipped[framework]}
        backend = backends[framework]
        if mode not in backend.MODES:
            return {"refused": f"{framework} has no mode {mode!r} (it has {', '.join(backend.MODES)})"}
        model = backend.build(s.variant)

        def call() -> object:
            return backend.forward(model, images, mode=mode)

        for _ in range(warmup):
            call()
        wall = _timed(call, runs)
        steps: list[float] = []
        if framework == "torch":
            ops = _torch_ops(call, runs, steps)
        elif framework == "keras":
            ops = _keras_ops(call, runs, logdir, steps)
        else:
            # Bulk execution runs the graph in segments the profiler cannot split: off for
            # the profiled calls, on a model of their own (MXNet reads it as it builds a graph).
            os.environ["MXNET_EXEC_BULK_EXEC_INFERENCE"] = "0"
            model = backend.build(s.variant)
            for _ in range(warmup):
                call()
            ops = _mxnet_ops(call, runs, logdir, steps)
        return {"version": backend.version(), "wall": wall, "profiled": steps, "ops": ops}


def _child_main(runtime: str, settings: str, warmup: int, graph: str | None) -> None:
    # The answer has stdout to itself; whatever the frameworks print goes to stderr.
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    raw = json.loads(settings)
    s = Settings(**{**raw, "frameworks": tuple(raw["frameworks"])})
    channel.write(json.dumps(child(runtime, s, warmup, graph)) + "\n")
    channel.flush()


# ------------------------------------------------------------------------------------
# The parent: checks the options, exports the ONNX graph, runs each child, prints.
# ------------------------------------------------------------------------------------


def _uptime() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def _runtimes(text: str) -> list[str]:
    """``--runtimes``: names checked before any framework is imported."""
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    bad = [n for n in chosen if n != ONNX and (n.count(":") != 1 or n.split(":")[0] not in FRAMEWORKS)]
    if bad or not chosen:
        raise ValueError(
            f"--runtimes: cannot read {bad or text!r}; expected a comma-separated list of onnx and "
            f"FRAMEWORK:MODE with FRAMEWORK one of {', '.join(FRAMEWORKS)} (e.g. torch:compile)"
        )
    return chosen


def _export(s: Settings, out: Path) -> str:
    """PyTorch's ONNX export of the model, made as ``bench`` makes it (its worker)."""
    with open(out.with_suffix(".log"), "w+") as log:
        worker = Worker("export", s, log, out=str(out))
        ready = worker.ask("")
        if "skipped" in ready:
            worker.close()
            raise RuntimeError(f"onnx: {ready['skipped']}")
        return str(worker.close()["path"])


def _run_child(runtime: str, s: Settings, warmup: int, graph: str | None) -> dict[str, Any]:
    import dataclasses

    args = [sys.executable, __file__, "--child", runtime, "--settings", json.dumps(dataclasses.asdict(s))]
    args += ["--warmup", str(warmup)] + (["--graph", graph] if graph else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return {"skipped": f"exited {done.returncode}: {done.stderr.strip()[-600:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(result: dict[str, Any]) -> dict[str, float]:
    """ms per step by operator type (the profiled runs' mean); "outside operators" is the
    profiled step's time no operator accounts for (negative where operators ran side by
    side, as TensorFlow's executor runs independent branches)."""
    runs = len(result["profiled"])
    figures = dict.fromkeys(CATEGORIES, 0.0)
    for op, ms in result["ops"].items():
        figures[category(op)] += ms / runs
    figures[OUTSIDE] = 1000 * statistics.fmean(result["profiled"]) - sum(figures.values())
    return figures


def _label(runtime: str) -> str:
    return "onnxruntime" if runtime == ONNX else runtime.replace(":", " ")


def report(results: dict[str, dict[str, Any]], s: Settings, top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)  # a file gets the table whole
    done = {k: v for k, v in results.items() if "skipped" not in v}
    for runtime, result in results.items():
        if "skipped" in result:
            console.print(f"{_label(runtime)}: skipped ({result['skipped']})")
    if not done:
        return
    reference = done.get(ONNX)
    table = Table(title=f"{s.variant}, batch {s.batch}, {s.size} x {s.size}: ms per batch (% of the profiled step)")
    table.add_column("operator type")
    for runtime in done:
        table.add_column(_label(runtime), justify="right")
    summaries = {k: summarise(v) for k, v in done.items()}
    for name in CATEGORIES:
        table.add_row(name, *(_cell(summaries[k][name], done[k]) for k in done))
    table.add_section()
    table.add_row("profiled step (mean)", *(f"{1000 * statistics.fmean(v['profiled']):.1f}" for v in done.values()))
    walls = {k: statistics.median(v["wall"]) for k, v in done.items()}
    table.add_row("step, no profiler (median)", *(f"{1000 * walls[k]:.1f}" for k in done))
    table.add_row("images/s, no profiler", *(f"{s.batch / walls[k]:.1f}" for k in done))
    if reference is not None:
        limit = walls[ONNX]
        table.add_row("x onnxruntime", *(f"{limit / walls[k]:.2f}" for k in done))
    console.print(table)
    for runtime, result in done.items():
        runs = len(result["profiled"])
        ops = sorted(result["ops"].items(), key=lambda item: -item[1])[:top]
        listed = ", ".join(f"{op} {ms / runs:.1f}" for op, ms in ops)
        console.print(f"[bold]{_label(runtime)}[/bold] ({result['version']}), top operators in ms: {listed}")


def _cell(ms: float, result: dict[str, Any]) -> str:
    step = 1000 * statistics.fmean(result["profiled"])
    return f"{ms:.1f} ({100 * ms / step:.0f}%)" if abs(ms) >= 0.05 else "-"


def _bounded(option: str, value: int, top: int) -> int:
    if not 1 <= value <= top:
        raise ValueError(f"{option}: expected an integer from 1 to {top}, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="googlenet_bn")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10, help="timed calls, then as many profiled")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=6, help="operators listed per runtime")
    parser.add_argument("--runtimes", default=",".join(DEFAULT_RUNTIMES), help="onnx and FRAMEWORK:MODE, commas")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--graph", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child_main(args.child, args.settings, args.warmup, args.graph)
        return
    try:
        runtimes = _runtimes(args.runtimes)
        runs = _bounded("--runs", args.runs, MAX_RUNS)
        warmup = _bounded("--warmup", args.warmup, MAX_WARMUP)
        _bounded("--top", args.top, 100)
        frameworks = tuple(dict.fromkeys(r.split(":")[0] for r in runtimes))
        s = Settings(args.variant, args.batch, args.input_size, frameworks, calls=runs, rounds=1)
        check_settings(s)  # variant, batch and size: bounded as bench bounds them
        limits.check_work(limits.Work(spec.resolve(s.variant), s.size, s.batch))
    except (ValueError, limits.LimitError) as e:
        print(f"profile_inference: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"uptime before: {_uptime()}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="profile-inference-") as tmp:
        graph = None
        if ONNX in runtimes:
            try:
                graph = _export(s, Path(tmp) / "model.onnx")
            except RuntimeError as e:
                results[ONNX] = {"skipped": str(e)}
        for runtime in runtimes:
            if runtime not in results:
                print(f"profiling {_label(runtime)} ...", file=sys.stderr, flush=True)
                results[runtime] = _run_child(runtime, s, warmup, graph)
                if "refused" in results[runtime]:  # a mode is known once its framework is imported
                    print(f"profile_inference: --runtimes {runtime}: {results[runtime]['refused']}", file=sys.stderr)
                    raise SystemExit(2)
    print(f"uptime after: {_uptime()}")
    report(results, s, args.top)


if __name__ == "__main__":
    main()

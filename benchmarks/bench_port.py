"""Time and peak memory of one full GoogLeNet conversion, beyond the framework imports.

Target (issue #3): under 5 s and under 1 GB beyond the imports, on 2 cores. The
frameworks are imported first and measured; then one conversion runs (read, strict
checks, write, native reload, verification) and its time and the growth of the
process's peak resident memory are printed. Each direction runs in a fresh process,
so one conversion's memory does not hide another's:

    python benchmarks/bench_port.py [--direction torch:keras-weights ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS, TARGET_MB = 5.0, 1024.0
SUFFIX = {
    "torch": ".pth",
    "keras-weights": ".weights.h5",
    "keras": ".keras",
    "mxnet": ".params",
    "safetensors": ".safetensors",
    "npz": ".npz",
}
DIRECTIONS = ("torch:keras-weights", "keras-weights:mxnet", "mxnet:torch", "torch:keras")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def one(direction: str, variant: str) -> dict:
    """Run in a child process: import, make a source file, convert, measure."""
    src_fmt, dst_fmt = direction.split(":")
    t0 = time.perf_counter()
    import impl_keras  # noqa: F401
    import impl_mxnet  # noqa: F401
    import impl_torch  # noqa: F401
    from conformance import canonical, spec
    from conformance.formats.port import port
    from conformance.formats.registry import FORMATS

    imports = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        p = spec.resolve(variant, aux_logits=True)
        src = Path(d) / f"src{SUFFIX[src_fmt]}"
        data = FORMATS[src_fmt].write(canonical.random_params(p, 0), p)[0]
        assert isinstance(data, bytes)  # the formats this benchmark reads are single files
        src.write_bytes(data)
        before = peak_mb()
        t1 = time.perf_counter()
        result = port(src, Path(d) / f"dst{SUFFIX[dst_fmt]}", variant)
        seconds = time.perf_counter() - t1
        grown = peak_mb() - before
    return {
        "direction": direction,
        "imports": imports,
        "seconds": seconds,
        "peak_growth_mb": grown,
        "peak_mb": peak_mb(),
        "passed": result.passed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direction", action="append", help="SRC_FORMAT:DST_FORMAT (repeatable)")
    parser.add_argument("--variant", default="googlenet_bn")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.variant)))
        return
    print(f"one conversion of {args.variant} with aux heads (13.0 M parameters), each in a fresh process")
    print(f"{'direction':<24} {'imports s':>9} {'convert s':>9} {'peak growth MB':>15} {'peak MB':>8}  verdict")
    for direction in args.direction or DIRECTIONS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", direction, "--variant", args.variant],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ok = r["passed"] and r["seconds"] < TARGET_SECONDS and r["peak_growth_mb"] < TARGET_MB
        print(
            f"{direction:<24} {r['imports']:9.1f} {r['seconds']:9.2f} {r['peak_growth_mb']:15.0f} "
            f"{r['peak_mb']:8.0f}  {'met' if ok else 'MISSED'} (target < {TARGET_SECONDS:.0f} s, "
            f"< {TARGET_MB:.0f} MB)"
        )


if __name__ == "__main__":
    main()

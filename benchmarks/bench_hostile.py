"""Peak memory and time of refusing each hostile file of issues 9 (case 2) and 24 (the
file-format rows), side by side with a valid port of the same network in the same run.

Target: every refusal under 1 GB peak resident memory (the whole process, imports
included) and a few seconds. Each file is small on disk and declares gigabytes; each
command runs in a fresh process, as a user runs it, measured by ``tests/hostile.py``
(the process's own peak, under a 6 GB address-space guard):

    python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ and conformance/ from a checkout

from tests import hostile  # after the path: a checkout, not an installed package
from tests.helpers import command

TARGET_MB, TARGET_S = 1000.0, 5.0


def cases(d: Path) -> list[tuple[str, list[str], Callable[[], object]]]:
    """(what, command, build the file)."""
    variant = ["--variant", hostile.VARIANT]
    out = ["--out", str(d / "out")]

    def port(src: str, dst: str = ".npz") -> list[str]:
        return ["port", str(d / src), str(d / f"out-{src}{dst}"), *variant]  # a DST of its own

    return [
        ("valid .pth -> .npz (reference)", port("valid.pth"), lambda: hostile.pth_valid(d / "valid.pth")),
        (
            ".weights.h5 declaring (1408, 500000)",
            port("x.weights.h5"),
            lambda: hostile.weights_h5_undeclared(d / "x.weights.h5"),
        ),
        (".keras config: 500,000 classes", port("c.keras"), lambda: hostile.keras_classes(d / "c.keras")),
        (".keras config.json: 1.1 GB of spaces", port("s.keras"), lambda: hostile.keras_padded_config(d / "s.keras")),
        (
            "sparse .safetensors declaring 8 GiB",
            port("x.safetensors"),
            lambda: hostile.safetensors_sparse(d / "x.safetensors"),
        ),
        (".pth: zeros(1).expand(50000, 50000)", port("e.pth"), lambda: hostile.pth_expanded(d / "e.pth", 50_000)),
        (".pth: zeros(1).expand(10^6, 10^6)", port("m.pth"), lambda: hostile.pth_expanded(d / "m.pth", 1_000_000)),
        ("deflated .npz declaring 1.1 GB", port("x.npz", ".safetensors"), lambda: hostile.npz_deflated(d / "x.npz")),
        # Issue 24 (file formats): the m.X files are written first, by ``init``.
        (
            "npz: zip 'version needed' 25.5",
            port("v.npz"),
            lambda: edited(d, "m.npz", "v.npz", hostile.zip_version_needed),
        ),
        (
            ".weights.h5 linked back to its root",
            port("c.weights.h5"),
            lambda: edited(d, "m.weights.h5", "c.weights.h5", hostile.h5_linked_to_root),
        ),
        (".pth calling bytearray(2.5e9)", port("b.pth"), lambda: hostile.pth_allocating(d / "b.pth")),
        ("old-style pickle bytearray(2.5e9)", port("o.pth"), lambda: hostile.pickle_allocating(d / "o.pth")),
        (
            "ONNX: 10^7 empty nodes (googlenet_bn)",
            ["port", str(d / "n.onnx"), str(d / "out-n.npz"), "--variant", "googlenet_bn"],
            lambda: (d / "n.onnx").write_bytes(hostile.onnx_empty_nodes(10_000_000)),
        ),
        (
            "ONNX: duplicate initializer",
            port("dup.onnx"),
            lambda: edited(d, "m.onnx", "dup.onnx", hostile.onnx_duplicate_initializer),
        ),
        (
            "gzipped IDX declaring 1.2 GB",
            ["train", "--framework", "torch", *variant, "--data", str(d / "idx"), *out],
            lambda: hostile.idx_gzipped(d / "idx"),
        ),
        (
            "train --epochs 100000000",
            ["train", "--framework", "torch", *variant, "--epochs", "100000000", *out],
            lambda: None,
        ),
    ]


ORIGINALS = ("m.npz", "m.weights.h5", "m.onnx")  # valid files the issue-24 cases edit


def edited(d: Path, original: str, name: str, edit: Callable[[bytes], bytes]) -> Path:
    """``name``: the valid ``original`` (written by ``init``) with ``edit`` applied."""
    (d / name).write_bytes(edit((d / original).read_bytes()))
    return d / name


def main() -> None:
    print(f"refusing hostile files ({hostile.VARIANT}), each command in a fresh process")
    print(f"{'file':<40} {'exit':>4} {'peak MB':>8} {'seconds':>8}  verdict")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "out").mkdir()
        for name in ORIGINALS:
            made = hostile.run_measured(command("init", str(d / name), "--variant", hostile.VARIANT))
            assert made.returncode == 0, made.stderr[-2000:]
        for what, args, build in cases(d):
            build()
            m = hostile.run_measured(command(*args))
            expected = 0 if what.startswith("valid") else 2
            if m.returncode != expected:
                print(m.stderr.strip()[-500:])
            ok = m.returncode == expected and m.peak_mb < TARGET_MB and m.seconds < TARGET_S
            print(
                f"{what:<40} {m.returncode:>4} {m.peak_mb:8.0f} {m.seconds:8.1f}  "
                f"{'met' if ok else 'MISSED'} (exit {expected}, < {TARGET_MB:.0f} MB, < {TARGET_S:.0f} s)"
            )


if __name__ == "__main__":
    main()

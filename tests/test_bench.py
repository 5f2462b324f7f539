"""``python -m conformance bench``: options refused before any framework loads, and a
small run that measures every runtime in its own process and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import bench

from .conftest import installed

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "conformance", "bench", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input-size", "16"], "--input-size 16: googlenet_bn cannot run it"),
        (["--frameworks", "torch,jax"], "--frameworks: unknown ['jax']"),
        (["--batch", "0"], "--batch: expected a positive integer, got 0"),
    ],
)
def test_bad_options_exit_2_before_any_framework_loads(args, message):
    r = cli(*args, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_settings_are_checked_without_importing_a_framework():
    code = (
        "import sys\nfrom conformance import bench\n"
        "try:\n    bench.check_settings(bench.Settings(size=16))\nexcept ValueError as e:\n    print(e)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'mxnet', 'onnxruntime') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert r.stdout.splitlines() == [r.stdout.splitlines()[0], "[]"] and "--input-size 16" in r.stdout


def test_an_existing_json_is_refused_before_measuring(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text("keep me")
    r = cli("--json", str(out), timeout=120)
    assert r.returncode == 2 and "--json" in r.stderr and "already exists" in r.stderr
    assert out.read_text() == "keep me"


def test_a_small_bench_measures_each_runtime_and_writes_its_figures(tmp_path):
    if "torch" not in installed():
        pytest.skip("needs torch")
    out = tmp_path / "bench.json"
    r = cli(
        "--variant", "inception_mnist", "--batch", "1", "--input-size", "28", "--rounds", "1",
        "--frameworks", "torch,onnx", "--train", "--modes", "default", "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "torch channels_last (default)" in r.stdout and "torch eager" in r.stdout
    assert "torch compile" not in r.stdout  # --modes default: the extras (minutes of compiling) are left out
    assert "limit:" in r.stdout and "load average" in r.stdout and "threads: torch" in r.stdout
    # what a user reads: figures, not the project's goals; threads only of what ran
    assert "goal" not in r.stdout and "MISSED" not in r.stdout and "issue" not in r.stdout
    assert "tensorflow" not in r.stdout.split("threads:")[1].splitlines()[0]
    assert [line for line in r.stderr.splitlines() if line.startswith("bench: round 1/1")], r.stderr
    doc = json.loads(out.read_text())
    rows = {row["label"]: row for row in doc["runtimes"]}
    infer = [row for row in doc["runtimes"] if row["kind"] == "infer"]
    assert {row["framework"] for row in infer} >= {"torch"}
    for row in [*infer, rows["torch train"]]:
        if row["skipped"]:
            continue
        assert row["images_per_s"] > 0 and row["first_s"] > 0 and row["peak_mb"] > 10
        assert len(row["seconds"]) == bench.Settings().calls  # one round
    assert doc["limit"]["gflops"] > 0 and doc["limit"]["gflop_per_image"] == pytest.approx(
        bench.gflop_per_image(bench.Settings("inception_mnist", 1, 28))
    )
    assert doc["ratios"]["default vs best mode"]["torch"] <= 1.0
    if "onnxruntime (torch's ONNX export)" in rows and not rows["onnxruntime (torch's ONNX export)"]["skipped"]:
        assert "fastest default vs onnxruntime" in doc["ratios"]

"""``python -m conformance bench``: options refused before any framework loads, and a
small run that measures every runtime in its own process and writes its figures."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.bench import kernels, markdown, report, results, settings

from . import conftest
from .conftest import installed

ROOT = Path(__file__).resolve().parents[1]


cli = functools.partial(conftest.cli, "bench")


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
        "import sys\nfrom conformance.bench import settings\n"
        "try:\n    settings.check_settings(settings.Settings(size=16))\nexcept ValueError as e:\n    print(e)\n"
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


@pytest.mark.e2e
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
        assert len(row["seconds"]) == settings.Settings().calls  # one round
    assert doc["limit"]["gflops"] > 0 and doc["limit"]["gflop_per_image"] == pytest.approx(
        kernels.gflop_per_image(settings.Settings("inception_mnist", 1, 28))
    )
    assert doc["ratios"]["default vs best mode"]["torch"] <= 1.0
    if "onnxruntime (torch's ONNX export)" in rows and not rows["onnxruntime (torch's ONNX export)"]["skipped"]:
        assert "fastest default vs onnxruntime" in doc["ratios"]


def made_bench() -> results.Bench:
    """A run as ``bench`` would return it, with figures chosen so each column is known."""
    s = settings.Settings("inception_mnist", batch=4, size=28, frameworks=("torch", "onnx"), train=True, rounds=1)
    rows = [
        results.Runtime("torch", "channels_last", default=True, version="torch 2", first_s=0.5, seconds=[0.1, 0.2]),
        results.Runtime("torch", "eager", version="torch 2", first_s=0.25, seconds=[0.2, 0.4], peak_mb=300.0),
        results.Runtime("onnx", "onnxruntime", version="onnxruntime 1", seconds=[0.05, 0.08], peak_mb=120.0),
        results.Runtime("torch", "train", kind="train", version="torch 2", first_s=1.0, seconds=[0.5, 1.0]),
        results.Runtime("mxnet", "-", skipped="not installed | pip install mxnet"),
    ]
    return results.Bench(s, 2, (0.5, 1.25), rows, results.Limit(40.0, "a matrix product", 0.02), 12.0)


def test_markdown_of_a_json_file_is_the_table(tmp_path):
    path = report.write_json(made_bench(), tmp_path / "bench.json")
    assert markdown.render(markdown.read(path)) == (
        "`inception_mnist`, batch 4, 28 x 28, float32, 2 cores; best of 1 rounds x 2 calls (median beside it); "
        "load average (1 min) 0.50 before, 1.25 after.\n"
        "\n"
        "| inference | images/s | median | x fastest | first call | peak RSS |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| onnxruntime (torch's ONNX export) | 80.0 | 61.5 | 1.00 | - | 120 MB |\n"
        "| torch channels_last (default) | 40.0 | 26.7 | 0.50 | 0.5 s | - |\n"
        "| torch eager | 20.0 | 13.3 | 0.25 | 0.2 s | 300 MB |\n"
        "\n"
        "| training (one SGD step per call) | images/s | median | x fastest | first call | peak RSS |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| torch train | 8.0 | 5.3 | 1.00 | 1.0 s | - |\n"
        "\n"
        "Skipped mxnet: not installed \\| pip install mxnet\n"
        "\n"
        "Limit: 2000 images/s, at the 40 GFLOP/s of the fastest kernel measured in the rounds (a matrix product, "
        "torch) for 0.02 GFLOP per image (2 x the spec's multiply-adds).\n"
        "\n"
        "Versions: onnxruntime 1; torch 2.\n"
    )


def test_markdown_of_a_scaling_json_is_its_table(tmp_path):
    s = settings.Settings("googlenet_d2l", batch=32, size=96)
    rows = [
        results.Scaling("torch", 1, 50.0, 2.0, 2, 700.0, 1.0),
        results.Scaling("torch", 2, 60.0, 3.0, 1, 575.0, 0.6),
        results.Scaling("keras", 2, failed="2 of 2 workers did not join within 60 s"),
    ]
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps(report.scaling_json(s, rows)))
    lines = markdown.render(markdown.read(path)).splitlines()
    assert lines[2:] == [
        "| framework | workers | images/s | speedup | efficiency | threads per worker | first step | peak MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        "| torch | 1 | 50.0 | 1.00 | 1.00 | 2 | 2.0 s | 700 |",
        "| torch | 2 | 60.0 | 1.20 | 0.60 | 1 | 3.0 s | 575 |",
        "| keras | 2 | failed: 2 of 2 workers did not join within 60 s | | | | | |",
    ]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda text: text[: len(text) // 2], "not a bench --json document: not JSON"),
        (
            lambda text: text.replace('"images_per_s": 40.0', '"images_per_s": "fast"'),
            "'runtimes' row 1 'images_per_s' is 'fast', expected a number",
        ),
        (lambda text: text.replace('"load_average"', '"load"'), "the document has no 'load_average'"),
        (lambda text: "[1, 2]", "the document is not a JSON object"),
    ],
)
def test_markdown_refuses_a_malformed_json_in_one_line(tmp_path, edit, message):
    path = report.write_json(made_bench(), tmp_path / "bench.json")
    text = path.read_text()
    assert '"images_per_s": 40.0' in text  # what the edits change is there to change
    path.write_text(edit(text))
    r = cli("--markdown", str(path), timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: --markdown {path}: ") and message in r.stderr


def test_the_docs_tables_are_what_markdown_renders_from_their_json():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    tables = re.findall(r"<!-- bench-table: (\S+) -->\n(.*?)<!-- end bench-table -->", page, re.S)
    assert tables, "no rendered table on docs/benchmarks.md"
    for name, shown in tables:
        assert shown == markdown.render(markdown.read(ROOT / "docs" / name)), name

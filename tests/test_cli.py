"""``python -m conformance``: exit codes, messages, the JSON report, skipped frameworks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance import frameworks
from conformance.__main__ import main
from conformance.formats.registry import FORMATS

from .conftest import cli, installed
from .helpers import PUBLISHED

ROOT = Path(__file__).resolve().parents[1]


def test_check_passes_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "report.json"
    r = cli(
        "check",
        "--variant",
        "googlenet",
        "--frameworks",
        "torch",
        "--input-size",
        "97",
        "--batch",
        "1",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "googlenet  (aux_logits=True)" in r.stdout and "PASS: all" in r.stdout
    without, with_aux = (f"{PUBLISHED['googlenet', aux][0]:,}" for aux in (False, True))
    assert without not in r.stdout and with_aux in r.stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] is True and doc["failed"] == 0 and doc["checks"] > 10
    assert doc["variants"][0]["counts"]["torch"] == [13_378_280, 0]


@pytest.mark.e2e
def test_check_train_reports_the_training_step(tmp_path):
    if len(installed()) < 2:
        pytest.skip("needs two frameworks")
    out = tmp_path / "report.json"
    fws = ",".join(list(installed())[:2])
    r = cli("check", "--train", "--variant", "residual_mnist", "--frameworks", fws, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "training step (float64, SGD lr 0.01 momentum 0.9" in r.stdout
    rows = json.loads(out.read_text())["variants"][0]["training"]
    assert [row["quantity"] for row in rows] == ["loss", "gradients", "weights after step 1", "weights after step 2"]
    assert all(row["passed"] for row in rows)
    assert rows[1]["keys"] == 14  # c1, two convs per block, c2, l: weight and bias each
    r = cli("check", "--train", "--variant", "residual_mnist", "--batch", "1", "--frameworks", fws)
    assert r.returncode == 2 and "--batch: --train needs at least 2 images" in r.stderr


def test_json_is_never_overwritten_silently(tmp_path, capsys):
    out = tmp_path / "report.json"
    out.write_text("keep me")
    assert main(["check", "--frameworks", "torch", "--input-size", "97", "--json", str(out)]) == 2
    assert "--json" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["check", "--frameworks", "torch", "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["check", "--variant", "googlenet", "--variant", "googlenet_bn", "--input-size", "16"],
            "--input-size 16: no variant can run it: googlenet: input size 16: the maxpool3 window",
        ),
        (["check", "--frameworks", "torch,tf-lite"], "--frameworks: unknown ['tf-lite']"),
    ],
)
def test_bad_options_exit_2_naming_the_option(capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "args", [["check", "--batch", "0"], ["check", "--variant", "vgg"], ["check", "--input-size", "big"]]
)
def test_argparse_rejects_bad_values(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and args[1] in capsys.readouterr().err


def test_missing_framework_is_skipped_with_its_install_hint(monkeypatch, capsys):
    monkeypatch.setitem(frameworks.FRAMEWORKS, "ghost", ("impl_ghost", "pip install ghost"))
    backends, skipped = frameworks.load(["ghost"])
    assert backends == {} and "install with: pip install ghost" in skipped["ghost"]
    # alongside a real one: reported as skipped, never a traceback, and the rest still runs
    assert (
        main(
            [
                *("check", "--in-process", "--variant", "googlenet", "--frameworks", "torch,ghost"),
                *("--input-size", "97", "--batch", "1"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "skipped:    ghost: not installed" in out and "PASS: all" in out


def test_no_framework_at_all_fails(monkeypatch, capsys):
    monkeypatch.setitem(frameworks.FRAMEWORKS, "ghost", ("impl_ghost", "pip install ghost"))
    assert main(["check", "--in-process", "--frameworks", "ghost", "--input-size", "97"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: no framework asked for is installed (ghost), nothing was checked" in out
    assert "skipped:    ghost: not installed" in out and "install with: pip install ghost" in out


def test_spec_prints_shapes_counts_and_multiply_adds():
    r = cli("spec", "--variant", "googlenet", "--input-size", "224")
    assert r.returncode == 0, r.stderr
    assert "inception4d    528 x 14 x 14" in r.stdout
    assert "total" in r.stdout and f"{PUBLISHED['googlenet', False][0]:,}" in r.stdout and "1,582,671,872" in r.stdout


def test_spec_of_liu_s_residual_net_names_its_blocks_as_liu_does():
    r = cli("spec", "--variant", "residual_mnist")
    assert r.returncode == 0, r.stderr
    assert "rblock1.conv2" in r.stdout and "flatten        512" in r.stdout
    assert r.stdout.splitlines()[-1].split()[:2] == ["total", "41,514"]
    r = cli("spec", "--variant", "residual_mnist", "--input-size", "64")
    assert r.returncode == 2 and "l reads 32 x 4 x 4 flattened, so use --input-size 28" in r.stderr


def test_json_report_is_strict_json_even_for_infinite_errors(tmp_path):
    from conformance.check import report, results
    from conformance.check.compare import Agreement

    row = results.StageRow(
        "conv1", (1, 64, 49, 49), {"torch": (1, 64, 49, 49)}, {"keras": Agreement(float("inf"), float("nan"))}, False
    )
    r = results.Report(
        {"torch": "torch"},
        {},
        "torch",
        1,
        0,
        1e-4,
        [
            results.VariantReport(
                "googlenet", {}, {"spec": (1, 0), "torch": (1, 0)}, {}, [results.SizeReport(97, False, [row])]
            )
        ],
        {},
    )
    path = report.write_json(r, tmp_path / "r.json")
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    agreement = doc["variants"][0]["sizes"][0]["stages"][0]["agreement"]["keras"]
    assert agreement["max_abs"] == "inf" and agreement["max_rel"] == "nan" and doc["passed"] is False


def test_options_are_checked_before_any_framework_is_imported():
    """Issue 9, case 8: ``check --seed -5`` answered after 6 s of imports. Every option
    is checked, and named, before a framework is imported."""
    code = (
        "import sys\nfrom conformance.__main__ import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit as e:\n    print(e.code, [m for m in ('torch', 'tensorflow', 'mxnet') if m in sys.modules])"
    )
    cases = [
        (["check", "--seed", "-5"], "argument --seed: expected a non-negative integer, got -5"),
        (["port", "a.pth", "b.npz", "--variant", "googlenet", "--num-classes", "500000"], "100,000"),
        (["train", "--framework", "torch", "--variant", "googlenet", "--epochs", "100000000"], "10,000"),
        (["spec", "--num-classes", "200000"], "argument --num-classes: expected an integer from 1 to 100,000"),
    ]
    for args, message in cases:
        r = subprocess.run(
            [sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, cwd=ROOT, timeout=60
        )
        assert r.stdout.strip() == "2 []" and message in r.stderr, (args, r.stdout, r.stderr)


def test_the_known_suffixes_are_listed_once(tmp_path):
    (tmp_path / "a.pth").write_bytes(b"x")
    r = cli("port", str(tmp_path / "a.pth"), str(tmp_path / "b.bin"), "--variant", "googlenet")
    known = [suffix for f in FORMATS.values() for suffix in f.suffixes]
    listed = r.stderr.split("(known: ")[1].split("); pass --to")[0].split(", ")
    assert r.returncode == 2 and listed == list(dict.fromkeys(known)), r.stderr  # .params twice in FORMATS
    assert {".safetensors", ".pth", ".weights.h5", ".keras", ".params"} <= set(listed)

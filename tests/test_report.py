"""The check report fits a terminal: 100 columns by default, whatever the number of
compared runs (frameworks, judges, modes), with every figure still in the JSON."""

from __future__ import annotations

import json

import pytest

from conformance.check import report, results
from conformance.check.compare import Agreement

RUNS = ["keras", "mxnet", "onnx", "onnx-keras", "onnx-mxnet"]
LONG_KEY = "inception4e.branch2.1.bn.running_var.after.step.2.of.a.long.name"


TABLE = "vs torch\n    stage"


def _tables(text: str) -> int:
    return text.count(TABLE)


def _agreement(rel: float, logits: bool = False) -> Agreement:
    top = 1.0 if logits else None
    return Agreement(rel * 13.0, rel, top, top, passed=rel <= 1e-4)


def _row(stage: str, shape: tuple[int, ...], rel: dict[str, float], logits: bool = False) -> results.StageRow:
    agreement = {fw: _agreement(r, logits) for fw, r in rel.items()}
    shapes = {"torch": shape, **{fw: shape for fw in rel}}
    return results.StageRow(stage, shape, shapes, agreement, all(a.passed for a in agreement.values()))


def _report(broken: str | None = None) -> results.Report:
    rel = {fw: (5e-2 if fw == broken else 1.5e-6) for fw in RUNS}
    stages = [_row("conv1", (2, 64, 112, 112), rel), _row("logits", (2, 1000), rel, logits=True)]
    size = results.SizeReport(224, False, stages)
    variant = results.VariantReport(
        "googlenet", {"aux_logits": True}, {"spec": (1, 0), "torch": (1, 0), "keras": (1, 0), "mxnet": (1, 0)}, {}
    )
    variant.roundtrip = {"torch": [], "keras": [], "mxnet": [], "torch -> keras -> mxnet -> torch": []}
    variant.sizes = [size]
    variant.skipped_sizes = {97: "input size 97: the head pool's 7 x 7 window is larger than the 3 x 3 map; " * 2}
    variant.training = [
        results.TrainRow("running statistics after step 1", 57, {"keras": LONG_KEY, "mxnet": "step 2"},
                         {"keras": _agreement(2e-9), "mxnet": _agreement(3e-9)}, True),
    ]  # fmt: skip
    versions = {"torch": "torch 2.13.0+cpu", "keras": "keras 3", "mxnet": "mxnet 1.9.1"}
    versions |= {j: f"onnxruntime 1.32.0 on {j}'s ONNX export, with a long description" for j in RUNS[2:]}
    timings = {fw: {"build": 1.0, "load": 0.1, "forward": 0.3, "channels_last": 0.6, "train": 5.9} for fw in versions}
    return results.Report(versions, {}, "torch", 2, 0, 1e-4, [variant], timings, {}, RUNS[2:])


def test_the_report_fits_100_columns_with_every_judge():
    text = report.render(_report())
    assert max(len(line) for line in text.splitlines()) <= report.WIDTH
    # every run's figures are there, in tables of the runs that fit side by side
    for fw in RUNS:
        assert fw in text
    assert _tables(text) == 3 and text.splitlines()[-1].startswith("PASS: all")


def test_wide_puts_every_run_in_one_table():
    text = report.render(_report(), report.columns(wide=True))
    assert _tables(text) == 1
    assert max(len(line) for line in text.splitlines()) > report.WIDTH


@pytest.mark.parametrize("width", [60, 100, 160])
def test_a_failing_run_fails_its_own_table_only(width):
    """The negative control: with the tables split, the FAIL is on the broken run's
    table, every other table of the same rows says PASS, and the verdict fails."""
    text = report.render(_report(broken="onnx-keras"), width)
    heads = text.split(TABLE)[:-1]  # each ends with a table's head: the runs it shows
    bodies = [body.split("training step")[0] for body in text.split(TABLE)[1:]]
    failing = [i for i, body in enumerate(bodies) if "FAIL" in body]
    assert len(failing) == 1 and "onnx-keras" in heads[failing[0]].splitlines()[-1]
    assert text.splitlines()[-1].startswith("FAIL:")


def test_long_worst_keys_are_cut_in_the_text_and_kept_in_the_json():
    r = _report()
    text = report.render(r)
    assert LONG_KEY not in text and "inception4e.br..." in text
    assert json.dumps(report.to_json(r)).count(LONG_KEY) == 1


def test_the_terminal_width_is_used_only_when_it_is_wider(monkeypatch):
    monkeypatch.setattr(report.sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(report.shutil, "get_terminal_size", lambda fallback: __import__("os").terminal_size((180, 50)))
    assert report.columns(wide=False) == 180
    monkeypatch.setattr(report.shutil, "get_terminal_size", lambda fallback: __import__("os").terminal_size((70, 50)))
    assert report.columns(wide=False) == report.WIDTH

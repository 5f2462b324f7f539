"""``python -m conformance pitfalls``: every mistake of the catalogue diverges first at
the stage (or training quantity) where it is made, with figures, and says so."""

from __future__ import annotations

import json

import pytest

from conformance import spec
from conformance.teach import measure
from conformance.teach.pitfalls import PITFALLS

from .conftest import PITFALL_BATCH, XLA_TRAINING, cli, installed, skip_without_jax

ISSUE_LIST = {  # the issue's list, one name per mistake
    "same-padding",
    "floor-pooling",
    "kernel-transposed",
    "dense-rows",
    "bn-eps-gluon",
    "bn-eps-keras",
    "bn-momentum",
    "running-variance",
    "lrn-alpha",
    "transform-input",
    "rgb-bgr",
    "aux-weight",
    "sgd-momentum",
    "slim-5x5",  # issue 15: TF-slim's inception_v1
    "symmetric-padding",
    "slim-gamma",
    "relu-missing",  # issue 20: mistakes of hand-written ports, which verify diagnoses
    "relu-added",
    "dropout-on",
    "branch-order",
    "softmax-output",
    "count-include-pad",
    "zero-padded-max-pool",  # issue 21: JAX + Flax ports
    "flax-avg-pool",
    "flax-kernel-io",
    "flax-bn-momentum",
    "flax-running-variance",
}
# Measured harmless on their default variants (they change nothing there, at any size);
# tests/test_pitfalls_jax.py shows each diverging where it can.
HARMLESS = {"zero-padded-max-pool"}
REFUSED = {"flax-kernel-io": "'conv1.conv.weight': converted to"}  # the broken port's loader refuses it
PAIRS = measure.planned(list(PITFALLS), None)
JAX_PITFALLS = [n for n, p in PITFALLS.items() if p.framework == "jax"]
# the pairs whose measurement compiles a float64 training step with XLA run with -m e2e
PARAMS = [pytest.param(n, v, id=f"{n}-{v}", marks=[pytest.mark.e2e] if n in XLA_TRAINING else []) for n, v in PAIRS]
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_catalogue_holds_every_pitfall_of_the_issue():
    assert set(PITFALLS) == ISSUE_LIST
    training = {n for n, p in PITFALLS.items() if p.kind == "training"}
    assert training == {
        "bn-momentum",
        "running-variance",
        "aux-weight",
        "sgd-momentum",
        "slim-gamma",
        "flax-bn-momentum",
        "flax-running-variance",
    }
    assert PITFALLS["bn-eps-gluon"].variants == ("googlenet_bn",)
    assert PITFALLS["bn-eps-keras"].variants == ("googlenet_cifar",)


@pytest.mark.parametrize(("name", "variant"), PARAMS)
def test_first_divergence_is_where_the_mistake_is_made(request, name, variant):
    fixture = "xla_training_pitfall_measurements" if name in XLA_TRAINING else "pitfall_measurements"
    m = request.getfixturevalue(fixture)[(name, variant)]
    if m.skipped:
        pytest.skip(m.skipped)
    if name in REFUSED:
        assert REFUSED[name] in m.error and m.as_expected and not m.points
        return
    assert not m.error, m.error
    if name in HARMLESS:
        assert m.where is None and m.first is None and m.as_expected
        assert m.points and all(pt.passed for pt in m.points)
        return
    assert m.where is not None  # each default variant shows its mistake
    assert m.first == m.where, (m.first, m.where)
    assert m.as_expected
    before = [pt for pt in m.points[: [pt.name for pt in m.points].index(m.first)]]
    assert all(pt.passed for pt in before)  # nothing diverged earlier
    if m.kind == "inference":
        assert m.first_rel is not None or "shape" in m.first_note
        assert m.logits_rel is not None and m.top1 is not None and m.top5 is not None
        assert m.batch == PITFALL_BATCH
    else:
        assert "step" in m.first_note
        assert m.first_rel is not None and m.first_rel > 1e-4


def test_the_figures_are_where_the_mistake_is(pitfall_measurements):
    """Spot checks of what each mistake does, beyond where it starts."""
    got = {k: m for k, m in pitfall_measurements.items() if not m.skipped}
    if ("dense-rows", "googlenet_bn") in got:  # the aux heads only: the logits agree
        m = got[("dense-rows", "googlenet_bn")]
        assert m.logits_rel is not None and m.logits_rel < 1e-4 and m.top5 == 1.0
    if ("floor-pooling", "googlenet_bn") in got:  # a shape, not a value
        assert got[("floor-pooling", "googlenet_bn")].first_note.startswith("shape 4x64x23x23")
    if ("sgd-momentum", "inception_mnist") in got:  # step 1 agrees, step 2 does not
        m = got[("sgd-momentum", "inception_mnist")]
        passed = {pt.name: pt.passed for pt in m.points}
        assert passed["weights after step 1"] and not passed["weights after step 2"]
    if ("running-variance", "googlenet_cifar") in got:
        assert got[("running-variance", "googlenet_cifar")].first_note.endswith("running_var")


def test_floor_rounding_changes_nothing_at_the_sizes_it_names():
    pitfall = PITFALLS["floor-pooling"]
    p = spec.resolve("googlenet_bn")
    sizes = measure.harmless_sizes(pitfall, p)
    assert sizes[:4] == [45, 46, 77, 78] and 224 not in sizes and 96 not in sizes
    assert measure.sizes_text(sizes).startswith("45-46, 77-78, 109-110, ... (every 32 pixels")
    for size in sizes[:2]:  # every max pool meets a map where both roundings agree
        ceil = spec.stage_shapes(p, size)
        floor = spec.stage_shapes(spec.resolve(_floor_variant(p.variant)), size)
        assert ceil == floor
    if {"torch", "mxnet"} <= set(installed()):
        m = measure.measure(pitfall, "googlenet_bn", installed(), size=77, batch=2)
        assert m.where is None and m.first is None and m.as_expected  # measured: nothing diverges


def _floor_variant(v: spec.Variant) -> spec.Variant:
    import dataclasses

    rows = tuple(dataclasses.replace(r, ceil_mode=False) if isinstance(r, spec.Pool) else r for r in v.rows)
    return dataclasses.replace(v, rows=rows, name="floor")


@pytest.mark.parametrize(
    ("name", "variant", "reason"),
    [
        ("lrn-alpha", "googlenet", "no LocalResponseNorm"),
        ("transform-input", "googlenet_cifar", "no input transform"),
        ("rgb-bgr", "googlenet_d2l", "1 input channel(s)"),
        ("bn-eps-gluon", "googlenet", "no BatchNorm"),
        ("bn-eps-gluon", "googlenet_cifar", "its BatchNorm epsilon already is 1e-05"),
        ("dense-rows", "googlenet_d2l", "no dense layer reads a flattened map"),
        ("floor-pooling", "googlenet_d2l", "its max pools already round down"),
        ("same-padding", "inception_mnist", "no strided padded conv"),
        ("aux-weight", "googlenet_cifar", "no aux heads"),
        ("symmetric-padding", "googlenet_bn", "no strided op with TensorFlow's SAME padding"),
        ("slim-gamma", "googlenet_bn", "its BatchNorm has a scale"),
        ("slim-5x5", "googlenet", "its branch 3 has no 3x3 conv"),
        ("bn-momentum", "inception_mnist", "no BatchNorm"),
        ("relu-missing", "inception_mnist", "no conv unit has a ReLU of its own"),
        ("relu-added", "googlenet_bn", "every conv has its ReLU already"),
        ("dropout-on", "googlenet_d2l", "no dropout before the classifier"),
        ("branch-order", "residual_mnist", "no Inception block"),
        ("count-include-pad", "googlenet_bn", "no average pool with padding"),
        ("zero-padded-max-pool", "inception_mnist", "its max pools have no padding and round down"),
        ("flax-avg-pool", "googlenet_bn", "no average pool counts padding in its mean"),
        ("flax-bn-momentum", "googlenet_d2l", "no BatchNorm"),
        ("flax-running-variance", "googlenet_lrn", "no BatchNorm"),
    ],
)
def test_a_pitfall_that_cannot_apply_says_why(name, variant, reason):
    m = measure.measure(PITFALLS[name], variant, {})  # decided from the spec: no framework runs
    assert m.skipped.startswith(f"cannot apply to {variant}: ") and reason in m.skipped
    assert "skipped: cannot apply" in measure.render(m)


def test_the_report_reads_as_the_readme_shows(pitfall_measurements):
    m = pitfall_measurements[("same-padding", "googlenet_bn")]
    if m.skipped:
        pytest.skip(m.skipped)
    text = measure.render(m)
    assert "first divergent stage: conv1 (where the mistake is made), max rel" in text
    assert "top-1 agreement" in text and "top-5" in text and "why: " in text
    assert "changes nothing at input sizes" in text


def test_plot_is_a_png_with_every_stage(pitfall_measurements):
    m = next(m for m in pitfall_measurements.values() if not m.skipped)
    assert measure.plot(m).startswith(PNG)
    doc = measure.to_json([m], PITFALL_BATCH, 0)
    back = measure.Measurement.from_dict(json.loads(json.dumps(doc))["pitfalls"][0])
    assert back == m


def test_pitfalls_command(tmp_path):
    if not {"torch", "keras"} <= set(installed()):
        pytest.skip("needs torch and keras")
    out, plots = tmp_path / "pitfalls.json", tmp_path / "plots"
    args = ["pitfalls", "--pitfall", "lrn-alpha", "--pitfall", "sgd-momentum", "--batch", "2"]
    r = cli(*args, "--json", str(out), "--plot", str(plots))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "lrn-alpha: LRN alpha not divided by the window size" in r.stdout
    assert "first divergent stage: lrn1 (where the mistake is made)" in r.stdout
    assert "first divergent quantity: weights after step 2 (where the mistake is made)" in r.stdout
    assert "PASS: each of 2 measured pitfalls diverges first where its mistake is made" in r.stdout
    doc = json.loads(out.read_text())
    assert [p["pitfall"] for p in doc["pitfalls"]] == ["lrn-alpha", "sgd-momentum"] and doc["as_expected"]
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["lrn-alpha-googlenet_lrn.png", "sgd-momentum-inception_mnist.png"]
    assert all(p.read_bytes().startswith(PNG) for p in plots.iterdir())
    # nothing is overwritten without --force, and that is refused before any work
    r = cli(*args, "--json", str(out))
    assert r.returncode == 2 and f"--json {out}: already exists; pass --force" in r.stderr
    r = cli(*args, "--plot", str(plots))
    assert r.returncode == 2 and "--plot" in r.stderr and "lrn-alpha-googlenet_lrn.png: already exists" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pitfall", "lrn-alpha", "--input-size", "20"], "--input-size 20: lrn-alpha runs on googlenet_lrn"),
        (["--pitfall", "nonsense"], "argument --pitfall: invalid choice: 'nonsense'"),
        (["--batch", "0"], "argument --batch: expected a positive integer, got 0"),
        (["--plot", "/nonexistent/dir/plots"], "--plot /nonexistent/dir/plots: directory /nonexistent/dir does not"),
    ],
)
def test_pitfalls_bad_options_exit_2_before_any_work(args, message):
    r = cli("pitfalls", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_pitfall_on_a_variant_it_cannot_apply_to_is_reported_skipped():
    r = cli("pitfalls", "--pitfall", "lrn-alpha", "--variant", "googlenet")
    assert r.returncode == 0, r.stderr
    assert "skipped: cannot apply to googlenet: no LocalResponseNorm" in r.stdout


def test_same_padding_changes_nothing_at_the_sizes_it_names():
    """At 47 (and every 16 pixels on) "same" gives the 7x7/2 conv (3, 3) and the pools
    PyTorch's windows: the spec says so, and so does the measurement."""
    pitfall = PITFALLS["same-padding"]
    sizes = measure.harmless_sizes(pitfall, spec.resolve("googlenet_bn"))
    assert {47, 63, 223} <= set(sizes) and not {96, 224} & set(sizes)
    if {"torch", "keras"} <= set(installed()):
        m = measure.measure(pitfall, "googlenet_bn", installed(), size=47, batch=2)
        assert m.where is None and m.first is None and m.as_expected


def test_the_catalogue_measures_the_jax_entries(pitfall_measurements):
    """The JAX entries measured with the rest (tests/test_pitfalls_jax.py: each mistake on its
    layer, and the Flax training entries with -m e2e): one file reads the session's fixture."""
    got = {k: m for k, m in pitfall_measurements.items() if k[0] in JAX_PITFALLS}
    assert {k[0] for k in got} == set(JAX_PITFALLS) - XLA_TRAINING
    skip_without_jax(got)
    for variant in ("googlenet_d2l", "googlenet_bn"):  # measured harmless: nothing diverges
        m = got[("zero-padded-max-pool", variant)]
        assert m.where is None and m.first is None and not m.error and m.points and m.as_expected
        assert all(pt.passed for pt in m.points) and m.top1 == 1.0
    m = got[("flax-kernel-io", "googlenet_cifar")]  # refused by shape before any forward
    assert "'conv1.conv.weight': converted to (3, 3, 64, 3), Flax variable is (3, 3, 3, 64)" in m.error
    m = got[("flax-avg-pool", "inception_mnist")]
    assert m.first == m.where == "incep1" and m.first_rel is not None and m.first_rel > 1e-2

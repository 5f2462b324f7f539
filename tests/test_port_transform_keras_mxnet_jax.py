"""``port`` and ``transform_input`` (issue #25), Keras's, MXNet's and JAX's formats: as
tests/test_port_transform.py holds for PyTorch's, each format records the setting or says
it cannot, and its printed load line runs clean in a fresh process (issue #25, item 6)."""

from __future__ import annotations

import pytest

from conformance.formats import deploy

from .transform_written import (
    KERAS_MXNET_JAX,
    Written,
    check_kept,
    check_load_line,
    check_said,
    not_recording,
    recording,
    run_clean,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Written:
    return Written(tmp_path_factory.mktemp("transform"))


@pytest.mark.parametrize("name", recording(KERAS_MXNET_JAX))
def test_a_format_that_records_transform_input_keeps_it(written, name):
    check_kept(written, name)


@pytest.mark.parametrize("name", not_recording(KERAS_MXNET_JAX))
def test_a_format_that_cannot_record_it_says_so_and_its_load_line_builds_with_it(written, name):
    check_said(written, name)


@pytest.mark.parametrize("name", list(KERAS_MXNET_JAX))
def test_the_printed_load_line_runs_clean(written, name):
    check_load_line(written, name)


@pytest.mark.parametrize("name", ["gluon-export", "keras"])
def test_negative_control_the_noisy_loads_fail_the_clean_run_check(written, name):
    """What the issue saw: ``SymbolBlock.imports`` with the params file ("Cannot decide
    type"), ``import keras`` before ``impl_keras`` (TensorFlow's start-up lines)."""
    path, _ = written(name)
    if name == "gluon-export":
        params = deploy.params_of(path)
        mxnet = "import numpy; numpy.bool = bool; import mxnet"
        line = f"{mxnet}; mxnet.gluon.SymbolBlock.imports({str(path)!r}, ['data'], {str(params)!r})"
    else:
        line = f"import keras, impl_keras; keras.saving.load_model({str(path)!r})"
    done = run_clean(line, path.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr != ""

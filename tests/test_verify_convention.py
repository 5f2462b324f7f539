"""``verify``'s input convention options: a model that expects Caffe's input (BGR pixels
in 0-255 less the mean pixel) disagrees with its variant fed the variant's input, and
agrees once ``--bgr --input-scale 255 --input-mean 104,117,123`` say so (each option
left out is a negative control); a model fed 8-bit pixels agrees with ``--input-scale
255`` only; bad options are one line before the model is imported."""

from __future__ import annotations

import numpy as np
import pytest

import conformance
from conformance import spec
from conformance.__main__ import main
from conformance.verify import convention

from .conftest import backend_or_skip

backend_or_skip("torch")

from . import convention_nets  # noqa: E402

CAFFE = ["--bgr", "--input-scale", "255", "--input-mean", "104,117,123"]


def test_the_caffe_transform_is_the_conversion_between_the_two_references():
    """googlenet_lrn's reference with transform_input takes ImageNet-normalised RGB and
    makes Caffe's input of it; without, it reads Caffe's input: converting from the first
    convention to the second is that transform, channel for channel."""
    from conformance.verify.diagnose import _transformed

    with_transform = spec.resolve("googlenet_lrn", transform_input=True)
    without = spec.resolve("googlenet_lrn")
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    converted = convention.convert(x, convention.variant(with_transform), convention.variant(without))
    import torch

    assert np.allclose(converted, _transformed(with_transform, torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-3)
    assert convention.variant(without).describe().startswith("BGR in 0-1, mean (0.408")  # 104 / 255
    back = convention.convert(converted, convention.variant(without), convention.variant(with_transform))
    assert np.allclose(back, x, atol=1e-5)


def test_a_model_expecting_caffes_input_agrees_only_when_told(capsys):
    model = convention_nets.caffe_input()
    plain = conformance.verify(model, input_sizes=[32], batch=1, run_diagnosis=False)
    assert plain.variant == "googlenet_cifar" and not plain.agree  # fed the variant's input: wrong
    no_bgr = conformance.verify(
        model, input_sizes=[32], batch=1, run_diagnosis=False, input_scale=255, input_mean=[104, 117, 123]
    )
    assert not no_bgr.agree  # the same but RGB: wrong
    told = conformance.verify(model, input_sizes=[32], batch=1, bgr=True, input_scale=255, input_mean=[104, 117, 123])
    assert told.agree and told.logits.max_rel < 1e-5, told
    assert told.input_convention.startswith("BGR in 0-255, mean (104, 117, 123), std (1, 1, 1)")
    code = main(["verify", "tests/convention_nets.py:caffe_input", "--input-size", "32", "--batch", "1", *CAFFE])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "your input: BGR in 0-255, mean (104, 117, 123)" in printed


def test_a_model_fed_8_bit_pixels_agrees_with_input_scale_255(capsys):
    args = ["verify", "tests/convention_nets.py:pixels_255", "--input-size", "96", "--batch", "1", "--no-diagnosis"]
    assert main(args) == 1
    capsys.readouterr()
    assert main([*args, "--input-scale", "255"]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert main([*args, "--bgr"]) == 2  # one channel: BGR means nothing
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--bgr: your model takes 1 input channel(s); BGR needs 3" in err[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--input-scale", "0"], "--input-scale: expected a number above 0"),
        (["--input-scale", "nan"], "--input-scale: expected a number above 0"),
        (["--input-scale", "2,3"], "--input-scale: expected one number"),
        (["--input-mean", "1,2"], "--input-mean: expected one number or three"),
        (["--input-mean", "a,b,c"], "--input-mean: expected numbers separated by commas"),
        (["--input-std", "1,0,1"], "--input-std: expected numbers above 0"),
        (["--input-std", "inf"], "--input-std: expected one number or three"),
    ],
)
def test_bad_convention_options_are_one_line_before_the_model_is_imported(args, words, capsys):
    """MODEL names a module that does not exist: the option is refused first."""
    assert main(["verify", "no_such_module_here:make", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err

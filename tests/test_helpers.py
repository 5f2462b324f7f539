"""The shared test helpers (``tests/helpers.py``) fail where they must: a refusal that
is not one, a port that is not refused or refused for another reason."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conformance import canonical

from .helpers import assert_refused, flip, port_refused, random_images, seeded


def _ended(code: int, stderr: str) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(["conformance"], code, "", stderr)


def test_a_refusal_passes_as_one():
    assert_refused(_ended(2, "error: --batch: expected a positive integer, got 0\n"), "--batch")


@pytest.mark.parametrize(
    "code,stderr,needles",
    [
        (1, "error: --batch: expected a positive integer, got 0\n", ()),  # not exit 2
        (2, "Traceback (most recent call last):\nerror: boom\n", ()),  # a traceback
        (2, "error: one\nerror: two\n", ()),  # two errors
        (2, "error: --batch: expected a positive integer\n", ("--seed",)),  # names another option
    ],
    ids=["exit 1", "traceback", "two errors", "wrong option"],
)
def test_what_is_not_a_refusal_fails(code, stderr, needles):
    with pytest.raises(AssertionError):
        assert_refused(_ended(code, stderr), *needles)


def test_alone_is_one_line_of_stderr():
    noisy = _ended(2, "a framework's warning\nerror: --batch: expected a positive integer\n")
    assert_refused(noisy, alone=False)
    with pytest.raises(AssertionError):
        assert_refused(noisy)


def test_a_port_that_succeeds_is_no_refusal(tmp_path):
    p, params = seeded("inception_mnist")
    src = canonical.save(params, tmp_path / "a.safetensors", p)
    with pytest.raises(pytest.fail.Exception):  # pytest.raises' "DID NOT RAISE"
        port_refused(src, tmp_path / "b.npz", "inception_mnist", "anything")
    bad = tmp_path / "c.npz"
    bad.write_bytes(b"not a checkpoint")
    assert port_refused(bad, tmp_path / "d.npz", "inception_mnist", r"c\.npz")
    with pytest.raises(AssertionError):  # refused, but not for the reason given
        port_refused(bad, tmp_path / "d.npz", "inception_mnist", "no such reason")


def test_flip_xors_in_order_and_images_are_seeded():
    assert flip(b"\x00\x0f", [(0, 0xFF), (1, 0x0F), (0, 0x0F)]) == b"\xf0\x00"
    a, b = random_images(2, 8, seed=[1, 8]), random_images(2, 8, seed=[1, 8])
    assert a.dtype == np.float32 and a.shape == (2, 3, 8, 8) and np.array_equal(a, b)
    assert not np.array_equal(a, random_images(2, 8, seed=[2, 8]))
    uniform = random_images(1, 8, channels=1, uniform=True)
    assert uniform.shape == (1, 1, 8, 8) and uniform.min() >= -1 and uniform.max() < 1

"""Small files that declare huge contents (issue 9, case 2): each is refused with exit 2
and one message, before anything is allocated: under 1 GB peak memory (measured in
the child; the imports take 150-520 MB of it). The seconds are printed, and compared
side by side by benchmarks/bench_hostile.py; a refusal that hangs fails at the timeout.
Each child runs under a 6 GB address-space limit, so a regression fails instead of
taking the machine's memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import hostile
from .conftest import backend_or_skip
from .helpers import assert_refused as assert_cli_refused
from .helpers import command

PEAK_MB = 1000


def assert_refused(m: hostile.Measured, *needles: str) -> None:
    print(f"peak {m.peak_mb:.0f} MB, {m.seconds:.1f} s: {m.stderr.strip()[:200]}")
    assert_cli_refused(m, *needles, alone=False)
    assert m.peak_mb < PEAK_MB, f"peak {m.peak_mb:.0f} MB"


def port(src: Path, dst: Path) -> hostile.Measured:
    m = hostile.run_measured(command("port", str(src), str(dst), "--variant", hostile.VARIANT), timeout=300)
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if ".conformance-tmp" in p.name]
    return m


def test_weights_h5_declaring_a_huge_dataset(tmp_path):
    backend_or_skip("keras")
    src = hostile.weights_h5_undeclared(tmp_path / "x.weights.h5")
    assert src.stat().st_size < 1 << 20
    fc = hostile.h5_path("fc.weight")
    assert_refused(port(src, tmp_path / "y.npz"), f"x.weights.h5: '{fc}' declares float32 [1408, 500000]")


def test_keras_config_declaring_half_a_million_classes(tmp_path):
    backend_or_skip("keras")
    src = hostile.keras_classes(tmp_path / "x.keras")
    assert_refused(port(src, tmp_path / "y.npz"), "x.keras", "500000 classes", "1 to 100,000")


def test_keras_config_of_a_gigabyte_of_spaces(tmp_path):
    backend_or_skip("keras")
    src = hostile.keras_padded_config(tmp_path / "x.keras")
    assert src.stat().st_size < 4 << 20
    assert_refused(port(src, tmp_path / "y.npz"), "x.keras: its config.json declares 1,100,0")


def test_sparse_safetensors_declaring_8_gib(tmp_path):
    src = hostile.safetensors_sparse(tmp_path / "x.safetensors")
    assert src.stat().st_blocks * 512 < 1 << 20  # sparse: nothing on disk
    assert_refused(port(src, tmp_path / "y.npz"), "x.safetensors", "'fc.weight'", "8,590 MB")


@pytest.mark.parametrize("n", [50_000, 1_000_000])
def test_pth_holding_an_expanded_tensor(tmp_path, n):
    backend_or_skip("torch")
    src = hostile.pth_expanded(tmp_path / "x.pth", n)
    assert src.stat().st_size < 1 << 20
    assert_refused(port(src, tmp_path / "y.npz"), "x.pth", "'fc.weight'", f"{n}, {n}")


def test_deflated_npz_declaring_a_gigabyte(tmp_path):
    src = hostile.npz_deflated(tmp_path / "x.npz")
    assert src.stat().st_size < 4 << 20
    assert_refused(port(src, tmp_path / "y.safetensors"), "x.npz", "'fc.weight'", "1408, 200000")


def test_gzipped_idx_declaring_a_gigabyte(tmp_path):
    data = hostile.idx_gzipped(tmp_path / "data")
    assert (data / "train-images-idx3-ubyte.gz").stat().st_size < 4 << 20
    (tmp_path / "out").mkdir()
    args = ["--framework", "torch", "--variant", hostile.VARIANT, "--data", str(data), "--out", str(tmp_path / "out")]
    m = hostile.run_measured(command("train", *args))
    assert_refused(m, "train-images-idx3-ubyte.gz: 1,500,000 images", "pass --limit")
    assert not list((tmp_path / "out").iterdir())


def test_a_hundred_million_epochs(tmp_path):
    args = ["--framework", "torch", "--variant", hostile.VARIANT, "--epochs", "100000000", "--out", str(tmp_path)]
    m = hostile.run_measured(command("train", *args))
    assert m.returncode == 2 and "--epochs: expected an integer from 1 to 10,000" in m.stderr, m.stderr
    assert m.peak_mb < PEAK_MB and not list(tmp_path.iterdir())


def test_a_caffemodel_of_fifty_million_empty_layers(tmp_path):
    pytest.importorskip("google.protobuf")
    src = hostile.caffe_empty_layers(tmp_path / "x.caffemodel")
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "y.npz"), "--variant", "googlenet_lrn"))
    assert_refused(m, "x.caffemodel: it holds more than 4,096 layers; bvlc_googlenet has 159")

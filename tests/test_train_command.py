"""``python -m conformance train`` and its data: the IDX loader reads exactly what was
written, bad files get clear errors, and the generated data set is learnable in
every framework."""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, files, spec
from conformance.train import data, loop, plot
from conformance.train.outputs import check_outputs
from conformance.train.settings import Epoch, Settings

from .conftest import ROOT, backend_or_skip, cli, installed


def idx_dir(tmp_path, n_train=40, n_test=12, gz=True, size=28):
    rng = np.random.default_rng(1)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (rng.integers(0, 256, (n, size, size), dtype=np.uint8), rng.integers(0, 10, n))
        suffix = ".gz" if gz else ""
        data.write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", arrays[prefix][0])
        data.write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", arrays[prefix][1])
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_exactly_what_was_written(tmp_path, gz):
    arrays = idx_dir(tmp_path, gz=gz)
    splits = data.load_idx(tmp_path)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        np.testing.assert_array_equal(splits[split].images, arrays[prefix][0])
        np.testing.assert_array_equal(splits[split].labels, arrays[prefix][1])
    assert splits["train"].images.dtype == np.uint8 and splits["train"].labels.dtype == np.int64


def test_idx_header_is_big_endian_as_lecun_specifies(tmp_path):
    path = data.write_idx(tmp_path / "x", np.zeros((3, 2, 5), np.uint8))
    assert path.read_bytes()[:16] == struct.pack(">IIII", 0x803, 3, 2, 5)


def test_missing_file_is_named(tmp_path):
    idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match=r"missing t10k-labels-idx1-ubyte \(or t10k-labels-idx1-ubyte.gz\)"):
        data.load_idx(tmp_path)


def test_wrong_magic_number_says_what_was_expected(tmp_path):
    idx_dir(tmp_path, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.replace(tmp_path / "swap")
    (tmp_path / "train-labels-idx1-ubyte").replace(images)  # labels where the images should be
    (tmp_path / "swap").replace(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(
        data.DataError,
        match=r"train-images-idx3-ubyte: magic number 0x00000801, expected "
        r"0x00000803 \(IDX uint8 images, 3 dimensions\)",
    ):
        data.load_idx(tmp_path)


def test_mismatched_counts_are_reported(tmp_path):
    idx_dir(tmp_path)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(39, np.uint8), overwrite=True)
    with pytest.raises(
        data.DataError, match=r"train-images-idx3-ubyte.gz holds 40 images but train-labels-idx1-ubyte.gz 39 labels"
    ):
        data.load_idx(tmp_path)


def test_truncated_and_corrupt_files(tmp_path):
    idx_dir(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(data.DataError, match=r"header says 12 x 28 x 28 = 9408 bytes of images, the file holds 9403"):
        data.load_idx(tmp_path)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03")[:-4])  # a gzip stream cut short
    with pytest.raises(data.DataError, match=r"not a readable gzip file"):
        data.read_idx(path, data.IMAGES_MAGIC)
    with pytest.raises(data.DataError, match=r"not a directory"):
        data.load_idx(tmp_path / "nowhere")


def test_generated_data_is_seeded_and_balanced():
    a, b = data.synthetic(seed=3), data.synthetic(seed=3)
    np.testing.assert_array_equal(a["train"].images, b["train"].images)
    assert a["train"].images.shape == (2000, 28, 28) and a["test"].images.shape == (500, 28, 28)
    assert set(np.bincount(a["train"].labels, minlength=10)) and np.bincount(a["train"].labels).min() > 150


def test_resize_is_bilinear_with_half_pixel_centres():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=96, mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()
    np.testing.assert_allclose(data.resize(x, 96), ref, atol=1e-5)  # float32 weights: 2e-6 measured
    assert data.prepare(np.zeros((1, 28, 28), np.uint8), 3, 32).shape == (1, 3, 32, 32)


@pytest.mark.e2e
def test_generated_data_is_learned_alike_in_every_framework(tmp_path):
    """inception_mnist on the generated set: clearly above chance (0.1) within three
    epochs, and, from the same canonical start, the same curve in every framework."""
    backends = installed()
    if not backends:
        pytest.skip("no framework installed")
    s = Settings("inception_mnist", epochs=3)
    splits = data.synthetic()
    histories = {}
    for fw, b in backends.items():
        histories[fw] = loop.train(b, s, splits, tmp_path, log=lambda line: None, stream=io.StringIO())
        assert histories[fw][-1].test_acc > 0.9, (fw, histories[fw])
    losses = np.array([[e.loss for e in h] for h in histories.values()])
    np.testing.assert_allclose(losses, losses[:1].repeat(len(losses), 0), rtol=1e-3)
    fw = next(iter(backends))
    p = spec.resolve("inception_mnist")
    for e in histories[fw]:  # every epoch's checkpoint is a valid canonical file
        canonical.validate(p, canonical.load(e.checkpoint))
    assert (tmp_path / f"inception_mnist-{fw}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((tmp_path / f"inception_mnist-{fw}.json").read_text())
    assert [e["test_acc"] for e in history["epochs"]] == [e.test_acc for e in histories[fw]]


class Terminal(io.StringIO):
    """A progress stream that says it is a terminal, as rich's bar asks."""

    def isatty(self) -> bool:
        return True


def _train_batches(stream: io.StringIO) -> list[str]:
    """One epoch of 8 batches in torch; returns the log (what goes to stdout)."""
    b = backend_or_skip("torch")
    s = Settings("inception_mnist", epochs=1, batch_size=4)
    splits = data.synthetic(n_train=32, n_test=4, seed=3)
    said: list[str] = []
    with tempfile.TemporaryDirectory() as out:
        loop.train(b, s, splits, Path(out), log=said.append, stream=stream)
    return [line.replace(out, "OUT") for line in said]


def test_training_progress_in_a_log_is_a_line_at_each_quarter(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    log = io.StringIO()
    said = _train_batches(log)
    lines = log.getvalue().splitlines()
    assert [line.split(", loss")[0] for line in lines] == ["train: epoch 1/1"] * 4
    assert [line.split("(")[1] for line in lines] == [f"{done}/8 batches)" for done in (2, 4, 6, 8)]
    assert all(re.fullmatch(r"train: epoch 1/1, loss \d+\.\d{4} \(\d/8 batches\)", line) for line in lines)
    # the log lines (stdout) are the same as before the bar: a header, an epoch, the outputs
    assert said[0].startswith("training inception_mnist in torch ") and len(said) == 3
    assert re.match(r"epoch 1/1: loss \d\.\d{4}, train acc \d\.\d{3}, test loss", said[1])
    assert said[2] == "plot OUT/inception_mnist-torch.png, history OUT/inception_mnist-torch.json"


def test_training_progress_on_a_terminal_is_a_bar_it_clears(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    screen = Terminal()
    said = _train_batches(screen)
    drawn = screen.getvalue()
    assert "\x1b[?25l" in drawn and "train: epoch 1/1" in drawn  # a live bar, its cursor hidden
    assert "(2/8 batches)" not in drawn  # the log's quarter lines are not written to a terminal
    assert said[0].startswith("training inception_mnist in torch ") and len(said) == 3  # stdout as in a log
    # the negative control: NO_COLOR asks a terminal for the log's plain lines
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    _train_batches(plain)
    assert "\x1b[" not in plain.getvalue() and len(plain.getvalue().splitlines()) == 4


def run_cli(*args, cwd=ROOT):
    return cli("train", *args, cwd=cwd)


def test_cli_trains_from_an_idx_directory_and_never_overwrites(tmp_path):
    backend_or_skip("torch")
    (tmp_path / "data").mkdir()
    idx_dir(tmp_path / "data", n_train=64, n_test=16)
    args = [
        "--framework",
        "torch",
        "--variant",
        "residual_mnist",
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "1",
        "--batch",
        "16",
        "--out",
        str(tmp_path),
    ]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "64 train / 16 test images at 1 x 28 x 28" in r.stdout and "epoch 1/1: loss" in r.stdout
    assert re.search(r"^train: epoch 1/1, loss \d\.\d{4} \(4/4 batches\)$", r.stderr, re.M), r.stderr
    written = tmp_path / "residual_mnist-torch-epoch1.safetensors"
    before = written.read_bytes()
    r = run_cli(*args)
    assert r.returncode == 2 and "residual_mnist-torch-epoch1.safetensors already exists; pass --force" in r.stderr
    assert written.read_bytes() == before
    assert run_cli(*args, "--force").returncode == 0


def test_cli_bad_data_and_options_are_clear(tmp_path):
    r = run_cli("--framework", "torch", "--variant", "inception_mnist", "--data", str(tmp_path), "--out", str(tmp_path))
    assert r.returncode == 2 and "error: --data" in r.stderr and "missing train-images-idx3-ubyte" in r.stderr
    (tmp_path / "a-file").write_text("")
    r = run_cli("--framework", "torch", "--variant", "inception_mnist", "--out", str(tmp_path / "a-file" / "run"))
    assert r.returncode == 2 and "--out" in r.stderr and "a-file is not a directory" in r.stderr
    r = run_cli("--framework", "torch", "--variant", "inception_mnist", "--out", str(tmp_path / "no"), "--resume")
    assert r.returncode == 2 and "no run to resume" in r.stderr and not (tmp_path / "no").exists()
    r = run_cli("--framework", "torch", "--variant", "inception_mnist", "--momentum", "1.5")
    assert r.returncode == 2 and "--momentum: expected a number from 0 to 1" in r.stderr


def test_labels_outside_the_variant_are_refused(tmp_path):
    b = backend_or_skip("torch")
    splits = data.synthetic(n_train=8, n_test=4, classes=20)
    with pytest.raises(ValueError, match=r"--data: train labels run 2..18, the classifier has 10 classes"):
        loop.train(b, Settings("residual_mnist", epochs=1), splits, tmp_path, log=lambda line: None)


def test_a_diverging_loss_stops_training_with_a_clear_error(tmp_path):
    b = backend_or_skip("torch")
    splits = data.synthetic(n_train=256, n_test=8)
    with pytest.raises(loop.TrainingError, match=r"the loss is nan; training diverged, try a smaller --lr"):
        loop.train(
            b,
            Settings("inception_mnist", epochs=2, lr=1e4),
            splits,
            tmp_path,
            log=lambda line: None,
            stream=io.StringIO(),
        )


def test_a_missing_out_directory_is_made_before_training(tmp_path):
    """As page DIR and the frameworks' own tools do; nested too. The negative control:
    the outputs are then checked in it like in any other directory."""
    out = tmp_path / "runs" / "first"
    o = check_outputs(out, Settings("inception_mnist", epochs=1), "torch", force=False)
    assert out.is_dir() and o.state.parent == out
    o.plot.write_bytes(b"")
    with pytest.raises(files.OutputError, match="already exists; pass --force"):
        check_outputs(out, Settings("inception_mnist", epochs=1), "torch", force=False)


def test_a_flat_run_is_drawn_flat_beside_chance():
    """A loss stuck at chance (2.2995 to 2.3010 for ten classes) on an axis from 0 past
    ln 10, not on one spanning its 0.0015 of noise; the plot carries the test loss and
    the learning rate."""
    flat = [Epoch(i, loss, 0.1, 0.1, 100.0, "", 2.3020) for i, loss in enumerate((2.3010, 2.2995), 1)]
    chance, top = plot.loss_axis(flat, 10)
    assert chance == pytest.approx(2.302585) and top >= chance * 1.1
    assert (2.3010 - 2.2995) / top < 0.001  # the noise is under a thousandth of the axis
    png = plot.plot(flat, "googlenet_d2l (torch)", Settings("googlenet_d2l", lr=0.05))
    assert png.startswith(b"\x89PNG")

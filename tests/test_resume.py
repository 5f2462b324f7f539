"""Training that survives an interrupt (issue 9, case 9): data that cannot be trained on
is refused up front; SIGINT keeps the complete epochs, their plot and history; and
``train --resume`` ends bit-identical to a run never interrupted, in every framework."""

from __future__ import annotations

import io
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, files, frameworks, reading
from conformance.train import checkpoints, data, loop
from conformance.train.dataset import load_data
from conformance.train.outputs import check_outputs
from conformance.train.settings import Settings
from conformance.train.state import read_state

from .conftest import backend_or_skip
from .helpers import command
from .resume_run import compare

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("framework", list(frameworks.FRAMEWORKS))
def test_an_interrupted_and_resumed_run_is_bit_identical(framework):
    """inception_mnist, interrupted at the second batch of epoch 2: every epoch's
    checkpoint and the final momentum equal the straight run's bit for bit."""
    backend_or_skip(framework)
    result = compare(framework)
    assert result["interrupted"]
    stem = f"inception_mnist-{framework}"
    assert result["kept"] == [f"{stem}-epoch1.safetensors", f"{stem}.json", f"{stem}.png", f"{stem}.state.safetensors"]
    assert result["changed"] == {1: [], 2: [], 3: []}
    assert result["momentum"] == 34 and result["momentum_changed"] == []
    straight, resumed = result["losses"]
    assert straight == resumed


def test_negative_control_a_resume_that_loses_the_momentum_differs(monkeypatch):
    """The check above can fail: a Trainer whose load_state drops the momentum gives
    the same epoch 1 (written before the interrupt) and different epochs 2 and 3."""
    t = backend_or_skip("torch")
    monkeypatch.setattr(t.Trainer, "load_state", lambda self, state: None)
    result = compare("torch")
    assert result["changed"][1] == [] and len(result["changed"][2]) == 34 and len(result["changed"][3]) == 34


def dropout_masks(framework: str, seed: int) -> np.ndarray:
    """The head dropout of googlenet_cifar (p 0.4) in training mode, after reseed(seed)."""
    b = backend_or_skip(framework)
    model = b.build("googlenet_cifar")
    trainer = b.Trainer(model, lr=0.01, momentum=0.9)
    trainer.reseed(seed)
    ones = np.ones((4, 1024), np.float32)
    if framework == "torch":
        import torch

        return model.dropout.train()(torch.from_numpy(ones)).numpy()
    if framework == "keras":
        return np.asarray(model.dropout(ones, training=True))
    import mxnet as mx

    with mx.autograd.record():
        return model.dropout(mx.nd.array(ones)).asnumpy()


@pytest.mark.parametrize("framework", list(frameworks.FRAMEWORKS))
def test_reseed_repeats_the_dropout_masks(framework):
    """What makes dropout resumable: each epoch reseeds the framework's random numbers
    from --seed and the epoch, so a resumed epoch draws the straight run's masks."""
    first, again, other = dropout_masks(framework, 5), dropout_masks(framework, 5), dropout_masks(framework, 6)
    assert 0.3 < float((first == 0).mean()) < 0.5  # p = 0.4: it dropped
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command("train", *args),
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


@pytest.mark.e2e
def test_sigint_keeps_the_complete_epochs_and_resume_finishes_the_run(tmp_path):
    """A real SIGINT in epoch 2 of 3 (MXNet: the quickest to start): exit 130 with one
    line, epoch 1's checkpoint, history, state and plot kept, no temporary file; then
    --resume finishes with the straight run's weights."""
    backend_or_skip("mxnet")
    args = [
        "--framework",
        "mxnet",
        "--variant",
        "inception_mnist",
        "--epochs",
        "3",
        "--batch",
        "8",
        "--limit",
        "480",
    ]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    straight.mkdir()
    broken.mkdir()
    assert run(*args, "--out", str(straight)).returncode == 0
    p = subprocess.Popen(
        command("train", *args, "--out", str(broken)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = broken / "inception_mnist-mxnet.state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"interrupted by SIGINT: epoch 1 of 3 is saved in {broken} (checkpoints, plot, history); continue with --resume"
    )
    assert "Traceback" not in err and "epoch 1/3" in out and "epoch 2/3" not in out
    stem = "inception_mnist-mxnet"
    assert sorted(q.name for q in broken.iterdir()) == [
        f"{stem}-epoch1.safetensors",
        f"{stem}.json",
        f"{stem}.png",
        f"{stem}.state.safetensors",
    ]
    r = run(*args, "--out", str(broken), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed after epoch 1" in r.stdout and "epoch 2/3" in r.stdout and "epoch 1/3" not in r.stdout
    for e in (1, 2, 3):
        a, b = (canonical.load(d / f"{stem}-epoch{e}.safetensors") for d in (straight, broken))
        assert all(np.array_equal(a[k], b[k]) for k in a), e


def quiet() -> dict:
    return {"log": lambda line: None, "stream": io.StringIO()}


def test_resume_checks_the_run_it_continues(tmp_path):
    b = backend_or_skip("torch")
    s = Settings("inception_mnist", epochs=1, batch_size=16, limit=32)
    splits = load_data(None, s)
    with pytest.raises(files.OutputError, match=r"--resume: no run of inception_mnist-torch to continue"):
        check_outputs(tmp_path, s, "torch", False, resume=True)
    loop.train(b, s, splits, tmp_path, **quiet())
    with pytest.raises(files.OutputError, match=r"has done 1 epochs; pass --epochs above 1"):
        check_outputs(tmp_path, s, "torch", False, resume=True)
    longer = Settings("inception_mnist", epochs=2, batch_size=16, limit=32)
    other = Settings("inception_mnist", epochs=2, batch_size=16, limit=32, lr=0.1)
    with pytest.raises(files.OutputError, match=r"was started with --lr 0.01, not 0.1; pass the same options"):
        check_outputs(tmp_path, other, "torch", False, resume=True)
    shifted = {k: data.Split(v.images[::-1].copy(), v.labels[::-1].copy()) for k, v in splits.items()}
    with pytest.raises(files.OutputError, match=r"the data differs from the run's"):
        loop.train(b, longer, shifted, tmp_path, resume=True, **quiet())
    history = loop.train(b, longer, splits, tmp_path, resume=True, **quiet())
    assert [e.epoch for e in history] == [1, 2]
    with pytest.raises(files.OutputError, match=r"already exists; pass --force to overwrite .*; or --resume"):
        check_outputs(tmp_path, longer, "torch", False)


def idx(directory: Path, n_train: int, n_test: int, size: tuple[int, int] = (28, 28)) -> Path:
    directory.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, *size), dtype=np.uint8))
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return directory


@pytest.mark.parametrize(
    "n_train,n_test,size,message",
    [
        (0, 8, (28, 28), r"the train set holds no images; nothing to train on"),
        (8, 0, (28, 28), r"the test set holds no images; the test accuracy needs at least one image"),
        (8, 8, (0, 0), r"train images are 0 x 0 pixels"),
    ],
)
def test_data_that_cannot_be_trained_on_is_refused_before_any_framework(tmp_path, n_train, n_test, size, message):
    """Issue 9, case 9: an empty training set raised ZeroDivisionError (and left an
    untrained checkpoint), 0 x 0 images an IndexError, an empty test set printed
    "test acc 0.000"."""
    directory = idx(tmp_path / "data", n_train, n_test, size)
    (tmp_path / "out").mkdir()
    r = run(
        "--framework", "torch", "--variant", "inception_mnist", "--data", str(directory), "--out", str(tmp_path / "out")
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"error: --data {directory}: " in r.stderr and __import__("re").search(message, r.stderr), r.stderr
    assert not list((tmp_path / "out").iterdir())


# -- issue 24: the state's metadata, a full disk, a state never written ------------------


def _rewrite_metadata(path: Path, key: str, value: str) -> None:
    """Change one metadata field of a safetensors file, keeping its tensors (and so the
    SHA-256 recorded over them) as they are."""
    import json
    import struct

    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"][key] = value
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A torch run of inception_mnist that completed epoch 1 of 2: (settings, splits, its --out)."""
    b = backend_or_skip("torch")
    s = Settings("inception_mnist", epochs=1, batch_size=16, limit=32)
    splits = load_data(None, s)
    out = tmp_path_factory.mktemp("one-epoch")
    loop.train(b, s, splits, out, **quiet())
    return Settings("inception_mnist", epochs=2, batch_size=16, limit=32), splits, out


def _copy(out: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(out, to)
    return to


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("history", '[{"bogus": 1}]', r"'history' entry 1 is not an epoch"),
        ("history", "[]", r"'history' holds 0 epochs, the state says 1"),
        ("history", "{", r"'history' is not JSON"),
        ("rng", "[1, 2]", r"'rng' is an array in JSON, expected an object"),
        ("rng", '{"bit_generator": "MT19937", "state": {}}', r"'rng' is not a PCG64 generator state"),
        ("settings", "[]", r"'settings' is an array in JSON, expected an object"),
        ("settings", '{"variant": "inception_mnist"}', r"'settings' holds \['variant'\], expected"),
        ("epoch", "one", r"'epoch' is 'one', expected a number"),
        ("epoch", "0", r"'epoch' is 0, expected 1 to"),
        ("run", "../x", r"'run' is '../x', expected hex digits"),
        ("format", "other", r"'format' is 'other', expected 'googlenet-train-state'"),
    ],
)
def test_edited_state_metadata_is_refused_in_one_line(one_epoch, tmp_path, key, value, message):
    """Issue 24 row 10: the SHA-256 covers the tensors only; an edited field gave a
    TypeError or AttributeError traceback. Now each is refused, naming the field."""
    s, _, out = one_epoch
    out = _copy(out, tmp_path / "out")
    _rewrite_metadata(out / "inception_mnist-torch.state.safetensors", key, value)
    with pytest.raises(
        files.OutputError, match=r"--resume: .*state.safetensors is not a training state of this suite: "
    ):
        check_outputs(out, s, "torch", False, resume=True)
    with pytest.raises(files.OutputError, match=message):
        read_state(out / "inception_mnist-torch.state.safetensors")


def test_negative_control_the_unedited_state_and_a_rewritten_equal_one_resume(one_epoch, tmp_path):
    """The checks are not vacuous: the same file, its metadata rewritten to the same
    values, is accepted and resumes after epoch 1."""
    s, _, out = one_epoch
    out = _copy(out, tmp_path / "out")
    state = out / "inception_mnist-torch.state.safetensors"
    _rewrite_metadata(state, "epoch", reading.safetensors(state).metadata["epoch"])
    assert check_outputs(out, s, "torch", False, resume=True).start == 1
    read = read_state(state)
    assert read.epoch == 1 and [e.epoch for e in read.history] == [1]


def test_a_full_disk_says_which_epochs_are_kept_and_writes_their_plot(one_epoch, tmp_path, monkeypatch):
    """Issue 24 row 14: a write of epoch 2 that fails (ENOSPC) ends in one line that
    says epoch 1 is kept and to --resume, and the plot of epoch 1 is written; the
    resumed run then finishes."""
    b = backend_or_skip("torch")
    s, splits, out = one_epoch
    out = _copy(out, tmp_path / "out")
    (out / "inception_mnist-torch.png").unlink()
    real_save = canonical.save

    def full(params, path, *args, **kwargs):
        if Path(path).name.endswith("epoch2.safetensors"):
            raise files.OutputError(
                f"--out {path}: writing 0.4 MB failed: No space left on device; nothing was written"
            )
        return real_save(params, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save", full)
    with pytest.raises(files.OutputError) as e:
        loop.train(b, s, splits, out, resume=True, **quiet())
    assert str(e.value).endswith(
        f"No space left on device; nothing was written; epoch 1 of 2 is saved in {out} "
        f"(checkpoints, plot, history); continue with --resume"
    )
    assert (out / "inception_mnist-torch.png").exists()
    monkeypatch.setattr(checkpoints, "save", real_save)
    assert [h.epoch for h in loop.train(b, s, splits, out, resume=True, **quiet())] == [1, 2]


def test_a_full_disk_that_refuses_the_plot_too_says_so(one_epoch, tmp_path, monkeypatch):
    b = backend_or_skip("torch")
    s, splits, out = one_epoch
    out = _copy(out, tmp_path / "out")

    def full(path, data, overwrite=False, option=""):
        raise files.OutputError(f"--out {path}: writing failed: No space left on device; nothing was written")

    monkeypatch.setattr(checkpoints, "atomic_write", full)  # the history and the plot
    with pytest.raises(files.OutputError, match=r"epoch 1 of 2 is saved in .* \(checkpoints, history; no plot, it"):
        loop.train(b, s, splits, out, resume=True, **quiet())


def test_a_state_never_written_does_not_block_resume_or_restart(one_epoch, tmp_path, capsys):
    """Issue 24 row 15: killed while epoch 1's state was written (its temporary left,
    no state). --resume starts again from epoch 1 over that run's files and ends with
    the same checkpoint; every run names the temporary."""
    b = backend_or_skip("torch")
    s, splits, out = one_epoch
    out = _copy(out, tmp_path / "out")
    stem = "inception_mnist-torch"
    first = canonical.load(out / f"{stem}-epoch1.safetensors")
    state = out / f"{stem}.state.safetensors"
    leftover = out / f".{stem}.state.safetensors.999999-abcdef.conformance-tmp"
    leftover.write_bytes(state.read_bytes()[:1000])
    state.unlink()
    (out / f"{stem}.png").unlink()
    capsys.readouterr()
    with pytest.raises(files.OutputError, match=r"epoch1.safetensors already exists; .*; or --resume to continue"):
        check_outputs(out, s, "torch", False)
    assert str(leftover) in capsys.readouterr().err
    loop.train(b, s, splits, out, resume=True, **quiet())
    err = capsys.readouterr().err
    assert (
        "starting again from epoch 1 over inception_mnist-torch-epoch1.safetensors, inception_mnist-torch.json" in err
    )
    again = canonical.load(out / f"{stem}-epoch1.safetensors")
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert read_state(state).epoch == 2


def test_negative_control_a_restart_needs_the_same_options_and_some_leftover(one_epoch, tmp_path):
    s, _, out = one_epoch
    out = _copy(out, tmp_path / "out")
    (out / "inception_mnist-torch.state.safetensors").unlink()
    other = Settings("inception_mnist", epochs=2, batch_size=16, limit=32, lr=0.1)
    with pytest.raises(files.OutputError, match=r"inception_mnist-torch.json in .* is of a run with other options"):
        check_outputs(out, other, "torch", False, resume=True)
    for leftover in out.iterdir():
        leftover.unlink()
    with pytest.raises(files.OutputError, match=r"no run of inception_mnist-torch to continue"):
        check_outputs(out, s, "torch", False, resume=True)

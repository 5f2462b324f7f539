"""Issue 24: every size and count a user or a data file declares is bounded in one place
(``conformance.limits``), from the spec's stage shapes and the machine, and refused in
one line before any framework is imported; float options are finite; JSON inputs are
regular files read bounded; ``init`` has no source a DST could be."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance import limits, reading, spec
from conformance.__main__ import _parse
from conformance.check import inputs
from conformance.train import data, dataset
from conformance.train.command import MAX_LR
from conformance.train.dataset import load_data, max_images
from conformance.train.settings import Settings, check_work, plan_of

from .conftest import cli

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORK_MODULES = ("torch", "keras", "tensorflow", "mxnet", "onnxruntime")


def refused(*argv: str) -> tuple[int, str, list[str]]:
    """(exit code, stderr, frameworks imported) of ``main(argv)`` in a fresh interpreter."""
    code = (
        "import sys\nfrom conformance.__main__ import main\nrc = main(sys.argv[1:])\n"
        f"print(rc, [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    rc, imported = r.stdout.strip().splitlines()[-1].split(" ", 1)
    return int(rc), r.stderr, json.loads(imported.replace("'", '"'))


# -- row 8: input sizes and batches, in every command ---------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["check", "--variant", "googlenet_bn", "--frameworks", "torch", "--input-size", "100000"],
            r"--input-size 100,000 with --batch 2: googlenet_bn's inference on 2 images of 100,000 x 100,000 needs "
            r"about [\d.]+ GB .*; one image alone needs [\d.]+ GB; pass a smaller --input-size",
        ),
        (
            ["pitfalls", "--pitfall", "floor-pooling", "--input-size", "100000"],
            r"--input-size 100,000 with --batch 64: googlenet_bn's inference .* pass a smaller --input-size",
        ),
        (
            ["check", "--variant", "inception_mnist", "--frameworks", "torch", "--batch", "1000000"],
            r"--batch 1,000,000: inception_mnist's inference on 1,000,000 images of 28 x 28 .* pass --batch [\d,]+ or",
        ),
        (["check", "--variant", "googlenet", "--train", "--batch", "100000"], r"--batch 100,000: googlenet's"),
        (["bench", "--batch", "1000000"], r"--input-size 224 with --batch 1,000,000: googlenet_bn's inference"),
        (["bench", "--input-size", "100000", "--batch", "1"], r"--input-size 100,000 with --batch 1: "),
        (["diff", "a.pth", "--variant", "googlenet", "--batch", "1000000"], r"--batch 1,000,000: googlenet's"),
        (["page", "site", "--batch", "1000000"], r"--batch 1,000,000: .* pass --batch [\d,]+ or fewer"),
        (["page", "site", "--input-size", "100000"], r"--input-size 100,000: googlenet_bn's inference on 1 image"),
        (["spec", "--input-size", "100000"], r"--input-size 100,000: googlenet_bn's inference on 1 image of 100,000"),
        (
            ["train", "--framework", "torch", "--variant", "googlenet", "--batch", "1000000"],
            r"--batch 1,000,000: googlenet's training on 1,000,000 images of 224 x 224 .* pass --batch",
        ),
    ],
)
def test_sizes_and_batches_are_refused_in_one_line_before_any_framework(argv, message):
    rc, err, imported = refused(*argv)
    assert rc == 2 and imported == [], (rc, imported, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert __import__("re").search(message, err), err


def test_the_largest_batch_the_message_names_is_admitted_and_one_more_is_not():
    """Negative control of the bound: it is not vacuous (a batch one above the named
    largest is refused, the named one admitted) and follows the memory given."""
    p = spec.resolve("inception_mnist")
    memory = 1 << 30
    with pytest.raises(limits.LimitError, match=r"pass --batch ([\d,]+) or fewer") as refusal:
        limits.check_work(limits.Work(p, 28, 10**6), memory)
    most = int(refusal.value.args[0].rsplit("pass --batch ", 1)[1].split(" ")[0].replace(",", ""))
    limits.check_work(limits.Work(p, 28, most), memory)
    with pytest.raises(limits.LimitError):
        limits.check_work(limits.Work(p, 28, most + 1), memory)
    limits.check_work(limits.Work(p, 28, most + 1), 2 * memory)  # more memory admits more


def test_the_estimate_comes_from_the_spec_stage_shapes():
    """Bytes per image: the input and every stage output, float32, times the copies a
    run holds; training holds more than inference; a larger input costs more."""
    p = spec.resolve("googlenet")
    stages = sum(int(np.prod(chw)) for chw in spec.stage_shapes(p, 224).values())
    assert limits.image_elements(p, 224) == 3 * 224 * 224 + stages
    inference, training_work = limits.Work(p, 224, 1), limits.Work(p, 224, 1, training=True)
    assert inference.per_image == limits.INFERENCE_COPIES * 4 * (3 * 224 * 224 + stages)
    assert training_work.per_image > inference.per_image
    assert limits.Work(p, 448, 1).per_image > 3 * inference.per_image


def test_check_bounds_every_size_it_runs_by_default(monkeypatch):
    """Without --input-size, check runs the variant's own size and the odd ones (239 is
    larger than googlenet's 224): the bound takes the largest, not only the own."""
    p = spec.resolve("googlenet")
    own, odd = limits.Work(p, 224, 4).bytes, limits.Work(p, 239, 4).bytes
    assert odd > own
    monkeypatch.setattr(limits, "machine_memory", lambda: (own + odd) // 2)
    with pytest.raises(limits.LimitError, match=r"--batch 4: googlenet's inference on 4 images of 239 x 239"):
        inputs.check_work(["googlenet"], None, 4)
    inputs.check_work(["googlenet"], [224], 4)  # negative control: the own size alone fits


# -- row 16: workers ------------------------------------------------------------------


def test_workers_beyond_the_cores_are_refused_before_any_framework():
    many = str(limits.usable_cores() + 1)
    rc, err, imported = refused("train", "--framework", "torch", "--variant", "inception_mnist", "--workers", many)
    assert rc == 2 and imported == [], err
    assert f"--workers {many}: this machine runs {limits.usable_cores()} at once (its cores)" in err


def test_workers_are_bounded_by_cores_and_memory(monkeypatch):
    monkeypatch.setattr(limits, "usable_cores", lambda: 4)
    limits.check_workers(4, memory=8 << 30)  # negative control: as many as the cores, in memory
    with pytest.raises(limits.LimitError, match=r"--workers 5: this machine runs 4 at once"):
        limits.check_workers(5, memory=8 << 30)
    with pytest.raises(limits.LimitError, match=r"--workers 4: each worker holds at least 1.0 GB .* at most 2"):
        limits.check_workers(4, per_worker=512 << 20, memory=2 << 30)


def test_train_workers_count_each_workers_data(monkeypatch):
    """Each worker prepares every image: a data set that fits one worker is refused for
    two when the memory holds only one copy."""
    s = Settings("inception_mnist", batch_size=16)
    splits = load_data(None, s)
    monkeypatch.setattr(limits, "usable_cores", lambda: 2)
    prepared = sum(len(x.images) for x in splits.values()) * 28 * 28 * 4
    monkeypatch.setattr(limits, "machine_memory", lambda: limits.WORKER_BASE + prepared + (64 << 20))
    check_work(s, splits, 1)
    with pytest.raises(limits.LimitError, match=r"--workers 2: each worker holds"):
        check_work(s, splits, 2)


# -- row 18: float options ------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400", "0", "-0.1", str(MAX_LR * 2)])
def test_a_learning_rate_that_is_no_step_is_refused_at_parse_time(value, capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["train", "--framework", "torch", "--variant", "inception_mnist", f"--lr={value}"])
    assert e.value.code == 2
    assert "argument --lr: expected a finite number above 0, at most 100" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "1", "-0.5"])
def test_a_momentum_outside_0_to_1_is_refused(value, capsys):
    with pytest.raises(SystemExit):
        _parse(["train", "--framework", "torch", "--variant", "inception_mnist", f"--momentum={value}"])
    assert "argument --momentum: expected a number from 0 to 1" in capsys.readouterr().err


def test_finite_float_options_in_range_are_accepted():
    args = _parse(["train", "--framework", "torch", "--variant", "inception_mnist", "--lr", "100", "--momentum", "0"])
    assert args.lr == 100.0 and args.momentum == 0.0


# -- row 6: a data file's image size --------------------------------------------------


def idx(directory: Path, side: int, gz: bool = True) -> Path:
    directory.mkdir()
    ext = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", np.zeros((1, side, side), np.uint8))
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", np.zeros(1, np.uint8))
    return directory


def test_images_larger_than_the_variant_resizes_from_are_refused_before_reading(tmp_path):
    """inception_mnist trains at 28 x 28: a 113 x 113 image (a gzip of a few hundred
    bytes) is refused from its header; 112 x 112 (4 x) is read (negative control)."""
    s = Settings("inception_mnist")
    big = idx(tmp_path / "big", limits.MAX_SCALE * 28 + 1)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz: images of 113 x 113 pixels; .* 28 x 28"):
        load_data(big, s)
    splits = load_data(idx(tmp_path / "fits", limits.MAX_SCALE * 28), s)
    assert splits["train"].images.shape == (1, 112, 112)


def test_the_image_count_bound_counts_the_pixels_of_the_files_images(tmp_path, monkeypatch):
    """Larger images in the file (before their resize) leave room for fewer of them."""
    s = Settings("googlenet_d2l")
    most = max_images(plan_of(s))
    assert most((28, 28)) > most((384, 384)) > 0
    with pytest.raises(limits.LimitError):
        most((385, 385))
    directory = idx(tmp_path / "d", 300, gz=False)
    monkeypatch.setattr(dataset, "MAX_PREPARED", 1 * 96 * 96 * 4 + 2 * 4 * 300 * 300 - 1)
    with pytest.raises(data.DataError, match=r"1 images; training holds at most 0 of them"):
        load_data(directory, s)


def test_the_row_as_written_a_gzip_declaring_one_30000_pixel_image(tmp_path):
    """The repro: an 875 KB gzip declaring one 30000 x 30000 image (deflate's ratio
    admits it) is refused in one line, before it is decompressed."""
    import gzip
    import struct
    import zlib

    directory = tmp_path / "data"
    directory.mkdir()
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(directory / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(squeeze.compress(struct.pack(">4I", data.IMAGES_MAGIC, 1, 30000, 30000)))
        zeros = bytes(30000 * 1000)
        for _ in range(30):
            f.write(squeeze.compress(zeros))
        f.write(squeeze.flush())
    size = (directory / "train-images-idx3-ubyte.gz").stat().st_size
    assert data.DEFLATE_RATIO * size > 30000 * 30000  # the ratio alone admits it
    (directory / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">2IB", data.LABELS_MAGIC, 1, 0)))
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (directory / name).write_bytes((directory / f"{name.replace('t10k', 'train')}.gz").read_bytes())
    (tmp_path / "out").mkdir()
    r = cli(
        "train", "--framework", "torch", "--variant", "inception_mnist", "--data", str(directory),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "images of 30,000 x 30,000 pixels" in r.stderr and "at most 112 pixels a side" in r.stderr


# -- row 7: JSON inputs ---------------------------------------------------------------


@pytest.mark.parametrize("option", ["--check-json", "--bench-json", "--pitfalls-json"])
@pytest.mark.parametrize("special", ["/dev/zero", "/dev/urandom", "fifo"])
def test_a_json_input_must_be_a_regular_file(tmp_path, option, special):
    path = special
    if special == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    rc, err, imported = refused("page", str(tmp_path / "site"), option, path)
    kind = "a FIFO (named pipe)" if special == "fifo" else "a character device"
    assert rc == 2 and imported == [] and err.strip() == f"error: {option} {path}: {kind}, not a regular file", err


def test_a_json_input_is_read_bounded(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"a": 1}')
    assert reading.json_document(path, max_bytes=8) == {"a": 1}  # negative control: at the bound
    with pytest.raises(reading.Damaged, match=r"8 bytes; a report is at most 7"):
        reading.json_document(path, max_bytes=7)
    path.write_text("[" * 100_000)
    with pytest.raises(reading.Damaged, match=r"not JSON \(nested too deeply\)"):
        reading.json_document(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(reading.Damaged, match=r"not JSON"):
        reading.json_document(path)


# -- row 17: init has no source ---------------------------------------------------------


def test_init_writes_over_a_file_named_like_its_seeded_source(tmp_path):
    name = "seeded-inception_mnist-seed0"
    (tmp_path / name).write_bytes(b"old")
    r = cli("init", name, "--to", "npz", "--variant", "inception_mnist", "--force", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "is SRC" not in r.stderr and (tmp_path / name).read_bytes()[:2] == b"PK"
    # negative control: port still refuses a DST that is its SRC
    r = cli("port", name, name, "--from", "npz", "--to", "npz", "--variant", "inception_mnist", "--force", cwd=tmp_path)
    assert r.returncode == 2 and f"DST {name} is SRC" in r.stderr, r.stderr

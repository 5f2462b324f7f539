"""The formats JAX users keep, in ``port`` both ways: Flax's msgpack state and Orbax
checkpoint directories. Round trips bit-identical; files written by Flax and Orbax
themselves from an ``impl_jax`` model read back as its canonical weights; ``port --to``
each proven against the reference; hostile files refused in one line (exit 2) before
anything is allocated; a kernel left in PyTorch's layout caught.

The msgpack tests need neither jax nor Flax (the format is read and written without
them); the ones that write Orbax or load with Flax are skipped where jax is not
installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest

from conformance import canonical
from conformance.formats import flax_files, orbax_files
from conformance.formats.port import PortError, port, read_checkpoint
from conformance.reading import Damaged

from . import hostile
from .conftest import ROOT, cli
from .helpers import assert_refused, command, seeded

HAS_JAX = all(importlib.util.find_spec(name) is not None for name in ("jax", "flax", "orbax.checkpoint"))
needs_jax = pytest.mark.skipif(not HAS_JAX, reason="jax, flax and orbax-checkpoint are not installed (.[jax])")
MSGPACK = flax_files.ENTRIES[0]
ORBAX = orbax_files.ENTRIES[0]
PEAK_MB = 1000  # tests/test_hostile.py's bound: the imports take most of it


def msgpack_file(path: Path, params: canonical.Params, plan) -> Path:
    data, _ = MSGPACK.write(params, plan)
    assert isinstance(data, bytes)
    path.write_bytes(data)
    return path


def orbax_dir(path: Path, params: canonical.Params, plan) -> Path:
    """What ``--to orbax`` writes, put at ``path`` as staging puts it."""
    data, _ = ORBAX.write(params, plan)
    assert isinstance(data, dict)
    for rel, content in data.items():
        target = path / rel
        if rel.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    return path


def assert_identical(read: canonical.Params, params: canonical.Params) -> None:
    assert list(read) == list(params)
    for key, value in params.items():
        assert read[key].dtype == np.float32 and np.array_equal(read[key], value), key


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["googlenet_bn", "googlenet"])
def test_msgpack_round_trip_is_bit_identical(tmp_path, variant):
    plan, params = seeded(variant, aux=True)
    src = msgpack_file(tmp_path / "m.msgpack", params, plan)
    checkpoint = read_checkpoint(src, variant)
    assert checkpoint.plan.aux and checkpoint.contents.scheme == "canonical"
    assert_identical(checkpoint.params, params)


@needs_jax
@pytest.mark.parametrize("variant", ["googlenet_bn", "googlenet"])
def test_orbax_round_trip_is_bit_identical_and_records_the_plan(tmp_path, variant):
    plan, params = seeded(variant, aux=True)
    src = orbax_dir(tmp_path / "ckpt", params, plan)
    checkpoint = read_checkpoint(src, None)  # the variant it records: no --variant needed
    assert checkpoint.plan == plan and checkpoint.contents.digest == canonical.tensor_digest(params)
    assert_identical(checkpoint.params, params)


def test_the_msgpack_writer_needs_no_jax_and_keeps_flax_layouts():
    """Conv kernels HWIO, dense (in, out), BatchNorm's scale and statistics under Flax's names."""
    plan, params = seeded("googlenet_bn")
    state = msgpack.unpackb(MSGPACK.write(params, plan)[0], raw=False, ext_hook=lambda code, data: (code, data))
    code, packed = state["conv1"]["conv"]["kernel"]
    shape, dtype, data = msgpack.unpackb(packed, raw=False)
    assert (code, shape, dtype) == (1, [7, 7, 3, 64], "float32")
    expected = params["conv1.conv.weight"].transpose(2, 3, 1, 0)
    assert np.frombuffer(data, np.float32).reshape(shape).tobytes() == np.ascontiguousarray(expected).tobytes()
    assert msgpack.unpackb(state["fc"]["kernel"][1], raw=False)[0] == [1024, 1000]
    assert sorted(state["conv1"]["bn"]) == ["bias", "mean", "scale", "var"]


# --------------------------------------------------------------------------------------
# Files Flax and Orbax write themselves
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jax_model():
    """An impl_jax googlenet_bn (aux heads) holding the suite's seeded weights."""
    if not HAS_JAX:
        pytest.skip("jax, flax and orbax-checkpoint are not installed (.[jax])")
    import impl_jax

    plan, params = seeded("googlenet_bn", aux=True)
    model = impl_jax.build("googlenet_bn", aux_logits=True)
    impl_jax.from_canonical(model, params)
    return impl_jax, model, plan, params


@needs_jax
def test_flax_names_are_the_paths_of_impl_jax_variables(jax_model):
    """The jax-free table (``canonical.flax_path``) names every variable impl_jax has,
    with its shape in Flax's layout."""
    from flax import nnx

    _, model, _, params = jax_model
    state = nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    found = {}
    for key, value in params.items():
        node = state
        for part in canonical.flax_path(key, value.ndim):
            node = node[part]
        found[key] = tuple(node.shape)
    assert found == {k: canonical.to_flax(v).shape for k, v in params.items()}


@needs_jax
def test_a_msgpack_file_flax_wrote_reads_as_the_models_weights(tmp_path, jax_model):
    from flax import nnx, serialization

    package, model, plan, params = jax_model
    state = nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    theirs = serialization.to_bytes(state)
    src = tmp_path / "flax.msgpack"
    src.write_bytes(theirs)
    checkpoint = read_checkpoint(src, "googlenet_bn")
    assert_identical(checkpoint.params, package.to_canonical(model))
    assert MSGPACK.write(params, plan)[0] == theirs  # port writes Flax's bytes, byte for byte


@needs_jax
def test_an_orbax_checkpoint_of_the_nnx_state_reads_as_the_models_weights(tmp_path, jax_model):
    """Orbax's own save of ``nnx.state(model)``: leaves ending in ``value``, the dropout's
    random state beside the weights (left out, and said)."""
    import orbax.checkpoint as ocp
    from flax import nnx

    package, model, _, _ = jax_model
    with ocp.StandardCheckpointer() as saver:
        saver.save(tmp_path / "state", nnx.state(model))
        saver.wait_until_finished()
    checkpoint = read_checkpoint(tmp_path / "state", "googlenet_bn")
    assert_identical(checkpoint.params, package.to_canonical(model))
    assert any("random state" in note for note in checkpoint.notes), checkpoint.notes


# --------------------------------------------------------------------------------------
# port --to each format, proven
# --------------------------------------------------------------------------------------


@needs_jax
@pytest.mark.parametrize("fmt", ["flax-msgpack", "orbax"])
def test_port_to_and_from_each_format_is_proven(tmp_path, fmt):
    plan, params = seeded("inception_mnist")
    src = tmp_path / "m.safetensors"
    canonical.save(params, src, plan)
    written = tmp_path / ("m.msgpack" if fmt == "flax-msgpack" else "m-orbax")
    lines: list[str] = []
    result = port(src, written, "inception_mnist", dst_format=fmt, log=lines.append)
    assert result.passed and result.target_framework == "jax" and not result.changed, lines
    assert any(line.startswith("load   ") and "nnx.update(model, state)" in line for line in lines), lines
    back = port(written, tmp_path / "back.npz", "inception_mnist")
    assert back.passed and back.source_framework == "jax"
    assert_identical(dict(np.load(tmp_path / "back.npz")), params)


@needs_jax
def test_an_orbax_output_is_a_new_directory_even_with_force(tmp_path):
    plan, params = seeded("inception_mnist")
    src = tmp_path / "m.safetensors"
    canonical.save(params, src, plan)
    (tmp_path / "out").mkdir()
    with pytest.raises(PortError, match=r"DST .*out: already exists \(a directory\).*even with force=True"):
        port(src, tmp_path / "out", "inception_mnist", dst_format="orbax", force=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_directory_that_is_no_orbax_checkpoint_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(PortError, match=r"SRC .*d: a directory; give a checkpoint file \(or an Orbax"):
        read_checkpoint(tmp_path / "d", "googlenet")


def test_msgpack_bytes_under_another_name_are_named(tmp_path):
    plan, params = seeded("inception_mnist")
    src = msgpack_file(tmp_path / "m.npz", params, plan)
    with pytest.raises(PortError, match=r"a msgpack map \(Flax's serialization\) \(pass src_format='flax-msgpack'"):
        read_checkpoint(src, "inception_mnist")
    assert read_checkpoint(src, "inception_mnist", "flax-msgpack").params.keys() == params.keys()


# --------------------------------------------------------------------------------------
# Negative control: a kernel left in PyTorch's layout
# --------------------------------------------------------------------------------------


def test_a_kernel_not_transposed_to_hwio_is_caught(tmp_path):
    """The mistake a hand-written converter makes: a conv kernel stored OIHW, or the dense
    kernel (out, in), in an otherwise right file. The same file with the kernels
    permuted reads (the round trip above), so the check is what catches it. (A kernel
    whose in and out channels are equal and only those two swapped keeps its shape:
    no reader can see that, and port's log says it verifies what it read.)"""
    plan, params = seeded("googlenet_bn")
    good = MSGPACK.write(params, plan)[0]
    state = msgpack.unpackb(good, raw=False, ext_hook=msgpack.ExtType)
    for where, key in ((("conv3", "conv", "kernel"), "conv3.conv.weight"), (("fc", "kernel"), "fc.weight")):
        wrong = dict(state)
        node = wrong
        for part in where[:-1]:
            node[part] = dict(node[part])
            node = node[part]
        value = params[key]  # canonical layout, as PyTorch keeps it
        node[where[-1]] = msgpack.ExtType(
            1, msgpack.packb((value.shape, "float32", value.tobytes()), use_bin_type=True)
        )
        src = tmp_path / "wrong.msgpack"
        src.write_bytes(msgpack.packb(wrong, use_bin_type=True))
        with pytest.raises(PortError, match=rf"shape mismatch at {key!r}: expected .*msgpack {'/'.join(where)}"):
            read_checkpoint(src, "googlenet_bn")


# --------------------------------------------------------------------------------------
# Hostile files: one line, exit 2, before anything is allocated
# --------------------------------------------------------------------------------------


def refused(src: Path, *needles: str, variant: str = "googlenet_bn", measured: bool = False) -> None:
    args = ["port", str(src), str(src.parent / "out.safetensors"), "--variant", variant]
    if measured:
        m = hostile.run_measured(command(*args), timeout=300)
        print(f"peak {m.peak_mb:.0f} MB, {m.seconds:.1f} s: {m.stderr.strip()[:200]}")
        assert m.peak_mb < PEAK_MB, f"peak {m.peak_mb:.0f} MB"
        assert_refused(m, *needles, alone=False)
    else:
        assert_refused(cli(*args), *needles, alone=False)
    assert not (src.parent / "out.safetensors").exists()


@pytest.fixture(scope="module")
def valid_msgpack(tmp_path_factory) -> bytes:
    plan, params = seeded("googlenet_bn")
    return MSGPACK.write(params, plan)[0]  # type: ignore[return-value]


def test_a_truncated_msgpack_file(tmp_path, valid_msgpack):
    src = tmp_path / "cut.msgpack"
    src.write_bytes(valid_msgpack[: len(valid_msgpack) // 2])
    refused(src, f"cut.msgpack: {flax_files.TRUNCATED}")


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("ext", b"\x81\xa5conv1\xc9\xff\xff\xff\xf0\x01", "or a value declares more bytes than the file holds"),
        ("map", b"\x81\xa5conv1\xdf\xff\xff\xff\xff", "not a bounded Flax msgpack state"),
        ("key", b"\x81\xdb\xff\xff\xff\xff", "or a value declares more bytes than the file holds"),
    ],
    ids=["an array of 4 GB", "a map of 4 billion entries", "a 4 GB key"],
)
def test_a_huge_declared_length(tmp_path, name, data, said):
    src = tmp_path / f"{name}.msgpack"
    src.write_bytes(data + b"\0" * 64)
    refused(src, f"{name}.msgpack: ", said, measured=name == "ext")


def test_an_array_declaring_more_than_it_holds(tmp_path):
    header = msgpack.packb(([100_000, 100_000], "float64", b"\0" * 8), use_bin_type=True)
    src = tmp_path / "big.msgpack"
    src.write_bytes(msgpack.packb({"fc": {"kernel": msgpack.ExtType(1, header)}}, use_bin_type=True))
    refused(src, "big.msgpack: an array declares float64 [100000, 100000] (80,000,000,000 bytes) but holds 8")


@pytest.mark.parametrize("depth", [20, 100_000], ids=["deeper than a state", "deeper than msgpack's stack"])
def test_deep_nesting(tmp_path, depth):
    src = tmp_path / "deep.msgpack"
    src.write_bytes(b"\x81\xa1a" * depth + b"\xc0")
    refused(src, "deep.msgpack: maps nest deeper than 12")


def test_a_wrong_shape(tmp_path, valid_msgpack):
    state = msgpack.unpackb(valid_msgpack, raw=False, ext_hook=msgpack.ExtType)
    state["conv2"] = {**state["conv2"], "conv": {"kernel": msgpack.ExtType(1, msgpack.packb(
        ((1, 1, 64, 65), "float32", b"\0" * 4 * 64 * 65), use_bin_type=True))}}  # fmt: skip
    src = tmp_path / "shape.msgpack"
    src.write_bytes(msgpack.packb(state, use_bin_type=True))
    refused(src, "shape mismatch at 'conv2.conv.weight': expected (64, 64, 1, 1), got (65, 64, 1, 1)")


def test_what_is_not_an_array(tmp_path):
    src = tmp_path / "leaf.msgpack"
    src.write_bytes(msgpack.packb({"conv1": {"conv": {"kernel": "weights"}}}))
    with pytest.raises(Damaged, match="'conv1/conv/kernel' holds weights, where a Flax state holds arrays"):
        flax_files.parse(src.read_bytes(), orbax_files.bounds.ceiling(seeded("googlenet")[0]))


def orbax_like(path: Path) -> Path:
    """A directory Orbax's reader would take up (it holds a _METADATA): the hostile
    rows below need nothing more, being refused before it is read."""
    path.mkdir()
    (path / "_METADATA").write_text(json.dumps({"tree_metadata": {}}))
    return path


def test_a_symlink_inside_an_orbax_directory(tmp_path):
    src = orbax_like(tmp_path / "ckpt")
    (src / "d").mkdir()
    os.symlink("/etc/passwd", src / "d" / "leak")
    refused(src, "ckpt: d/leak is a symlink; an Orbax checkpoint holds none")


def test_too_many_entries_in_an_orbax_directory(tmp_path):
    src = orbax_like(tmp_path / "ckpt")
    for i in range(orbax_files.MAX_ENTRIES):
        (src / f"f{i}").touch()
    refused(src, "ckpt: holds more than 4,096 files and directories")


def test_too_deep_an_orbax_directory(tmp_path):
    src = orbax_like(tmp_path / "ckpt")
    (src / "/".join("d" * 10)).mkdir(parents=True)
    refused(src, "nests deeper than an Orbax checkpoint does")


def test_orbax_metadata_declaring_a_huge_array_is_refused_before_tensorstore(tmp_path):
    src = orbax_like(tmp_path / "ckpt")
    key = [{"key": "fc", "key_type": 2}, {"key": "kernel", "key_type": 2}]
    huge = {"value_type": "jax.Array", "write_shape": [1_000_000, 1_000_000]}
    (src / "_METADATA").write_text(json.dumps({"tree_metadata": {"x": {"key_metadata": key, "value_metadata": huge}}}))
    refused(src, "'fc/kernel' declares float64 [1000000, 1000000]", measured=True)


def test_orbax_metadata_too_large_or_not_json(tmp_path):
    src = orbax_like(tmp_path / "ckpt")
    with open(src / "_METADATA", "wb") as f:
        f.truncate(orbax_files.MAX_METADATA + 1)
    refused(src, "its _METADATA is 16,777,217 bytes")
    (src / "_METADATA").write_bytes(b"{")
    refused(src, "its _METADATA is not JSON")


@needs_jax
def test_orbax_zarr_metadata_disagreeing_with_metadata(tmp_path):
    """An array whose zarr metadata (inside OCDBT) declares another shape than _METADATA:
    refused when opened, before it is read."""
    plan, params = seeded("inception_mnist")
    src = orbax_dir(tmp_path / "ckpt", params, plan)
    document = json.loads((src / "_METADATA").read_text())
    entry = next(v for k, v in document["tree_metadata"].items() if "'fc', 'kernel'" in k)
    entry["value_metadata"]["write_shape"] = list(reversed(entry["value_metadata"]["write_shape"]))
    (src / "_METADATA").write_text(json.dumps(document))
    refused(src, "'fc/kernel': its zarr metadata declares", variant="inception_mnist")


@needs_jax
def test_orbax_digest_catches_a_changed_record(tmp_path):
    """The negative control of the SHA-256 an Orbax checkpoint of this suite records:
    a record that no longer matches the tensors is refused."""
    plan, params = seeded("inception_mnist")
    src = orbax_dir(tmp_path / "ckpt", params, plan)
    document = json.loads((src / orbax_files.CHECKPOINT_METADATA).read_text())
    document["custom_metadata"][orbax_files.RECORD]["sha256"] = "0" * 64
    (src / orbax_files.CHECKPOINT_METADATA).write_text(json.dumps(document))
    with pytest.raises(PortError, match="do not match the SHA-256 recorded in its metadata"):
        read_checkpoint(src, "inception_mnist")


@needs_jax
def test_both_formats_are_read_without_jax(tmp_path):
    """A process in which jax, Flax and Orbax cannot be imported reads both files (msgpack
    and tensorstore only)."""
    plan, params = seeded("inception_mnist")
    msgpack_file(tmp_path / "m.msgpack", params, plan)
    orbax_dir(tmp_path / "ckpt", params, plan)
    canonical.save(params, tmp_path / "m.safetensors", plan)
    script = (
        "import sys; sys.modules.update(jax=None, flax=None, orbax=None)\n"
        "import numpy as np\n"
        "from conformance import canonical\n"
        "from conformance.formats.checkpoint import read_checkpoint\n"
        "want = canonical.load('m.safetensors')\n"
        "for src in ('m.msgpack', 'ckpt'):\n"
        "    got = read_checkpoint(src, 'inception_mnist').params\n"
        "    assert all(np.array_equal(got[k], want[k]) for k in want) and got.keys() == want.keys(), src\n"
        "print('read without jax')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0 and done.stdout == "read without jax\n", done.stderr[-2000:]


def test_mutated_msgpack_files_are_read_or_refused_in_one_line(tmp_path, valid_msgpack):
    """Seeded truncations and byte flips of a valid state: each is read (a flip inside an
    array's bytes changes a weight, which a msgpack file cannot detect: port says so) or
    refused with a PortError, never another exception."""
    rng = np.random.default_rng(0)
    src = tmp_path / "m.msgpack"
    outcomes = {"read": 0, "refused": 0}
    header = valid_msgpack[:4096]  # where the structure is: maps, keys, array headers
    for case in range(60):
        data = bytearray(valid_msgpack)
        if case % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            at = int(rng.integers(0, len(header)))
            data[at] ^= int(rng.integers(1, 256))
        src.write_bytes(bytes(data))
        try:
            read_checkpoint(src, "googlenet_bn")
            outcomes["read"] += 1
        except PortError as e:
            assert "\n" not in e.cli, e.cli
            outcomes["refused"] += 1
    assert outcomes["refused"] > 20, outcomes

"""Hostile files given to ``port`` (zip versions no reader implements, HDF5 links back to
the root, pickles allocating gigabytes, ONNX graphs of empty nodes, broken MXNet
symbols, a file-size limit during the write): each refused in one line before it costs
memory or time; and what port's log says of sources that carry no checksum."""

from __future__ import annotations

import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conformance import canonical
from conformance.formats import deploy
from conformance.formats import registry as formats
from conformance.formats.port import PortError, port, read_checkpoint
from conformance.reading import Damaged

from . import hostile
from .conftest import backend_or_skip, save_torch
from .helpers import assert_refused as assert_cli_refused
from .helpers import command, port_refused, seeded


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory) -> dict[str, Path]:
    """Valid inception_mnist files of the formats the rows edit, where their frameworks
    are installed (as ``init`` writes them)."""
    d = tmp_path_factory.mktemp("mnist")
    p, params = seeded("inception_mnist")
    src = d / "m.safetensors"
    canonical.save(params, src, p)
    out = {"safetensors": src}
    wanted = {"npz": "m.npz", "torch": "m.pth", "keras": "m.keras", "keras-weights": "m.weights.h5"}
    wanted |= {"mxnet": "m.params", "gluon-export": "m-symbol.json", "onnx": "m.onnx"}
    for fmt, name in wanted.items():
        try:
            port(src, d / name, "inception_mnist", dst_format=fmt)
        except PortError:  # its framework (or onnx) is not installed
            continue
        out[fmt] = d / name
    return out


def need(mnist_files: dict[str, Path], fmt: str) -> Path:
    if fmt not in mnist_files:
        pytest.skip(f"{fmt} cannot be written here (framework not installed)")
    return mnist_files[fmt]


def one_line_refusal(src: Path, dst: Path, pattern: str, variant: str = "inception_mnist") -> str:
    return port_refused(src, dst, variant, pattern, wording="cli")


@pytest.mark.parametrize("fmt", ["npz", "torch", "keras"])
def test_a_zip_version_no_reader_implements_is_refused(tmp_path, mnist_files, fmt):
    """Row 1: NotImplementedError from zipfile escaped sniff() as a traceback; diff too."""
    original = need(mnist_files, fmt)
    src = tmp_path / original.name
    src.write_bytes(hostile.zip_version_needed(original.read_bytes()))
    one_line_refusal(src, tmp_path / "o.safetensors", rf"{src.name}: a damaged .*zip file version 25.5")
    with pytest.raises(PortError, match=r"zip file version 25\.5"):
        read_checkpoint(src, "inception_mnist")  # what diff reads with
    later = tmp_path / f"later{original.suffix}"  # a later record: the directory is read, its member is not
    later.write_bytes(hostile.zip_version_needed(original.read_bytes(), record=2))
    one_line_refusal(later, tmp_path / "o.safetensors", r"zip file version 25.5")


@pytest.mark.parametrize("name", ["L", "L" * 10_000])
def test_an_hdf5_link_back_to_the_root_is_refused_at_once(tmp_path, mnist_files, name):
    """Row 2: the walk followed the cycle into gigabytes. A one-letter link is refused as
    the second link to the root (not by the object count), a long one by its path."""
    original = need(mnist_files, "keras-weights")
    src = tmp_path / "c.weights.h5"
    src.write_bytes(hostile.h5_linked_to_root(original.read_bytes(), name))
    reason = "second link to an object" if len(name) == 1 else "path is 10,007 characters"
    one_line_refusal(src, tmp_path / "o.npz", reason)
    keras = tmp_path / "c.keras"
    keras.write_bytes(
        hostile.keras_member_edited(
            need(mnist_files, "keras").read_bytes(), "model.weights.h5", lambda b: hostile.h5_linked_to_root(b, name)
        )
    )
    one_line_refusal(keras, tmp_path / "o.npz", reason)


def test_an_hdf5_cycle_on_the_command_line_stays_small(tmp_path, mnist_files):
    src = tmp_path / "c.weights.h5"
    src.write_bytes(hostile.h5_linked_to_root(need(mnist_files, "keras-weights").read_bytes()))
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "o.npz"), "--variant", "inception_mnist"))
    assert_cli_refused(m)
    assert m.peak_mb < 500, m.peak_mb


@pytest.mark.parametrize("zipped", [True, False])
def test_a_pickle_allocating_gigabytes_is_refused_before_torch_runs_it(tmp_path, zipped):
    """Row 3: torch's weights_only allows bytearray(N); 2.67 GB were allocated before the
    refusal. The replay refuses it with the file's size as the bound."""
    backend_or_skip("torch")
    src = hostile.pth_allocating(tmp_path / "a.pth") if zipped else hostile.pickle_allocating(tmp_path / "a.pth")
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "o.npz"), "--variant", "inception_mnist"))
    assert_cli_refused(m, "calls __builtin__.bytearray(2,500,000,000): an allocation larger than the file's")
    assert m.peak_mb < 500, m.peak_mb


def test_the_pickle_replay_bounds_by_the_file_not_by_kind(tmp_path):
    """Negative controls: a real state_dict's pickle replays; a bytearray within the file's
    size passes the replay (and is then refused as not a state_dict); a storage larger than
    its data member is refused."""
    from conformance.formats import pickles

    backend_or_skip("torch")
    import torch

    valid = save_torch({"w": torch.zeros(3, 4)}, tmp_path / "v.pth")
    with zipfile.ZipFile(valid) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    pickles.check_zipped(data, "data.pkl", {"0": 48}, valid.stat().st_size)
    with pytest.raises(Damaged, match=r"declares a storage of 12 elements; the file holds 8 bytes for it"):
        pickles.check_zipped(data, "data.pkl", {"0": 8}, valid.stat().st_size)
    small = hostile.pth_allocating(tmp_path / "s.pth", 100)
    one_line_refusal(small, tmp_path / "o.npz", r"expected a state_dict")
    legacy = hostile.pickle_allocating(tmp_path / "l.pth", 10)
    pickles.check_legacy(legacy)
    with pytest.raises(Damaged, match=r"bytearray\(1,000\): an allocation larger than the file's \d+ bytes"):
        pickles.check_legacy(hostile.pickle_allocating(tmp_path / "k.pth", 1000))


def test_an_onnx_graph_of_empty_nodes_is_counted_before_it_is_parsed(tmp_path):
    """Row 4: 20 MB of empty nodes parsed into 1.6 GB; googlenet_bn admits 209 MB files."""
    src = tmp_path / "n.onnx"
    src.write_bytes(hostile.onnx_empty_nodes(10_000_000))
    m = hostile.run_measured(command("port", str(src), str(tmp_path / "o.npz"), "--variant", "googlenet_bn"))
    assert_cli_refused(m, "n.onnx: its graphs hold more than 14,896 nodes")
    assert m.peak_mb < 500, m.peak_mb


def test_the_onnx_counts_are_the_files_own(tmp_path, mnist_files):
    """Negative controls: the walk counts what protobuf parses (so a bound exactly at a
    valid file's count passes and one below refuses), and nodes appended in a second
    graph field (which protobuf merges) are counted."""
    import onnx

    from conformance.formats import onnxwire

    original = need(mnist_files, "onnx")
    graph = onnx.load(str(original)).graph
    counts = onnxwire.check(original, onnxwire.Bounds(10**9, 10**9, 10**9))
    assert (counts.nodes, counts.initializers) == (len(graph.node), len(graph.initializer))
    onnxwire.check(original, onnxwire.Bounds(counts.nodes, counts.initializers, counts.fields))
    for short in (
        onnxwire.Bounds(counts.nodes - 1, counts.initializers, counts.fields),
        onnxwire.Bounds(counts.nodes, counts.initializers - 1, counts.fields),
        onnxwire.Bounds(counts.nodes, counts.initializers, counts.fields - 1),
    ):
        with pytest.raises(Damaged, match="more than"):
            onnxwire.check(original, short)
    more = tmp_path / "more.onnx"
    more.write_bytes(hostile.onnx_empty_nodes(5, original.read_bytes()))
    assert onnxwire.check(more, onnxwire.Bounds(10**9, 10**9, 10**9)).nodes == counts.nodes + 5
    assert len(onnx.load(str(more)).graph.node) == counts.nodes + 5
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(original.read_bytes()[:-1000])
    one_line_refusal(truncated, tmp_path / "o.npz", r"cut.onnx: .*(past|truncated)")


def test_two_initializers_of_one_name_are_refused(tmp_path, mnist_files):
    """Row 5: port wrote the second (zeros); ONNX Runtime runs the first."""
    import onnx
    from onnx import numpy_helper

    original = need(mnist_files, "onnx")
    src = tmp_path / "d.onnx"
    src.write_bytes(hostile.onnx_duplicate_initializer(original.read_bytes()))
    one_line_refusal(src, tmp_path / "o.npz", r"two initializers are named 'conv1.weight'")
    other = onnx.load(str(original))  # negative control: another name is not a duplicate
    other.graph.initializer.append(numpy_helper.from_array(np.zeros(3, np.float32), "conv1.extra"))
    onnx.save(other, str(tmp_path / "e.onnx"))
    message = one_line_refusal(tmp_path / "e.onnx", tmp_path / "o.npz", r"unexpected key 'conv1.extra'")
    assert "two initializers" not in message


@pytest.mark.parametrize("edit", ["truncated", "input", "heads", "arg_nodes"])
def test_a_broken_symbol_json_is_one_line(tmp_path, mnist_files, edit):
    """Row 11: MXNet's parser answered with a C++ "Traceback" of several lines."""
    symbol = need(mnist_files, "gluon-export")
    src = tmp_path / "g-symbol.json"
    text = symbol.read_text()
    src.write_text(hostile.symbol_truncated(text) if edit == "truncated" else hostile.symbol_out_of_range(text, edit))
    (tmp_path / "g-0000.params").write_bytes(deploy.params_of(symbol).read_bytes())
    pattern = "not JSON" if edit == "truncated" else r"refers to node 99999; the graph has nodes 0 to \d+"
    one_line_refusal(src, tmp_path / "o.npz", pattern)


@pytest.mark.parametrize("dst,fmt", [("g-symbol.json", "gluon-export"), ("sm", "savedmodel")])
def test_a_file_size_limit_during_a_framework_write_is_one_line(tmp_path, mnist_files, dst, fmt):
    """Row 11: under ``ulimit -f 200`` the Gluon and SavedModel writers (their own C++
    streams) failed with exit 1 and several lines."""
    backend_or_skip("mxnet" if fmt == "gluon-export" else "keras")
    src = need(mnist_files, "npz")
    m = hostile.run_measured(
        command("port", str(src), str(tmp_path / dst), "--to", fmt, "--variant", "inception_mnist"),
        env={"MEASURED_FSIZE": str(200 * 1024)},
        ignore_xfsz=True,
    )
    assert_cli_refused(m, f"DST {tmp_path / dst}: writing", "file-size limit is full", alone=False)
    # one line, after the progress line of the write it stops (the input's checks had passed)
    said = m.stderr.splitlines()
    assert len(said) == 2 and said[0].startswith(f"port: writing {tmp_path / dst} ("), m.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_log_says_which_sources_carry_no_checksum(tmp_path, mnist_files):
    """Bit flips in .params and .caffemodel data port silently: the log says so for the
    formats without a checksum, and not for those whose checksum is verified."""
    lines: list[str] = []
    port(need(mnist_files, "mxnet"), tmp_path / "a.npz", "inception_mnist", log=lines.append)
    assert any(line.startswith("note   mxnet: MXNet Gluon parameters files carry no checksum") for line in lines)
    for fmt in ("npz", "safetensors"):  # zip CRC-32; the suite's SHA-256
        lines.clear()
        port(need(mnist_files, fmt), tmp_path / f"{fmt}.pth", "inception_mnist", log=lines.append)
        assert not any("checksum" in line or "SHA-256" in line for line in lines), lines
    assert formats.FORMATS["caffe"].checksum == "" and formats.FORMATS["torch"].checksum


def test_every_format_without_a_checksum_says_so_in_the_log_and_no_other_does():
    """Issue 24's checksum item for every format, Caffe's included (its port takes a
    53 MB googlenet_lrn file): the note comes from the format's own ``checksum``. A
    format whose digest is missing from the file says so too (the negative control of
    'a digest format is always covered')."""
    recorded, unrecorded = types.SimpleNamespace(digest="0" * 64), types.SimpleNamespace(digest=None)
    unchecked = {name for name, fmt in formats.FORMATS.items() if not fmt.checksum}
    assert {"caffe", "mxnet"} <= unchecked and "npz" not in unchecked and "torch" not in unchecked
    for name, fmt in formats.FORMATS.items():
        said = formats.unchecked(fmt, recorded)
        if name in unchecked:
            assert said.startswith(f"{fmt.description} files carry no checksum: a changed byte"), (name, said)
        else:
            assert said == "", (name, said)
    digests = [fmt for fmt in formats.FORMATS.values() if fmt.checksum == "digest"]
    assert digests and all("records no SHA-256" in formats.unchecked(fmt, unrecorded) for fmt in digests)

"""Caffe's bvlc_googlenet: ``.caffemodel`` files (both layer formats) written by the
tests with the suite's schema port to all three frameworks bit for bit, and every
malformed one is refused with one message. The reading code is the one a user with the
published file runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats import naming
from conformance.formats.port import PortError, port, read_checkpoint
from conformance.formats.sniff import sniff

from . import caffe_files
from .conftest import backend_or_skip, cli
from .helpers import assert_refused, port_refused, seeded_params

pytest.importorskip("google.protobuf")

VARIANT = "googlenet_lrn"
TARGETS = {"torch": "out.pth", "keras": "out.weights.h5", "mxnet": "out.params"}


@pytest.fixture(scope="module")
def params() -> dict[str, np.ndarray]:
    return seeded_params(VARIANT, aux=True)


@pytest.fixture(scope="module")
def files(params, tmp_path_factory) -> dict[str, Path]:
    """The same weights as Caffe 2014 wrote them (V1 ``layers``, legacy 4-D shapes) and
    as Caffe writes them now (``layer``, ``shape``)."""
    d = tmp_path_factory.mktemp("caffe")
    return {
        "V1": caffe_files.write(d / "v1.caffemodel", params, v1=True),
        "current": caffe_files.write(d / "current.caffemodel", params, v1=False),
    }


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint32)


def assert_holds(path: Path, params: dict[str, np.ndarray]) -> None:
    """``path`` (any format) holds exactly ``params``, bit for bit, read as port reads it."""
    got = read_checkpoint(path, VARIANT).params
    assert list(got) == list(params)
    different = [k for k in params if got[k].dtype != np.float32 or not np.array_equal(bits(got[k]), bits(params[k]))]
    assert not different, different


def test_caffes_names_are_derived_from_the_plan_and_are_bvlc_googlenets():
    """The scheme (conv kernel, reduction, projection, loss heads, from the plan) gives
    the names deploy.prototxt lists, for every canonical key."""
    want = {}
    for name, _, unit in caffe_files.bvlc_layers():
        if unit is not None:
            prefix = f"{unit}.conv" if not unit.startswith(("aux1.fc", "aux2.fc")) and unit != "fc" else unit
            want |= {f"{prefix}.weight": f"{name}[0]", f"{prefix}.bias": f"{name}[1]"}
    p = spec.resolve(VARIANT, aux_logits=True)
    assert naming.caffe_names(p) == want
    assert set(want) == set(canonical.canonical_shapes(p))
    assert naming.caffe_names(spec.resolve(VARIANT))["fc.weight"] == "loss3/classifier[0]"  # with or without aux


@pytest.mark.parametrize("layout", ["V1", "current"])
def test_both_layer_formats_read_bit_for_bit(files, params, layout):
    checkpoint = read_checkpoint(files[layout], VARIANT)
    assert checkpoint.format.name == "caffe" and sniff(files[layout]) == "caffe"
    assert checkpoint.plan.aux and checkpoint.params.keys() == params.keys()
    assert_holds(files[layout], params)
    fmt = "V1 layers" if layout == "V1" else "layer"
    assert checkpoint.notes[0] == f"Caffe network 'GoogleNet': 159 layers ({fmt} format), 64 with weights"
    # V1: 64 biases and 5 fc weights were 1 x 1 x 1 x N and 1 x 1 x N x M
    assert any("read 69 blobs in Caffe's legacy 4-D shape" in n for n in checkpoint.notes) == (layout == "V1")


@pytest.mark.parametrize("framework", sorted(TARGETS))
def test_a_v1_caffemodel_ports_to_each_framework_bit_for_bit(files, params, tmp_path, framework):
    backend_or_skip(framework)
    log: list[str] = []
    result = port(files["V1"], tmp_path / TARGETS[framework], VARIANT, log=log.append)
    assert result.passed and result.src_format == "caffe" and result.target_framework == framework, log
    assert set(result.agreement) == {"logits", "aux1", "aux2"}
    assert_holds(tmp_path / TARGETS[framework], params)


def test_the_current_format_with_legacy_shapes_and_float64_values(params, tmp_path):
    """Caffe reads a blob's legacy 4-D shape in either layer format; float64 blobs
    (``double_data``) are converted to float32 with a notice, exactly for these values."""
    backend_or_skip("torch")
    src = caffe_files.write(tmp_path / "d.caffemodel", params, v1=False, legacy=True, double=True)
    result = port(src, tmp_path / "d.safetensors", VARIANT)
    assert result.passed and "converted 128 float64 tensors to float32" in result.notes
    assert_holds(tmp_path / "d.safetensors", params)


def test_the_command_line_with_caffes_input_transform(files, tmp_path):
    backend_or_skip("torch")
    r = cli("port", str(files["current"]), str(tmp_path / "g.pth"), "--variant", VARIANT, "--transform-input")
    assert r.returncode == 0, r.stderr
    assert "read   " in r.stdout and "(Caffe model): 128 tensors, googlenet_lrn" in r.stdout
    assert r.stdout.strip().endswith("PASS")


# --------------------------------------------------------------------------------------
# Refused, with one message
# --------------------------------------------------------------------------------------


def refused(tmp_path: Path, src: Path, message: str, variant: str = VARIANT, **kwargs) -> None:
    port_refused(src, tmp_path / "out.pth", variant, message, **kwargs)


def edited(tmp_path: Path, params, edit, v1: bool = False) -> Path:
    net = caffe_files.net(params, v1)
    edit(net)
    path = tmp_path / "edited.caffemodel"
    path.write_bytes(net.SerializeToString())
    return path


def layer(net, name: str):
    return next(layer for layer in (*net.layer, *net.layers) if layer.name == name)


def test_truncated_and_corrupt(files, tmp_path):
    data = files["current"].read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) // 2])
    refused(
        tmp_path, tmp_path / "cut.caffemodel", r"cut.caffemodel: truncated or corrupt: a field at byte [\d,]+ runs past"
    )
    (tmp_path / "head.caffemodel").write_bytes(data[:8])  # inside the network's name
    refused(
        tmp_path, tmp_path / "head.caffemodel", r"a damaged Caffe model: its first field runs past the end of the file"
    )
    corrupt = bytearray(data)
    corrupt[20:28] = b"\xff" * 8  # inside the first layer's header: no field tag ends there
    (tmp_path / "bad.caffemodel").write_bytes(bytes(corrupt))
    refused(
        tmp_path, tmp_path / "bad.caffemodel", r"bad.caffemodel: corrupt: a malformed field tag at byte 20 in layer 1"
    )
    # Fields that fit together but not Caffe's schema (packed floats of 3 bytes): protobuf refuses them
    blob = b"\x2a\x03abc"
    layer = b"\x0a\x01x\x3a" + bytes([len(blob)]) + blob
    (tmp_path / "odd.caffemodel").write_bytes(b"\n\x01n\xa2\x06" + bytes([len(layer)]) + layer)
    refused(
        tmp_path,
        tmp_path / "odd.caffemodel",
        r"odd.caffemodel: not a Caffe NetParameter protobuf \(truncated or corrupt",
    )


def test_a_file_larger_than_the_network_can_need_is_refused_before_it_is_parsed(files, tmp_path):
    big = tmp_path / "big.caffemodel"
    big.write_bytes(files["current"].read_bytes()[:4096])
    with open(big, "r+b") as f:
        f.truncate(400 << 20)  # sparse: 400 MB that no one reads
    refused(tmp_path, big, r"419,430,400 bytes is more than googlenet_lrn with 1000 classes can hold \(108 MB\)")


def test_a_blob_that_declares_more_than_it_holds(params, tmp_path):
    def inflate(net):
        layer(net, "inception_4a/5x5").blobs[0].shape.dim[0] *= 1 << 30

    src = edited(tmp_path, params, inflate)
    refused(
        tmp_path, src, r"layer 'inception_4a/5x5' blob 0 declares \[51539607552, 16, 5, 5\] \(.* values\) but holds"
    )


def test_misnamed_missing_and_extra_layers(params, tmp_path):
    src = edited(tmp_path, params, lambda net: setattr(layer(net, "inception_4a/5x5"), "name", "inception_4a/5x5_b"))
    refused(
        tmp_path,
        src,
        r"missing key 'inception4a.branch3.1.conv.weight' .*unexpected key 'inception_4a/5x5_b\[0\]'",
    )
    src = edited(tmp_path, params, lambda net: layer(net, "loss3/classifier").ClearField("blobs"))
    refused(tmp_path, src, r"missing key 'fc.weight'")


def test_other_class_counts_offer_the_option(params, tmp_path):
    def ten_classes(net):
        blobs = layer(net, "loss3/classifier").blobs
        del blobs[0].data[10 * 1024 :], blobs[1].data[10:]
        blobs[0].shape.dim[0], blobs[1].shape.dim[0] = 10, 10

    src = edited(tmp_path, params, ten_classes)
    refused(
        tmp_path, src, r"the checkpoint has 10 classes \(fc.weight is \(10, 1024\)\), not 1000: pass num_classes=10"
    )


def test_both_layer_formats_in_one_file(params, tmp_path):
    src = edited(tmp_path, params, lambda net: net.layers.add(name="extra"))
    refused(tmp_path, src, r"both formats \('layer' and the V1 'layers'\), which Caffe refuses")


def test_the_wrong_variant(files, tmp_path):
    refused(
        tmp_path,
        files["V1"],
        r"LocalResponseNorm layers \(pool1/norm1, conv2/norm2\): this is `googlenet_lrn`, not `googlenet`",
        variant="googlenet",
    )
    refused(
        tmp_path,
        files["V1"],
        r"holds Caffe's bvlc_googlenet \(variant='googlenet_lrn'\); googlenet_bn's conv units are not bvlc_googlenet's",
        variant="googlenet_bn",
    )


def test_no_lrn_layers_is_another_network(params, tmp_path):
    def drop_lrn(net):
        for name in ("pool1/norm1", "conv2/norm2"):
            net.layer.remove(layer(net, name))

    refused(
        tmp_path,
        edited(tmp_path, params, drop_lrn),
        r"has no LocalResponseNorm among them: this is not `googlenet_lrn`",
    )


def test_a_caffemodel_is_not_written(files, tmp_path):
    with pytest.raises(PortError, match=r"DST .*x.caffemodel: Caffe model files are read here, not written"):
        port(files["V1"], tmp_path / "x.caffemodel", VARIANT)
    assert not (tmp_path / "x.caffemodel").exists()


def test_the_text_prototxt_and_other_files_are_told_apart(files, tmp_path):
    text = tmp_path / "deploy.caffemodel"
    text.write_text('name: "GoogleNet"\nlayer {\n  name: "data"\n}\n')
    refused(
        tmp_path, text, r"but the file is a Caffe text prototxt \(the network's description; its weights are in the"
    )
    noise = tmp_path / "noise.caffemodel"
    noise.write_bytes(bytes(range(256)) * 4)
    refused(tmp_path, noise, r"expected Caffe model \(caffe\), but the file is not a known checkpoint format")
    r = cli("port", str(files["V1"]), str(tmp_path / "x.npz"), "--variant", VARIANT, "--from", "torch")
    assert r.returncode == 2 and r.stderr.count("error:") == 1
    assert (
        "but the file is a Caffe model (a NetParameter protobuf) (pass --from caffe if it is Caffe model)" in r.stderr
    )


def test_the_command_line_refuses_with_exit_2_and_one_message(files, tmp_path):
    data = files["current"].read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[:1000])
    r = cli("port", str(tmp_path / "cut.caffemodel"), str(tmp_path / "x.pth"), "--variant", VARIANT)
    assert_refused(r, "truncated or corrupt", alone=False)
    assert not (tmp_path / "x.pth").exists()


def test_a_network_without_weights(tmp_path):
    from conformance.formats import caffe_pb2

    net = caffe_pb2.NetParameter(name="GoogleNet")
    net.layer.add(name="data", type="Input")
    net.layer.add(name="conv1/7x7_s2", type="Convolution")
    (tmp_path / "empty.caffemodel").write_bytes(net.SerializeToString())
    refused(tmp_path, tmp_path / "empty.caffemodel", r"none of its 2 layers holds weights")


def test_sniffing_a_netparameter_by_its_first_fields(tmp_path):
    from conformance.formats import caffe, caffe_pb2

    def head(net) -> tuple[bytes, int]:
        data = net.SerializeToString()
        return data[:256], len(data)

    named = caffe_pb2.NetParameter(name="GoogleNet")
    named.layers.add(name="conv1/7x7_s2")
    unnamed = caffe_pb2.NetParameter()
    unnamed.layer.add(name="conv1/7x7_s2", type="Convolution")
    assert caffe.looks_like(*head(named)) and caffe.looks_like(*head(unnamed))
    data, _ = head(named)
    assert not caffe.looks_like(data[:5], 5) and caffe.cut_short(data[:5], 5)  # the name runs past the end
    for other in (
        b"PK\x03\x04",
        b"\x89HDF\r\n\x1a\n",
        b"\x80\x02}q\x00",
        b'name: "GoogleNet"\n',
        b"\n\n\n",
        b"\x00" * 16,
    ):
        assert not caffe.looks_like(other, len(other)), other
    assert caffe.looks_like_text(b'  name: "GoogleNet"\nlayer {') and not caffe.looks_like_text(data)

"""The sources' own PyTorch networks (Hongpu Liu's lecture nets and pytorch-cifar100's
GoogleNet, transcribed in ``source_nets``):
their state_dicts load into every framework's implementation and give their outputs."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.check.compare import REL_TOL, agreement
from conformance.formats import naming
from conformance.formats.port import port

from .conftest import backend_or_skip

torch = pytest.importorskip("torch")
from . import source_nets  # noqa: E402

SOURCES = {
    "inception_mnist": source_nets.InceptionNet,
    "residual_mnist": source_nets.ResidualNet,
    "googlenet_cifar": source_nets.CifarGoogleNet,
}


def source_model(variant: str):
    torch.manual_seed(0)
    net = SOURCES[variant]()
    with torch.no_grad():  # fresh BatchNorm statistics would make eval mode an identity
        for name, buffer in net.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return net.eval()


def source_params(variant: str, net) -> dict[str, np.ndarray]:
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    p = spec.resolve(variant)
    params, _ = naming.to_canonical(state, naming.detect(state), p)
    return canonical.from_state_dict(params)


@pytest.mark.parametrize("variant", ["inception_mnist", "residual_mnist"])
def test_lecture_state_dict_keys_are_the_canonical_keys(variant):
    """Liu's own module names: its checkpoints port without a renaming table."""
    keys = set(source_model(variant).state_dict())
    assert keys == set(canonical.canonical_shapes(spec.resolve(variant)))


def test_cifar100_names_cover_every_key_of_its_state_dict():
    state = source_model("googlenet_cifar").state_dict()
    assert naming.detect(state) == "cifar100"
    names = naming.cifar100_names(spec.resolve("googlenet_cifar"))
    assert set(names.values()) == {k for k in state if not k.endswith("num_batches_tracked")}
    assert names["inception3a.branch3.2.conv.bias"] == "a3.b3.6.bias"
    assert names["inception3a.branch4.1.bn.weight"] == "a3.b4.2.weight"
    assert names["conv3.bn.running_var"] == "prelayer.7.running_var"


@pytest.mark.parametrize("framework", ["torch", "keras", "mxnet"])
@pytest.mark.parametrize("variant", list(SOURCES))
def test_the_sources_outputs_are_reproduced(variant, framework):
    b = backend_or_skip(framework)
    net = source_model(variant)
    v = spec.VARIANTS[variant]
    x = np.random.default_rng(0).standard_normal((2, v.input.channels, v.input.size, v.input.size)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    model = b.build(variant)
    b.from_canonical(model, source_params(variant, net))
    a = agreement(ref, b.forward(model, x), logits=True)
    assert a.passed and a.max_rel <= REL_TOL, a


def test_the_eps_quirk_matters(tmp_path):
    """With pytorch-cifar100's eps=n5x5 replaced by 1e-5, outputs move far beyond the tolerance:
    the quirk is part of what its checkpoints mean."""
    b = backend_or_skip("torch")
    net = source_model("googlenet_cifar")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    import dataclasses

    v = spec.GOOGLENET_CIFAR
    plain = dataclasses.replace(v, branch3=dataclasses.replace(v.branch3, width_as_eps=False))
    model = b.build(plain)
    b.from_canonical(model, source_params("googlenet_cifar", net))
    assert agreement(ref, b.forward(model, x)).max_rel > 100 * REL_TOL


def test_a_pytorch_cifar100_checkpoint_ports_to_keras(tmp_path):
    backend_or_skip("torch"), backend_or_skip("keras")
    src = tmp_path / "googlenet-cifar100.pth"
    torch.save(source_model("googlenet_cifar").state_dict(), src)
    lines: list[str] = []
    port(src, tmp_path / "googlenet.weights.h5", "googlenet_cifar", log=lines.append)
    assert (tmp_path / "googlenet.weights.h5").exists()
    assert "       names: cifar100" in lines and "       weights: bit-identical" in lines
    assert any(line.strip().startswith("logits") and line.endswith("PASS") for line in lines), lines

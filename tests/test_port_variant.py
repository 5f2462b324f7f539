"""``port`` without ``--variant`` (issue #25, item 9): the one variant a file's tensors
fit is taken and said in one line; when several fit, they are named and the user asked."""

from __future__ import annotations

import pytest

from conformance import canonical, spec
from conformance.formats.port import PortError, port, read_checkpoint

from .conftest import save_torch, torch_state


def test_the_one_variant_that_fits_is_taken_and_said(tmp_path):
    src = save_torch(torch_state("googlenet_cifar", aux=False, num_classes=100), tmp_path / "cifar.pth")
    log: list[str] = []
    result = port(src, tmp_path / "cifar.safetensors", log=log.append)
    assert result.variant == "googlenet_cifar" and result.passed
    said = [line for line in log if "the only variant the file fits" in line]
    assert said == [
        "       variant googlenet_cifar: the only variant the file fits (its tensors, and the variant it "
        "records if any; --variant chooses another)"
    ]


def test_what_the_file_records_breaks_a_tie(tmp_path):
    """googlenet_bn and googlenet_gluoncv have the same tensors; the suite's safetensors
    records its variant."""
    p = spec.resolve("googlenet_gluoncv", None, True)
    path = canonical.save(canonical.random_params(p, 0), tmp_path / "g.safetensors", p)
    assert read_checkpoint(path, None).plan.variant.name == "googlenet_gluoncv"


def test_negative_control_several_fit_they_are_named_and_the_user_asked(tmp_path):
    src = save_torch(torch_state("googlenet_bn"), tmp_path / "tv.pth")
    with pytest.raises(PortError) as refused:
        port(src, tmp_path / "tv.safetensors")
    assert refused.value.cli == (
        f"{src}: its tensors fit `googlenet_bn` and `googlenet_gluoncv` (the same tensors, another network "
        f"around them): pass --variant googlenet_bn or another"
    )
    assert "variant='googlenet_bn'" in str(refused.value)
    assert not (tmp_path / "tv.safetensors").exists()


def test_a_file_that_fits_no_variant_is_refused(tmp_path):
    state = torch_state("googlenet_cifar", aux=False, num_classes=100)
    del state["linear.weight" if "linear.weight" in state else "fc.weight"]
    src = save_torch(state, tmp_path / "cut.pth")
    with pytest.raises(PortError, match="its tensors fit no variant as they are; pass variant"):
        read_checkpoint(src, None)

"""What the test files share and that needs no framework: the published parameter
counts, seeded images and weights, the command line of ``python -m conformance``, the
refusals every command and ``port`` owe bad input, and a byte flipper for damaged files."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from conformance import canonical, spec
from conformance.formats.port import PortError, port

# (variant, aux heads) -> (trainable parameters, BatchNorm statistics): torchvision's
# GoogLeNet without BatchNorm (the paper's) and with it, as torchvision and the
# BN-Inception papers publish them.
PUBLISHED: dict[tuple[str, bool], tuple[int, int]] = {
    ("googlenet", False): (6_998_552, 0),
    ("googlenet", True): (13_378_280, 0),
    ("googlenet_bn", False): (6_624_904, 14_560),
    ("googlenet_bn", True): (13_004_888, 15_072),
}


TMP = ".conformance-tmp"  # what the suite's temporary files and directories are named with


def leftovers(directory: Path) -> list[str]:
    """The temporary files a run left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if TMP in p.name or p.name.endswith(".tmp"))


def random_images(
    batch: int, size: int, *, channels: int = 3, seed: int | Sequence[int] = 0, uniform: bool = False
) -> np.ndarray:
    """Seeded NCHW float32 images: standard normal, or uniform in [-1, 1) (TF-slim's
    preprocessed range) with ``uniform``."""
    rng = np.random.default_rng(seed)
    shape = (batch, channels, size, size)
    values = rng.uniform(-1, 1, shape) if uniform else rng.standard_normal(shape)
    return values.astype(np.float32)


def seeded(variant: str, seed: int = 0, *, aux: bool = False) -> tuple[spec.Plan, canonical.Params]:
    """The plan of ``variant`` (with its aux heads if ``aux``) and the suite's seeded
    canonical weights for it."""
    plan = spec.resolve(variant, aux_logits=aux)
    return plan, canonical.random_params(plan, seed)


def seeded_params(variant: str, seed: int = 0, *, aux: bool = False) -> canonical.Params:
    """The suite's seeded canonical weights of ``variant`` (with its aux heads if ``aux``)."""
    return seeded(variant, seed, aux=aux)[1]


def command(*args: str) -> list[str]:
    """The command line of ``python -m conformance ARGS`` in this interpreter."""
    return [sys.executable, "-m", "conformance", *args]


def assert_refused(result: Any, *needles: str, alone: bool = True) -> None:
    """A command's refusal of bad input: exit 2, one ``error:`` line naming what was
    wrong (each of ``needles``), no traceback; with ``alone``, nothing else on stderr.
    ``result``: anything with ``returncode`` and ``stderr`` (a CompletedProcess, a
    ``hostile.Measured``)."""
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err[-2000:])
    assert "Traceback" not in err and err.count("error:") == 1, err[-2000:]
    if alone:
        assert err.count("\n") == 1, err[-2000:]
    for needle in needles:
        assert needle in err, err[-2000:]


def port_refused(
    src: Path, dst: Path, variant: str, pattern: str, *, wording: Literal["python", "cli"] = "python", **options: Any
) -> str:
    """``port``'s refusal: a PortError whose message (Python's wording, or the command
    line's with ``wording="cli"``) is one line matching ``pattern``, and nothing written
    beside ``dst`` (no DST, no temporary file). Returns the message."""
    before = sorted(path.name for path in dst.parent.iterdir())
    with pytest.raises(PortError) as raised:
        port(src, dst, variant, **options)
    message = raised.value.cli if wording == "cli" else str(raised.value)
    assert "\n" not in message and "Traceback" not in message, message
    assert re.search(pattern, message), message
    assert sorted(path.name for path in dst.parent.iterdir()) == before
    return message


def flip(data: bytes, changes: Iterable[tuple[int, int]]) -> bytes:
    """``data`` with each (offset, mask) applied as XOR, in order (an offset may repeat)."""
    out = bytearray(data)
    for at, mask in changes:
        out[at] ^= mask
    return bytes(out)

"""The suite's checks as pytest cases for an implementation the suite did not write, as
ONNX's backend test kit gives a runtime its cases. In the plug-in's own test file::

    from conformance import kit

    test_conformance = kit.cases("mypkg.backend", variants=["googlenet_d2l"])

Each case is one variant and one check, with the id ``variant-check`` (select with
``pytest -k``): the plug-in's package held to the interface, its parameter counts
against the spec, every stage at every size and each of its modes against the
reference's, its canonical round trip and the chain through the reference, and
training parity (two SGD steps in float64). The reference is a built-in framework
(PyTorch unless told otherwise); a case fails with the check's own report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import pytest

from . import frameworks, spec
from .check import harness, report

CHECKS = ("contract", "counts", "stages", "roundtrip", "training")


@cache
def _report(
    backend: str, reference: str, variant: str, train: bool, sizes: tuple[int, ...] | None, batch: int
) -> harness.Report:
    backends, skipped = frameworks.load([reference, backend])
    if reference in skipped:
        pytest.skip(f"the reference {reference} is {skipped[reference]}")
    return harness.run([variant], backends, skipped, sizes=sizes, batch=batch, train=train)


def failures(
    backend: str,
    variant: str,
    check: str,
    reference: str = "torch",
    sizes: tuple[int, ...] | None = None,
    batch: int = harness.DEFAULT_BATCH,
) -> list[str]:
    """What fails in one case (empty: it passes). ``sizes``: the input sizes the stages
    are checked at (None: the variant's own and the odd sizes, as ``check``)."""
    if check == "contract":
        try:
            frameworks.plugin(backend)
        except ValueError as e:
            return [str(e)]
        return []
    r = _report(backend, reference, variant, check == "training", sizes, batch)
    v = r.variants[0]
    found = [f"{fw} raised {what}" for fw, what in v.errors.items()]
    if check == "counts" and not v.counts_passed:
        found.append(f"parameter counts (trainable, statistics) differ: {v.counts}")
    if check == "stages" and not all(s.passed for s in v.sizes):
        found.append("stages disagree at input " + ", ".join(str(s.size) for s in v.sizes if not s.passed))
    if check == "roundtrip":
        found += [f"round trip {who} changed {', '.join(keys[:5])}" for who, keys in v.roundtrip.items() if keys]
    if check == "training":
        found += [f"training: {row.quantity} disagrees" for row in v.training if not row.passed]
    return [*found, report.render(r)] if found else []


def cases(
    backend: str,
    variants: Sequence[str] | None = None,
    checks: Sequence[str] = CHECKS,
    reference: str = "torch",
    sizes: Sequence[int] | None = None,
    batch: int = harness.DEFAULT_BATCH,
) -> Callable[[str, str], None]:
    """A pytest test function parametrised over ``variants`` (every variant when None)
    and ``checks`` (a subset of :data:`CHECKS`); assign it to a ``test_`` name.
    ``sizes`` and ``batch`` as in :func:`failures`."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"checks: unknown {unknown}; expected a subset of {', '.join(CHECKS)}")
    names = list(variants) if variants is not None else list(spec.VARIANTS)
    missing = [v for v in names if v not in spec.VARIANTS]
    if missing:
        raise ValueError(f"variants: unknown {missing}; expected some of {', '.join(spec.VARIANTS)}")
    params = [pytest.param(v, c, id=f"{v}-{c}") for v in names for c in checks]

    @pytest.mark.parametrize(("variant", "check"), params)
    def test(variant: str, check: str) -> None:
        found = failures(backend, variant, check, reference, tuple(sizes) if sizes else None, batch)
        assert not found, "\n".join(found)

    return test

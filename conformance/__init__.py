"""GoogLeNet across PyTorch, Keras 3 and MXNet Gluon: one spec, one canonical
checkpoint, one conformance check.

* :mod:`conformance.spec` - the variants as data, and their arithmetic;
* :mod:`conformance.canonical` - checkpoint names, layouts, strict validation, files;
* :mod:`conformance.interface` - what every ``impl_*`` package provides;
* :mod:`conformance.harness` - the check behind ``python -m conformance check``.
"""

from .spec import VARIANTS, configure, plan

__all__ = ["VARIANTS", "configure", "plan"]

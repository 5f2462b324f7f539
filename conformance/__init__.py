"""GoogLeNet across PyTorch, Keras 3 and MXNet Gluon: one spec, one canonical
checkpoint, one conformance check.

* :mod:`conformance.spec` - the variants as data, and their arithmetic;
* :mod:`conformance.canonical` - checkpoint names, layouts, strict validation;
* :mod:`conformance.interface` - what every ``impl_*`` package provides;
* :mod:`conformance.check` - the check behind ``python -m conformance check``.
"""

from .spec import VARIANTS, resolve

__all__ = ["VARIANTS", "resolve"]

"""GoogLeNet across PyTorch, Keras 3 and MXNet Gluon: one spec, one canonical
checkpoint, one conformance check.

* :mod:`conformance.spec` - the variants as data, and their arithmetic;
* :mod:`conformance.canonical` - checkpoint names, layouts, strict validation;
* :mod:`conformance.interface` - what every ``impl_*`` package provides;
* :mod:`conformance.check` - the check behind ``python -m conformance check``;
* :func:`verify` - a user's own GoogLeNet against the suite's reference, stage by stage.
"""

from .spec import VARIANTS, resolve
from .verify import verify

__all__ = ["VARIANTS", "resolve", "verify"]

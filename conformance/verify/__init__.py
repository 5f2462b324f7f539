"""``verify``: check a GoogLeNet a user wrote against the suite's reference of the same
variant, holding the same weights, stage by stage, and name the mistake where they
disagree.

* :mod:`.load` - ``module:callable`` or ``path/file.py:callable`` -> the user's model;
* :mod:`.pairing` - which of the user's tensors is which canonical key;
* :mod:`.taps` - the user's PyTorch model through forward hooks;
* :mod:`.taps_keras` - the user's Keras model through wrapped ``call`` methods;
* :mod:`.keras_file` - a ``.keras`` file, checked before Keras rebuilds it;
* :mod:`.taps_saved` - a SavedModel directory through its frozen serving signature;
* :mod:`.convention` - the user's input convention (BGR, scale, mean, std) against the variant's;
* :mod:`.verifying` - the comparison, and :func:`verify`; :mod:`.results` - what it finds;
* :mod:`.diagnose` - the pitfall catalogue replayed with the user's weights;
* :mod:`.report` - the terminal report and the JSON document;
* :mod:`.command` - ``python -m conformance verify``.

Importing this package imports no framework: :func:`verify` loads PyTorch when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np

    from ..progress import Steps
    from .results import Result


def verify(
    model: Any,
    variant: str = "auto",
    weights: str | Path | Mapping[str, np.ndarray] | None = None,
    input_sizes: Sequence[int] | None = None,
    batch: int = 2,
    seed: int = 0,
    transform_input: bool | None = None,
    run_diagnosis: bool = True,
    progress: Steps | None = None,
    bgr: bool = False,
    input_scale: float | None = None,
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> Result:
    """See :func:`conformance.verify.verifying.verify`."""
    from . import verifying

    return verifying.verify(
        model,
        variant,
        weights,
        input_sizes,
        batch,
        seed,
        transform_input,
        run_diagnosis=run_diagnosis,
        progress=progress,
        bgr=bgr,
        input_scale=input_scale,
        input_mean=input_mean,
        input_std=input_std,
    )


__all__ = ["verify"]

"""A ``.keras`` file as MODEL, read as ``port`` reads one before Keras opens it: the
archive's members bounded and their CRC-32s checked, its config.json bounded and naming
Keras's own layers only (a class from the user's code is not in the file, and a Lambda
layer holds bytecode), its weights' HDF5 walked and sized against the largest
GoogLeNet. Keras then rebuilds it with ``safe_mode=True``; :mod:`.taps_keras` runs it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import spec
from ..formats import bounds
from ..formats.keras_files import MAX_CONFIG, h5_datasets
from ..formats.sniff import sniff
from ..reading import Damaged, Tensor, check_crcs, read_member, zip_members

KERAS_MODULES = ("keras", "keras.")  # where a file's classes may come from: Keras's own layers
WEIGHTS = "model.weights.h5"
MAX_DEPTH = 64  # levels of a config.json: each model nested in another adds a few, a layer's config a few more
__all__ = ["MAX_CONFIG", "WEIGHTS", "read"]


def largest() -> bounds.Budget:
    """What a GoogLeNet's weights of any variant may need (at the most classes, with aux
    heads); a trained model's optimizer state fits within its float64 margin."""
    plans = [spec.resolve(n, aux_logits=spec.VARIANTS[n].aux is not None) for n in spec.VARIANTS]
    return max((bounds.ceiling(p) for p in plans), key=lambda b: b.total)


def _foreign(config: object, depth: int = 0) -> str | None:
    """The first class the config names that is not one of Keras's own (or a Lambda)."""
    if depth > MAX_DEPTH:
        raise Damaged(f"its config.json nests more than {MAX_DEPTH} levels deep; a GoogLeNet's nests far fewer")
    if isinstance(config, dict):
        module, name = config.get("module"), config.get("class_name")
        if isinstance(name, str) and name == "Lambda":
            return "a Lambda layer (its function is Python bytecode, which is not run from a file)"
        if isinstance(module, str) and isinstance(name, str) and not module.startswith(KERAS_MODULES):
            return f"class {name!r} of module {module!r}, which the file does not hold"
        children = list(config.values())
    elif isinstance(config, list):
        children = config
    else:
        return None
    return next((found for c in children if (found := _foreign(c, depth + 1)) is not None), None)


def read(path: Path) -> Any:
    """The ``.keras`` file, bounded and checked, as a ``keras.Model``; ValueError naming
    the file otherwise."""
    what = f"MODEL {path}"
    kind = sniff(path)
    if kind == "damaged-zip":
        raise ValueError(f"{what}: a damaged Keras model archive (truncated or corrupt: its directory cannot be read)")
    if kind != "keras":
        raise ValueError(f"{what}: not a Keras model archive (a zip with config.json and {WEIGHTS})")
    limit = largest()
    config_limit = (MAX_CONFIG, f"a GoogLeNet's config is under {MAX_CONFIG:,} bytes")
    try:
        zip_members(path, limit.total, limit.total, {"config.json": config_limit})
        check_crcs(path)
        config = json.loads(read_member(path, "config.json"))
        foreign = _foreign(config)
        if foreign is not None:
            raise ValueError(
                f"{what}: the model uses {foreign}; a file alone cannot rebuild it: give the code that builds it "
                f"as path/to/file.py:callable"
            )
        _check_weights(path, read_member(path, WEIGHTS), limit)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what}: its config.json is not JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{what}: its config.json nests deeper than Python's JSON reader goes") from None
    except (Damaged, bounds.BoundsError, OSError) as e:
        raise ValueError(f"{what}: {str(e).removeprefix(f'{path}: ')}") from None
    from ..frameworks import quiet_stderr

    with quiet_stderr():
        import keras
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras's errors on a config it cannot build: said with the file
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{what}: Keras cannot rebuild it: {type(e).__name__}: {first}") from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what}: holds a {type(model).__name__}, not a keras.Model")
    return model


def _check_weights(path: Path, data: bytes, limit: bounds.Budget) -> None:
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            declared = {
                name: Tensor(tuple(int(d) for d in ds.shape), ds.dtype, _refused) for name, ds in h5_datasets(f)
            }
    except OSError as e:
        raise Damaged(f"its {WEIGHTS} is not readable HDF5 ({e})") from None
    bounds.check_sizes(path, declared, limit)


def _refused() -> np.ndarray:
    raise AssertionError("sized only: Keras reads the weights")

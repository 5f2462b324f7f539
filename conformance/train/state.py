"""The run's state file (``<variant>-<framework>.state.safetensors``): its metadata read
back with every field checked, since the file is the user's to edit and a resume must
refuse a damaged one in one line instead of using it."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import files
from ..reading import safetensors
from .settings import MAX_EPOCHS, Epoch, Settings

STATE_FORMAT = "googlenet-train-state"


@dataclass(frozen=True)
class State:
    """A state file's metadata, each field checked as its tensors are (their SHA-256):
    the file is the user's to edit, so every value is refused in one line, not used."""

    run: str
    epoch: int
    settings: dict[str, Any]
    data: str
    rng: dict[str, Any]
    history: list[Epoch]
    checkpoint: str


_HEX = re.compile(r"[0-9a-f]+")


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def _is(value: object, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def _json_field(meta: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = json.loads(meta[key])
    except KeyError:
        raise ValueError(f"no {key!r}") from None
    except (ValueError, RecursionError):
        raise ValueError(f"{key!r} is not JSON") from None
    if not isinstance(value, kind):
        names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        raise ValueError(f"{key!r} is {names.get(type(value), 'a number')} in JSON, expected {names[kind]}")
    return value


def _check_settings(saved: dict[str, Any]) -> None:
    if set(saved) != set(_FIELD_TYPES):
        raise ValueError(f"'settings' holds {sorted(saved)}, expected {sorted(_FIELD_TYPES)}")
    numbers = {"lr", "momentum", "aux_weight"}
    for key, value in saved.items():
        optional = key in {"limit", "num_classes"} and value is None
        kind: tuple[type, ...] = (int, float) if key in numbers else (str,) if key == "variant" else (int,)
        if not optional and not _is(value, kind):
            raise ValueError(
                f"'settings' {key} is {value!r}, expected {'a number' if key in numbers else kind[0].__name__}"
            )


def _check_history(history: list[Any], epoch: int) -> list[Epoch]:
    if len(history) != epoch:
        raise ValueError(f"'history' holds {len(history)} epochs, the state says {epoch}")
    fields = {f.name for f in dataclasses.fields(Epoch)}
    epochs = []
    for i, e in enumerate(history, 1):
        # a run saved before the test loss was recorded resumes without it
        if not isinstance(e, dict) or set(e) not in (fields, fields - {"test_loss"}):
            raise ValueError(f"'history' entry {i} is not an epoch (expected the keys {sorted(fields)})")
        measured = ("loss", "train_acc", "test_acc", "images_per_s", *(("test_loss",) if "test_loss" in e else ()))
        numbers = all(_is(e[k], (int, float)) for k in measured)
        if e["epoch"] != i or not numbers or not isinstance(e["checkpoint"], str):
            raise ValueError(f"'history' entry {i} is not epoch {i} with numbers and a checkpoint name")
        epochs.append(Epoch(**e))
    return epochs


def _check_rng(state: dict[str, Any]) -> None:
    """The data order's generator state: one numpy accepts for its PCG64 (what
    ``default_rng`` makes), with a 128-bit state."""
    inner = state.get("state")
    ok = (
        state.get("bit_generator") == "PCG64"
        and isinstance(inner, dict)
        and all(_is(inner.get(k), (int,)) and 0 <= inner[k] < 1 << 128 for k in ("state", "inc"))
        and _is(state.get("has_uint32"), (int,))
        and _is(state.get("uinteger"), (int,))
    )
    if not ok:
        raise ValueError("'rng' is not a PCG64 generator state")
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ValueError(f"'rng' is not a PCG64 generator state ({e})") from None


def read_state(path: Path) -> State:
    """The metadata of a state file, every field checked; OutputError naming the file
    and the field otherwise."""
    try:
        meta = safetensors(path).metadata
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"'format' is {meta.get('format')!r}, expected {STATE_FORMAT!r}")
        words = {k: meta.get(k) for k in ("run", "epoch", "data", "checkpoint")}
        for key, value in words.items():
            if not isinstance(value, str) or not (value.isdigit() if key == "epoch" else _HEX.fullmatch(value)):
                raise ValueError(f"{key!r} is {value!r}, expected {'a number' if key == 'epoch' else 'hex digits'}")
        epoch = int(meta["epoch"])
        if not 1 <= epoch <= MAX_EPOCHS:
            raise ValueError(f"'epoch' is {epoch}, expected 1 to {MAX_EPOCHS:,}")
        settings = _json_field(meta, "settings", dict)
        _check_settings(settings)
        rng = _json_field(meta, "rng", dict)
        _check_rng(rng)
        history = _check_history(_json_field(meta, "history", list), epoch)
    except OSError as e:
        raise files.OutputError(f"--resume: {path}: {files.describe_os_error(e)}") from None
    except ValueError as e:  # Damaged included
        raise files.OutputError(f"--resume: {path} is not a training state of this suite: {e}") from None
    return State(meta["run"], epoch, settings, meta["data"], rng, history, meta["checkpoint"])

"""MODEL on the command line -> the user's model: ``module:callable`` (imported from
the current directory or the installed packages) or ``path/to/file.py:callable``,
the callable called without arguments (a class, a factory, or a model object itself).
Only what the user names is imported, and only once every option was checked."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import files

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
WEIGHTS = (".pth", ".npz", ".safetensors", ".h5", ".params", ".caffemodel")  # weights without the code that runs them
SAVED = (".pt", ".ts", ".pt2", "-symbol.json")  # TorchScript, torch.export, a Gluon symbol pair


@dataclass(frozen=True)
class Source:
    """What MODEL names: a module or a Python file, and the callable in it."""

    text: str
    module: str | None
    file: Path | None
    attribute: str
    onnx: Path | None = None  # an ONNX file, run by ONNX Runtime
    saved: Path | None = None  # a TorchScript, torch.export or Gluon symbol file, read by its framework
    keras: Path | None = None  # a .keras file, rebuilt by Keras
    savedmodel: Path | None = None  # a SavedModel directory, loaded by TensorFlow


def parse(text: str) -> Source:
    """MODEL checked without importing anything; ValueError naming what is wrong."""
    where, colon, attribute = text.rpartition(":")
    if text.endswith(".onnx"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"MODEL {text}: no such file" if not path.exists() else f"MODEL {text}: not a file")
        return Source(text, None, None, "", path)
    if text.endswith(".keras"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"MODEL {text}: no such file" if not path.exists() else f"MODEL {text}: not a file")
        return Source(text, None, None, "", keras=path)
    if text.endswith(SAVED):
        return Source(text, None, None, "", saved=_saved(text))
    if not colon:
        if text.endswith(WEIGHTS):
            raise ValueError(
                f"MODEL {text}: a file of weights, not a model; give the code that builds the model as "
                f"module:callable or path/to/file.py:callable, with --weights {text}"
            )
        path = Path(text)
        if path.is_symlink() and path.is_dir():
            raise ValueError(f"MODEL {text}: a symlink; give the SavedModel directory itself")
        if path.is_dir():
            return Source(text, None, None, "", savedmodel=path)
        raise ValueError(f"MODEL {text}: expected module:callable or path/to/file.py:callable")
    if not _DOTTED.match(attribute):
        raise ValueError(f"MODEL {text}: {attribute!r} is not a Python name; expected module:callable")
    if where.endswith(".py"):
        path = Path(where)
        if not path.exists():
            raise ValueError(f"MODEL {text}: {path}: no such file")
        if not path.is_file():
            raise ValueError(f"MODEL {text}: {path}: {files.kind(path.stat().st_mode)}, not a Python file")
        return Source(text, None, path, attribute)
    if not _DOTTED.match(where):
        raise ValueError(f"MODEL {text}: {where!r} is neither a module name nor a path ending in .py")
    return Source(text, where, None, attribute)


def _saved(text: str) -> Path:
    """A saved model's file (and a symbol's parameters beside it): regular files."""
    path = Path(text)
    if not path.exists():
        raise ValueError(f"MODEL {text}: no such file")
    if not path.is_file():
        raise ValueError(f"MODEL {text}: {files.kind(path.stat().st_mode)}, not a regular file")
    if text.endswith("-symbol.json"):
        params = path.with_name(path.name.removesuffix("-symbol.json") + "-0000.params")
        if not params.is_file():
            found = files.kind(params.stat().st_mode) if params.exists() else "missing"
            raise ValueError(
                f"MODEL {text}: its parameters {params.name} are {found}; HybridBlock.export writes both files"
            )
    return path


def _module(source: Source) -> Any:
    if source.file is None:
        assert source.module is not None
        return importlib.import_module(source.module)
    path = source.file.resolve()
    name = "_conformance_verify_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def load(source: Source) -> Any:
    """Import what MODEL names and call it (or read the ONNX or .keras file it names); ValueError
    with the one line that says why not."""
    if source.onnx is not None:
        from . import taps_onnx

        return taps_onnx.read(source.onnx)
    if source.keras is not None:
        from . import keras_file

        return keras_file.read(source.keras)
    if source.savedmodel is not None:
        from . import taps_saved

        return taps_saved.read(source.savedmodel)
    if source.saved is not None:
        from . import taps_gluon, taps_script

        reader = taps_gluon.read if source.text.endswith("-symbol.json") else taps_script.read
        return reader(source.saved)
    what = source.module or str(source.file)
    try:
        target = _module(source)
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything while imported
        raise ValueError(f"MODEL {source.text}: importing {what} failed: {type(e).__name__}: {e}") from None
    for part in source.attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"MODEL {source.text}: {what} has no {source.attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"MODEL {source.text}: {source.attribute!r} is a {type(target).__name__}, not callable")
    from . import taps_keras

    model_object = (hasattr(target, "forward") and hasattr(target, "parameters")) or taps_keras.is_model(target)
    if model_object and not isinstance(target, type):
        return target  # a model object itself
    try:
        return target()
    except Exception as e:  # noqa: BLE001 - the user's constructor may raise anything
        raise ValueError(f"MODEL {source.text}: calling {source.attribute}() failed: {type(e).__name__}: {e}") from None

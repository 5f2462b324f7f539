"""The implementation packages, loaded on demand: a framework that is not installed is
reported as skipped with its install hint, never as a traceback."""

from __future__ import annotations

import importlib
from typing import Iterable

from .interface import Backend

# name -> (package, install hint); this order is also the round-trip chain's order.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("impl_torch", "pip install 'torch==2.13.0' -e '.[torch]'"),
    "keras": ("impl_keras", "pip install -e '.[keras]'"),
    "mxnet": ("impl_mxnet", "pip install -e '.[mxnet]'  (mxnet 1.9.1 needs numpy<2)"),
}


def parse(names: str | Iterable[str] | None) -> list[str]:
    """Framework names from ``"torch,keras"`` or a list; all of them for None."""
    if names is None:
        return list(FRAMEWORKS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown or not names:
        raise ValueError(f"--frameworks: unknown {unknown or names!r}; expected a comma-separated "
                         f"subset of {','.join(FRAMEWORKS)}")
    return names


def load(names: Iterable[str]) -> tuple[dict[str, Backend], dict[str, str]]:
    """(backends that imported, {skipped name: why and how to install})."""
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for name in names:
        package, hint = FRAMEWORKS[name]
        try:
            backends[name] = importlib.import_module(package)  # type: ignore[assignment]
        except (ImportError, OSError) as e:  # OSError: a wheel whose shared library is missing
            skipped[name] = f"not installed ({e.__class__.__name__}: {e}); install with: {hint}"
    return backends, skipped

"""The implementation packages, loaded on demand: a framework that is not installed is
reported as skipped with its install hint, never as a traceback."""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator

from .interface import Backend

# name -> (package, install hint); this order is also the round-trip chain's order.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("impl_torch", "pip install 'torch==2.13.0' -e '.[torch]'"),
    "keras": ("impl_keras", "pip install -e '.[keras]'"),
    "mxnet": ("impl_mxnet", "pip install -e '.[mxnet]'  (mxnet 1.9.1 needs numpy<2)"),
}


def parse(names: str | Iterable[str] | None, option: str = "--frameworks") -> list[str]:
    """Framework names from ``"torch,keras"`` or a list; all of them for None. Errors
    name ``option``."""
    if names is None:
        return list(FRAMEWORKS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown or not names:
        raise ValueError(
            f"{option}: unknown {unknown or names!r}; expected a comma-separated subset of {','.join(FRAMEWORKS)}"
        )
    return names


def load(names: Iterable[str]) -> tuple[dict[str, Backend], dict[str, str]]:
    """(backends that imported, {skipped name: why and how to install})."""
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for name in names:
        package, hint = FRAMEWORKS[name]
        try:
            backends[name] = importlib.import_module(package)
        except (ImportError, OSError) as e:  # OSError: a wheel whose shared library is missing
            skipped[name] = f"not installed ({e.__class__.__name__}: {e}); install with: {hint}"
    return backends, skipped


# What TensorFlow prints to file descriptor 2 on import, before its logging starts (so
# TF_CPP_MIN_LOG_LEVEL cannot silence it), once per process that imports it.
_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|^[IW]\d{4} [\d:. ]+\d+ (port|cpu_feature_guard)\.cc:\d+\]"
    r"|^To enable the following instructions: .*rebuild TensorFlow"
)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hold back what native libraries write to stderr while importing, then pass on
    every line but TensorFlow's known start-up notices (an error still shows)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines() if not _NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)

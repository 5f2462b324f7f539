"""The implementation packages, loaded on demand: a framework that is not installed is
reported as skipped with its install hint, never as a traceback. Whatever is imported,
in whatever order, every framework keeps every core (:func:`use_every_core`)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import cast

from .interface import Backend

# name -> (package, install hint); this order is also the round-trip chain's order.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("impl_torch", "pip install 'torch==2.13.0' -e '.[torch]'"),
    "keras": ("impl_keras", "pip install -e '.[keras]'"),
    "mxnet": ("impl_mxnet", "pip install -e '.[mxnet]'  (mxnet 1.9.1 needs numpy<2)"),
}


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (which taskset or a container
    narrows), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_every_core() -> None:
    """Call before MXNet is imported. On import, MXNet 1.9 assumes hyper-threads on x86,
    takes half the cores and calls ``omp_set_num_threads(cores // 2)``. PyTorch shares
    the process's ``libgomp.so.1``, so that also lowers ``torch.get_num_threads()``
    (2 -> 1 on a 2-core machine, whichever is imported first) and MXNet's own
    operators run on half the cores. ``MXNET_OMP_MAX_THREADS`` makes MXNet take that
    many and leave OpenMP's setting alone. A user's ``OMP_NUM_THREADS`` (which both
    honour) or ``MXNET_OMP_MAX_THREADS`` is kept."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ.setdefault("MXNET_OMP_MAX_THREADS", str(usable_cores()))


def threads() -> dict[str, int]:
    """How many threads each framework imported so far computes with, as far as it says:
    PyTorch's intra-op threads; TensorFlow's intra- and inter-op pools as configured
    (0: TensorFlow's default, one per core); the OpenMP threads MXNet's operators may
    take (``MXNET_OMP_MAX_THREADS``) and OpenMP's own limit, which MXNet lowers on
    import unless that is set."""
    found: dict[str, int] = {}
    if "torch" in sys.modules:
        found["torch"] = sys.modules["torch"].get_num_threads()
    if "tensorflow" in sys.modules:
        threading = sys.modules["tensorflow"].config.threading
        found["tensorflow intra-op"] = threading.get_intra_op_parallelism_threads()
        found["tensorflow inter-op"] = threading.get_inter_op_parallelism_threads()
    if "mxnet" in sys.modules:
        found["mxnet"] = int(os.environ.get("MXNET_OMP_MAX_THREADS", "0"))
    with contextlib.suppress(OSError):  # no OpenMP runtime loaded
        found["openmp"] = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD).omp_get_max_threads()
    return found


def parse(names: str | Iterable[str] | None, option: str = "--frameworks", extra: Iterable[str] = ()) -> list[str]:
    """Framework names (and the ``extra`` names a command also takes, such as the
    judges) from ``"torch,keras"`` or a list; every framework for None. Errors name
    ``option``."""
    if names is None:
        return list(FRAMEWORKS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    known = [*FRAMEWORKS, *extra]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"{option}: unknown {unknown or names!r}; expected a comma-separated subset of {','.join(known)}"
        )
    return names


def load(names: Iterable[str]) -> tuple[dict[str, Backend], dict[str, str]]:
    """(backends that imported, {skipped name: why and how to install}), in the order
    asked for."""
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(names):
        package, hint = FRAMEWORKS[name]
        try:
            backends[name] = cast(Backend, importlib.import_module(package))
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

"""The implementation packages, loaded on demand: a framework that is not installed is
reported as skipped with its install hint, never as a traceback. Whatever is imported,
in whatever order, every framework keeps every core (:func:`use_every_core`).

A framework is found by name, one way for all: a package registered under the entry
point group :data:`GROUP` (the built-ins are registered so, in ``pyproject.toml``, as a
third party's package would be), else a built-in's own package (a source checkout that
was not installed), else the name itself as a module path (``mypkg.backend``), which
must then satisfy :class:`conformance.interface.Backend`."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import importlib.metadata
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import cast

from .interface import Backend, breaches

GROUP = "googlenet_conformance.backends"

# The built-ins: name -> (package, install hint); the default set, in the round-trip
# chain's order.
FRAMEWORKS: dict[str, tuple[str, str]] = {
    "torch": ("impl_torch", "pip install 'torch==2.13.0' -e '.[torch]'"),
    "keras": ("impl_keras", "pip install -e '.[keras]'"),
    "mxnet": ("impl_mxnet", "pip install -e '.[mxnet]'  (mxnet 1.9.1 needs numpy<2)"),
}
# Built-ins outside the default set: checked when asked for by name.
OPTIONAL: dict[str, tuple[str, str]] = {
    "jax": ("impl_jax", "pip install -e '.[jax]'  (jax 0.7 and flax 0.11: the last to run on numpy<2)"),
    "keras-jax": ("impl_keras", "pip install -e '.[keras,jax]'"),
    "keras-torch": ("impl_keras", "pip install -e '.[keras,torch]'"),
}
# What a framework's process needs set before its package is imported: Keras 3 fixes its
# backend on import, so each of its backends is a framework of its own, in its own process.
ENVIRONMENTS: dict[str, dict[str, str]] = {
    "keras": {"KERAS_BACKEND": "tensorflow"},
    "keras-jax": {"KERAS_BACKEND": "jax"},
    "keras-torch": {"KERAS_BACKEND": "torch"},
}
_UNSET = {"KERAS_BACKEND": "tensorflow"}  # what each variable means when it is not set


def environment(name: str) -> dict[str, str]:
    """The variables framework ``name``'s process sets before importing it."""
    return dict(ENVIRONMENTS.get(name, {}))


def every_builtin() -> list[str]:
    """The built-ins, default and optional: every name ``check --frameworks`` takes without a plug-in."""
    return [*FRAMEWORKS, *OPTIONAL]


def environment_differs(name: str) -> str | None:
    """Which variable this process has set otherwise than framework ``name`` needs (as
    ``VARIABLE=the value it needs``); None where the process fits."""
    for variable, value in environment(name).items():
        if os.environ.get(variable, _UNSET.get(variable)) != value:
            return f"{variable}={value}"
    return None


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


def yield_idle_threads() -> None:
    """Call before a framework is imported (OpenMP reads it when its library loads).
    PyTorch's and MXNet's operators are OpenMP parallel regions, each ending in a barrier
    where GNU OpenMP's threads spin by default; when another job holds a core, the
    spinning thread takes time slices from the one still computing, and every operator
    waits on both (``train`` at 10-14 images/s). ``OMP_WAIT_POLICY=PASSIVE``: a thread
    that waits sleeps. A user's ``OMP_WAIT_POLICY`` is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@functools.cache
def registered() -> dict[str, str]:
    """{name: module} of every package registered under :data:`GROUP`."""
    return {ep.name: ep.value.partition(":")[0] for ep in importlib.metadata.entry_points(group=GROUP)}


def _held_to_interface(name: str, package: object) -> Backend:
    found = breaches(package)
    if found:
        raise ValueError(f"{name}: not a conformance backend: it {'; it '.join(found)}")
    return cast(Backend, package)


def plugin(name: str) -> Backend:
    """The package ``name`` names (registered, or a module path), imported and held to
    the interface before any work: ValueError with one line naming what is missing or
    wrong."""
    try:
        package = importlib.import_module(registered().get(name, name))
    except ImportError as e:
        raise ValueError(f"{name}: cannot import it as a framework ({type(e).__name__}: {e})") from None
    return _held_to_interface(name, package)


def parse(names: str | Iterable[str] | None, option: str = "--frameworks", extra: Iterable[str] = ()) -> list[str]:
    """Framework names (and the ``extra`` names a command also takes, such as the
    judges) from ``"torch,keras"`` or a list; the built-ins for None. A name that is
    neither built in, registered nor extra is a plug-in's module path, imported and
    checked here (:func:`plugin`). Errors name ``option``."""
    if names is None:
        return list(FRAMEWORKS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    known = [*FRAMEWORKS, *OPTIONAL, *(n for n in registered() if n not in FRAMEWORKS and n not in OPTIONAL), *extra]
    unknown = [n for n in names if n not in known and not _MODULE.match(n)]
    if unknown or not names:
        raise ValueError(
            f"{option}: unknown {unknown or names!r}; expected a comma-separated subset of {','.join(known)}, "
            "or a plug-in's module path"
        )
    for name in names:
        if name not in known:
            try:
                plugin(name)
            except ValueError as e:
                raise ValueError(f"{option}: {e}") from None
    return names


def load(names: Iterable[str]) -> tuple[dict[str, Backend], dict[str, str]]:
    """(backends that imported, {skipped name: why and how to install}), in the order
    asked for. A built-in (default or optional) that is not installed is skipped with
    its install hint; another registered or named plug-in that cannot be imported or
    breaks the interface raises ValueError (it was asked for by name)."""
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(names):
        if name not in FRAMEWORKS and name not in OPTIONAL:
            backends[name] = plugin(name)
            continue
        package, hint = {**FRAMEWORKS, **OPTIONAL}[name]
        needs = environment_differs(name)
        if needs:
            skipped[name] = f"needs {needs} before its import: a process of its own (check without --in-process)"
            continue
        yield_idle_threads()
        try:
            found = importlib.import_module(registered().get(name, package))
        except (ImportError, OSError) as e:  # OSError: a wheel whose shared library is missing
            skipped[name] = f"not installed ({e.__class__.__name__}: {e}); install with: {hint}"
            continue
        backends[name] = _held_to_interface(name, found)
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

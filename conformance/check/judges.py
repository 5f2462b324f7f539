"""Independent judges: a framework's model exported to ONNX and run by ONNX Runtime.

ONNX Runtime shares no kernels with PyTorch, TensorFlow or MXNet, so its agreement
with the reference does not rest on any of the three (only on the exporter, which is
why each exporter is its own judge). A judge is not a framework: it runs inference
only. The harness compares its stages with the reference like a framework's, but
neither counts its parameters, round-trips nor trains it.

A judge's model is its source framework's (``build``, ``from_canonical``); on the
first run at an input shape it is exported (``to_onnx``: a graph whose outputs are
the stages) and loaded into an ONNX Runtime session on every core, both cached per
model, shape and outputs (``interface.compiled``). Loading weights drops the sessions,
whose graphs hold the old weights as constants.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from typing import Any, cast

import numpy as np

from .. import frameworks, interface
from ..frameworks import usable_cores

# name -> the framework whose ONNX export ONNX Runtime runs. Checked only when asked for:
# exporting takes seconds per shape.
JUDGES: dict[str, str] = {"onnx": "torch", "onnx-keras": "keras", "onnx-mxnet": "mxnet"}
ONNX_HINT = "pip install -e '.[onnx]'"
MODE = "onnxruntime"
# What each exporter needs beyond the onnx extra's onnx and onnxruntime.
EXPORTER_NEEDS = {"torch": "onnxscript", "keras": "tf2onnx", "mxnet": "onnx"}


class Unavailable(ImportError):
    """A judge that cannot run here: why, and how to install what it lacks."""


def session(graph: bytes) -> Any:
    """An ONNX Runtime session on the CPU with every core, as a user would serve it
    (all graph optimisations on: ONNX Runtime folds BatchNorm into the convolutions)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cores()  # its default counts physical cores only
    options.log_severity_level = 3  # errors only: its notes on constant folding are not results
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxJudge:
    """ONNX Runtime on ``source``'s ONNX export: the parts of the interface the harness
    needs (``name``, ``MODES``, ``build``, ``from_canonical``, ``forward``, ``stages``,
    ``version``)."""

    judge = True
    MODES = (MODE,)

    def __init__(self, name: str, source: interface.Backend) -> None:
        self.name, self.source = name, source

    def version(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__} on {self.source.name}'s ONNX export"

    def build(self, variant: Any, **options: Any) -> Any:
        return self.source.build(variant, **options)

    def from_canonical(self, model: Any, params: Mapping[str, np.ndarray]) -> None:
        self.source.from_canonical(model, params)
        interface.forget_compiled(model)  # exported graphs hold the old weights

    def forward(self, model: Any, x: np.ndarray, aux: bool = False, mode: str = MODE) -> Any:
        """Logits (or logits, aux2, aux1), as the frameworks' ``forward``."""
        return interface.forward(self._run, self.MODES, model, x, aux, mode)

    def stages(self, model: Any, x: np.ndarray, mode: str = MODE) -> dict[str, np.ndarray]:
        """Every stage the exported graph returns, NCHW, as the frameworks' ``stages``."""
        return interface.stages(self._run, self.MODES, model, x, mode)

    def export(self, model: Any, shape: tuple[int, ...], with_aux: bool, every_stage: bool) -> bytes:
        """The source's ONNX graph; :class:`interface.Unsupported` with the exporter's own
        reason where it cannot export the model."""
        try:
            return self.source.to_onnx(model, shape, with_aux, every_stage)
        except Exception as e:
            reason = " ".join(str(e).split())  # one line: exporters pad their messages
            raise interface.Unsupported(f"{self.source.name}'s ONNX exporter: {type(e).__name__}: {reason}") from e

    def _run(self, model: Any, x: np.ndarray, with_aux: bool, mode: str, every_stage: bool) -> dict[str, np.ndarray]:
        key = (self.name, x.shape, with_aux, every_stage)
        run = interface.compiled(model, key, lambda: session(self.export(model, x.shape, with_aux, every_stage)))
        names = interface.output_names(model.plan, with_aux, every_stage)
        return dict(zip(names, run.run(None, {run.get_inputs()[0].name: x}), strict=True))


def missing(name: str) -> str | None:
    """Why judge ``name`` cannot run (a package it needs is not installed), or None."""
    for package in ("onnxruntime", "onnx", EXPORTER_NEEDS[JUDGES[name]]):
        if importlib.util.find_spec(package) is None:
            return f"not installed ({package} is missing); install with: {ONNX_HINT}"
    return None


def load(name: str, source: interface.Backend | None, source_skipped: str | None = None) -> OnnxJudge:
    """Judge ``name`` on its source framework's implementation; :class:`Unavailable`
    (with the reason and install hint) when it or its exporter is not installed."""
    if source is None:
        raise Unavailable(f"needs {JUDGES[name]}, which is {source_skipped}")
    why = missing(name)
    if why:
        raise Unavailable(why)
    return OnnxJudge(name, source)


def load_with_judges(names: Iterable[str]) -> tuple[dict[str, interface.Backend], dict[str, str]]:
    """:func:`conformance.frameworks.load` for frameworks and judges alike: a judge
    loads the framework it exports from, which is then returned only if it was asked
    for."""
    names = list(dict.fromkeys(names))
    asked = [n for n in names if n in JUDGES]
    sources = dict.fromkeys([*(n for n in names if n not in JUDGES), *(JUDGES[n] for n in asked)])
    backends, skipped = frameworks.load(sources)
    for name in asked:
        try:
            # the parts of a backend the harness uses (interface.is_judge)
            backends[name] = cast(interface.Backend, load(name, backends.get(JUDGES[name]), skipped.get(JUDGES[name])))
        except Unavailable as e:
            skipped[name] = str(e)
    keep = [n for n in names if n in backends or n in skipped]
    return {n: backends[n] for n in keep if n in backends}, {n: skipped[n] for n in keep if n in skipped}

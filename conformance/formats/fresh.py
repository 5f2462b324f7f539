"""Load a deployment file in a fresh process, as its users load it, and run it.

Run by path with ``python -I`` (``conformance.formats.deploy.run_fresh``): it imports
nothing of this suite, and blocks the suite's packages (an editable install would
put them on ``sys.path``), so what the runtime loads is the file alone.

    python -I fresh.py KIND PATH INPUT.npy OUTPUT.npz [--aux]

KIND: ``onnx`` (onnxruntime), ``torchscript`` (torch.jit.load), ``exported``
(torch.export.load), ``savedmodel`` (tf.saved_model.load), ``gluon``
(a SymbolBlock of the graph, its input declared float32; PATH is the ``-symbol.json``),
``keras-builtin`` (``keras.saving.load_model`` on ``KERAS_BACKEND``'s backend). INPUT is NCHW float32.
OUTPUT holds ``out:NAME`` for each output (``logits``, ``aux2``, ``aux1``) and
``w:NAME`` for each named weight the runtime exposes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

SUITE = ("conformance", "impl_torch", "impl_keras", "impl_mxnet", "impl_jax")


class _Blocked(importlib.abc.MetaPathFinder):
    """Refuses the suite's packages: a loader that needed them would fail here."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SUITE:
            raise ImportError(f"{name} is blocked: the file must load without this suite's code")
        return None


def _isolate() -> None:
    sys.path[:] = [p for p in sys.path if not any((Path(p or ".") / s).is_dir() for s in SUITE)]
    sys.meta_path.insert(0, _Blocked())


def _onnx(path: str, x, aux: bool) -> tuple[dict, dict]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: x})
    return dict(zip(names, values, strict=True)), {}


def _torchscript(path: str, x, aux: bool) -> tuple[dict, dict]:
    import torch

    module = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        if aux:  # in eval the forward returns the logits alone, as torchvision's
            out = module.forward_stages(torch.from_numpy(x), with_aux=True)
            outputs = {k: v.numpy() for k, v in out.items() if k in ("logits", "aux1", "aux2")}
        else:
            outputs = {"logits": module(torch.from_numpy(x)).numpy()}
    return outputs, {k: v.numpy() for k, v in module.state_dict().items()}


def _exported(path: str, x, aux: bool) -> tuple[dict, dict]:
    import torch

    program = torch.export.load(path)
    with torch.no_grad():
        logits = program.module()(torch.from_numpy(x))
    return {"logits": logits.numpy()}, {k: v.detach().numpy() for k, v in program.state_dict.items()}


def _savedmodel(path: str, x, aux: bool) -> tuple[dict, dict]:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    out = loaded.serve(tf.constant(x.transpose(0, 2, 3, 1)))  # Keras models take NHWC
    outputs = out if isinstance(out, dict) else {"logits": out}
    return {k: v.numpy() for k, v in outputs.items()}, {}


def _gluon(path: str, x, aux: bool) -> tuple[dict, dict]:
    import numpy

    numpy.bool = bool  # type: ignore[attr-defined]  # MXNet 1.9 uses the alias numpy 1.24 removed
    import mxnet as mx

    params = path.removesuffix("-symbol.json") + "-0000.params"
    # The input declared float32: SymbolBlock.imports with a params file leaves its type
    # open and warns that it "cannot decide" it.
    block = mx.gluon.SymbolBlock(mx.sym.load(path), mx.sym.var("data", dtype="float32"))
    block.collect_params().load(params)
    logits = block(mx.nd.array(x)).asnumpy()
    mx.nd.waitall()  # the inference call re-lays conv weights in place, unwaited (apache/mxnet#15555)
    return {"logits": logits}, {p.name: p.data().asnumpy() for p in block.collect_params().values()}


def _keras_builtin(path: str, x, aux: bool) -> tuple[dict, dict]:
    import keras  # the backend is KERAS_BACKEND's, as the reader's would be

    model = keras.saving.load_model(path)  # safe_mode: built-in layers, no code in the file
    out = model(x.transpose(0, 2, 3, 1), training=False)  # Keras models take NHWC
    outputs = out if isinstance(out, dict) else {"logits": out}
    weights = {v.path: keras.ops.convert_to_numpy(v.value) for v in model.weights}
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}, weights


def main(argv: list[str]) -> int:
    kind, path, source, target = argv[:4]
    _isolate()
    import numpy as np

    x = np.load(source)
    run = {"onnx": _onnx, "torchscript": _torchscript, "exported": _exported, "savedmodel": _savedmodel}
    run = {**run, "gluon": _gluon, "keras-builtin": _keras_builtin}
    outputs, weights = run[kind](path, x, "--aux" in argv)
    np.savez(
        target,
        **{f"out:{k}": np.asarray(v) for k, v in outputs.items()},
        **{f"w:{k}": np.asarray(v) for k, v in weights.items()},
    )
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in SUITE)
    if loaded:  # cannot happen with the blocker; a claim worth checking
        print(f"the suite's modules were loaded: {loaded}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""GoogLeNet in PyTorch: the shared interface (see ``conformance.interface``)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import types
import warnings
from collections.abc import Callable

import numpy as np
import torch

from conformance import frameworks, interface
from conformance.canonical import default_params
from conformance.spec import Variant, resolve

from .engine import weights_version
from .layers import BasicConv2d
from .model import GoogLeNet
from .train import Trainer
from .weights import from_canonical, to_canonical

name = "torch"
INTERFACE_VERSION = interface.VERSION
__all__ = [
    "MODES",
    "GoogLeNet",
    "Trainer",
    "build",
    "count_params",
    "forward",
    "from_canonical",
    "stages",
    "to_canonical",
    "to_exported_program",
    "to_onnx",
    "to_onnx_deployable",
    "to_torchscript",
    "version",
]


# channels_last: NHWC activations and weights, the layout oneDNN's CPU convolutions run
# natively (NCHW ones are reordered at every conv); under inference_mode nothing is
# recorded for autograd. The default: what a PyTorch user picks for CPU inference.
# compile: that channels-last model through ``torch.compile`` (TorchDynamo's graph,
# Inductor's C++ kernels, built with the machine's C compiler). An extra: its first call
# compiles for tens of seconds, and a new input shape compiles again; ``check --modes
# all`` checks it.
MODES = ("channels_last", interface.EAGER, "compile")

if "mxnet" in sys.modules and "OMP_NUM_THREADS" not in os.environ:
    # MXNet imported earlier without conformance.frameworks.use_every_core: it lowered
    # the OpenMP threads PyTorch shares; give PyTorch every core back.
    torch.set_num_threads(max(torch.get_num_threads(), frameworks.usable_cores()))


def version() -> str:
    return f"torch {torch.__version__}"


def build(
    variant: str | Variant,
    num_classes: int | None = None,
    aux_logits: bool = False,
    transform_input: bool = False,
    dtype: str = "float32",
) -> GoogLeNet:
    """A GoogLeNet in eval mode holding the suite's initial weights (torchvision's
    initialisation, ``conformance.canonical.default_params``). The options are
    ``conformance.spec.resolve``'s; ``dtype``: float64 for the training-parity check."""
    model = GoogLeNet(resolve(variant, num_classes, aux_logits, transform_input)).to(getattr(torch, dtype))
    from_canonical(model, default_params(model.plan))
    return model.eval()


def _fold_batchnorm(net: GoogLeNet) -> None:
    """Each BatchNorm folded into the conv before it, as ONNX Runtime's and oneDNN's
    inference graphs do: the conv's weights times gamma / sqrt(var + eps), its bias
    beta + (bias - mean) * gamma / sqrt(var + eps), so inference makes one pass over each
    map where it made two. Computed in float64, so the fold rounds once, at the end.
    Only for a copy that runs inference: the folded net has no statistics to update."""
    with torch.no_grad():
        for unit in net.modules():
            if not isinstance(unit, BasicConv2d) or unit.bn is None:
                continue
            bn, conv = unit.bn, unit.conv
            assert bn.running_mean is not None and bn.running_var is not None  # the spec's BatchNorm tracks them
            gamma = torch.ones_like(bn.running_var) if bn.weight is None else bn.weight
            scale = gamma.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            bias = torch.zeros_like(bn.running_mean) if conv.bias is None else conv.bias
            beta = torch.zeros_like(bn.running_mean) if bn.bias is None else bn.bias
            folded = beta.double() + (bias.double() - bn.running_mean.double()) * scale
            conv.weight.copy_(conv.weight.double() * scale[:, None, None, None])
            conv.bias = torch.nn.Parameter(folded.to(conv.weight.dtype), requires_grad=False)
            unit.bn = None


class _ChannelsLast:
    """The model with its weights in channels-last too (oneDNN's convolutions read NHWC
    kernels, and a model whose weights stay NCHW has them reordered at every call) and
    each BatchNorm folded into its conv. A copy of the model, so the model itself (and
    its eager mode) keeps its layout and BatchNorms; made again whenever the model's
    weights changed (PyTorch counts every in-place write)."""

    def __init__(self) -> None:
        self.model: GoogLeNet | None = None
        self.seen: tuple[tuple[int, int], ...] = ()

    def __call__(self, model: GoogLeNet) -> GoogLeNet:
        seen = weights_version(model)
        if self.model is None or seen != self.seen:
            # A new module, not a deepcopy: nothing of the model but its weights (no hooks).
            net = GoogLeNet(model.plan).to(next(model.parameters()).dtype)
            net.load_state_dict(model.state_dict())
            _fold_batchnorm(net)
            self.model = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.seen = seen
        return self.model


def _outputs(net: GoogLeNet, x: torch.Tensor, names: tuple[str, ...], with_aux: bool) -> tuple[torch.Tensor, ...]:
    out = net.forward_stages(x, with_aux=with_aux)
    return tuple(out[k] for k in names)


def _compiled_outputs() -> Callable[..., tuple[torch.Tensor, ...]]:
    """``torch.compile`` of :func:`_outputs` with a code object of its own: TorchDynamo
    keeps what it compiled, and its limit of recompilations (past which it runs the
    function uncompiled, silently), per code object, so each model and outputs get
    their own instead of sharing one across every variant and size the check runs. The
    model is an argument, not held: a new copy of the same structure reuses the graph."""
    fresh = types.FunctionType(_outputs.__code__.replace(), _outputs.__globals__, _outputs.__name__)
    return torch.compile(fresh, fullgraph=True)  # a graph break would run part of it eagerly: refuse


def _compile(run: Callable[..., tuple[torch.Tensor, ...]], *args: object) -> tuple[torch.Tensor, ...]:
    """``run(*args)``, with what TorchDynamo or Inductor cannot do said as
    :class:`conformance.interface.Unsupported` (reported as skipped, with the reason)."""
    import torch._dynamo.exc as dynamo_errors

    try:
        return run(*args)
    except (dynamo_errors.Unsupported, dynamo_errors.BackendCompilerFailed) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise interface.Unsupported(f"torch.compile cannot compile it: {first}") from e


def _run(model: GoogLeNet, x: np.ndarray, with_aux: bool, mode: str, every_stage: bool) -> dict[str, np.ndarray]:
    names = interface.output_names(model.plan, with_aux, every_stage)
    inputs = torch.from_numpy(x)
    net = model
    if mode in ("channels_last", "compile"):
        net = interface.compiled(model, "channels_last", _ChannelsLast)(model)  # the one copy both modes run
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    was_training = net.training
    try:
        with torch.inference_mode():
            if mode == "compile":
                run = interface.compiled(model, (mode, names, with_aux), _compiled_outputs)
                out = dict(zip(names, _compile(run, net.eval(), inputs, names, with_aux), strict=True))
            else:
                out = net.eval().forward_stages(inputs, with_aux=with_aux)
    finally:
        net.train(was_training)
    # NCHW whatever the memory layout (a copy for channels_last; each freed once copied)
    return {k: out.pop(k).contiguous().numpy() for k in names}


def forward(model: GoogLeNet, x: np.ndarray, aux: bool = False, mode: str = MODES[0]):
    """Logits (or logits, aux2, aux1) as numpy, with inference behaviour."""
    return interface.forward(_run, MODES, model, x, aux, mode)


def stages(model: GoogLeNet, x: np.ndarray, mode: str = MODES[0]) -> dict[str, np.ndarray]:
    """Every stage's activation (NCHW), the pooled features, the logits and the aux logits
    where the input size admits them."""
    return interface.stages(_run, MODES, model, x, mode)


class _Outputs(torch.nn.Module):
    """The model with a tuple of named outputs: what an exported graph returns."""

    def __init__(self, net: GoogLeNet, names: tuple[str, ...], with_aux: bool) -> None:
        super().__init__()
        self.net, self.names, self.with_aux = net, names, with_aux

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net.forward_stages(x, with_aux=self.with_aux)
        return tuple(out[k] for k in self.names)


def to_onnx(model: GoogLeNet, shape: tuple[int, ...], with_aux: bool, every_stage: bool) -> bytes:
    """The model in inference mode as an ONNX graph for NCHW inputs of ``shape``, whose
    outputs are ``interface.output_names``: ``torch.onnx.export`` with the dynamo
    exporter (the TorchScript one refuses torchvision's adaptive aux pool, as 4 does not
    divide 14). Needs the ``onnx`` extra."""
    names = interface.output_names(model.plan, with_aux, every_stage)
    was_training = model.training
    quiet = logging.getLogger("torch.onnx")  # e.g. that torchvision's ops are not registered
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # The exporter's progress lines, and torch.export's deprecation notices about itself.
        with contextlib.redirect_stdout(None), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                _Outputs(model, names, with_aux).eval(),
                (torch.zeros(shape),),
                dynamo=True,
                verbose=False,
                input_names=["x"],
                output_names=list(names),
            )
    finally:
        quiet.setLevel(level)
        model.train(was_training)
    assert program is not None  # dynamo=True always returns the program
    return program.model_proto.SerializeToString()


@contextlib.contextmanager
def _quiet_export():
    """The exporters' progress lines, torch.export's notices about itself, and
    symbolic shapes' warnings that it cannot solve a pool's size inequality (it then
    keeps the size open, with a runtime check)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(None), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _open_size() -> dict[str, dict[int, object]]:
    """Batch and spatial size left open (Dim.AUTO: open unless the model fixes it, as
    a flattened classifier does)."""
    return {"x": {0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}


def _example(model: GoogLeNet) -> torch.Tensor:
    p = model.plan
    return torch.zeros(2, p.in_channels, p.input_size, p.input_size)


def to_onnx_deployable(model: GoogLeNet) -> bytes:
    """The model as a deployment ONNX file: outputs ``logits`` (then ``aux2``, ``aux1``
    when it has aux heads, as torchvision returns them), batch and size open, every parameter an initializer under
    its canonical name and BatchNorm kept as BatchNormalization (``optimize=False``:
    the optimiser folds BatchNorm into the convolutions, after which the weights cannot
    be separated again). The dynamo exporter names initializers by the module path of
    the wrapper that adds the aux outputs (``net.``), removed here."""
    import onnx

    names = ("logits", *(head.name for head in reversed(model.plan.aux)))  # torchvision's order: aux2, aux1
    was_training = model.training
    try:
        with _quiet_export():
            program = torch.onnx.export(
                _Outputs(model, names, bool(model.plan.aux)).eval(),
                (_example(model),),
                dynamo=True,
                optimize=False,
                verbose=False,
                input_names=["x"],
                output_names=list(names),
                dynamic_shapes=_open_size(),
            )
    finally:
        model.train(was_training)
    assert program is not None  # dynamo=True always returns the program
    proto = program.model_proto
    renamed = {i.name: i.name.removeprefix("net.") for i in proto.graph.initializer}
    for init in proto.graph.initializer:
        init.name = renamed[init.name]
    for node in proto.graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
    for value in (*proto.graph.input, *proto.graph.value_info):
        value.name = renamed.get(value.name, value.name)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def to_torchscript(model: GoogLeNet) -> bytes:
    """``torch.jit.script`` of the model in eval mode, saved: any batch and size, and
    ``forward_stages(x, with_aux=True)`` gives the aux logits."""
    was_training = model.training
    try:
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(model.eval()), buffer)
    finally:
        model.train(was_training)
    return buffer.getvalue()


def to_exported_program(model: GoogLeNet) -> bytes:
    """``torch.export`` of the model in eval mode (it returns the logits, as
    torchvision's does in eval: the aux heads are not in the graph), batch and size
    open, saved with ``torch.export.save``."""
    was_training = model.training
    try:
        with _quiet_export():
            program = torch.export.export(model.eval(), (_example(model),), dynamic_shapes=_open_size())
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
    finally:
        model.train(was_training)
    return buffer.getvalue()


def count_params(model: GoogLeNet) -> tuple[int, int]:
    """(trainable parameters, BatchNorm running statistics), counted by PyTorch."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable, stats

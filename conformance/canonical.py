"""The canonical checkpoint: names and layouts every framework adapter converts to.

Names are torchvision's state_dict keys (without ``num_batches_tracked``); a variant
without BatchNorm uses the same names with ``conv.bias`` and no ``bn``. Layouts are
PyTorch's: conv kernels OIHW, dense weights (out, in), a flattened map read in
(C, H, W) order. Files are safetensors: no pickle, so loading runs no code.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .files import atomic_write
from .reading import Damaged, safetensors, tensor_digest
from .spec import ConvUnit, Dense, Plan

Params = dict[str, np.ndarray]

BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
# TF-slim's BatchNorm has no scale: its units have no ``bn.weight``.
BN_SUFFIXES_NO_SCALE = BN_SUFFIXES[1:]
# Gluon's structural names (what save_parameters writes) are the canonical names, but
# BatchNorm calls its scale and shift gamma and beta.
GLUON_BN = {".bn.weight": ".bn.gamma", ".bn.bias": ".bn.beta"}


class CanonicalError(ValueError):
    """Canonical parameters that do not fit a plan (names, shapes, dtypes)."""


def conv_key(u: ConvUnit) -> str:
    """Where a unit's conv lives: ``<name>.conv`` (torchvision's BasicConv2d) or, for a
    plain conv, ``<name>`` itself."""
    return u.name if u.plain else f"{u.name}.conv"


def gluon_name(key: str) -> str:
    """Canonical key -> Gluon structural name (``conv1.bn.weight`` -> ``conv1.bn.gamma``)."""
    for ours, theirs in GLUON_BN.items():
        if key.endswith(ours):
            return key[: -len(ours)] + theirs
    return key


# Flax's name for a variable -> the canonical suffix: every module sits at its canonical
# path (impl_jax), so a Flax variable's path is its canonical key with Flax's name for
# the variable at the end (BatchNorm's ``scale`` is PyTorch's ``weight``).
FLAX_SUFFIXES = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean", "var": "running_var"}


def flax_path(key: str, ndim: int) -> tuple[str, ...]:
    """Canonical key -> the Flax variable's path (``conv1.bn.weight``, 1-D -> ``('conv1',
    'bn', 'scale')``; a conv or dense ``weight`` has two or more dimensions: ``kernel``)."""
    *module, suffix = key.split(".")
    names = {"weight": "kernel" if ndim > 1 else "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
    return (*module, names[suffix])


def flax_key(path: tuple[object, ...]) -> str:
    """``('inception3a', 'branch2', '0', 'conv', 'kernel')`` -> ``inception3a.branch2.0.conv.weight``;
    KeyError for a path whose last part is not a Flax weight's name."""
    *module, variable = (str(part) for part in path)
    return ".".join([*module, FLAX_SUFFIXES[variable]])


def to_flax(canonical: np.ndarray) -> np.ndarray:
    """A canonical tensor in Flax's layout (a view): conv OIHW -> HWIO, dense (out, in) -> (in, out)."""
    if canonical.ndim == 4:
        return canonical.transpose(2, 3, 1, 0)
    return canonical.T if canonical.ndim == 2 else canonical


def from_flax(value: np.ndarray) -> np.ndarray:
    """:func:`to_flax` undone: HWIO -> OIHW, (in, out) -> (out, in)."""
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value.T if value.ndim == 2 else value


def conv_shapes(u: ConvUnit) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {f"{conv_key(u)}.weight": (u.out_channels, u.in_channels, u.kernel, u.kernel)}
    if u.bias:
        shapes[f"{conv_key(u)}.bias"] = (u.out_channels,)
    if u.norm is not None:
        shapes.update({f"{u.name}.bn.{s}": (u.out_channels,) for s in bn_suffixes(u)})
    return shapes


def bn_suffixes(u: ConvUnit) -> tuple[str, ...]:
    """The BatchNorm keys of a unit: ``weight`` (the scale) only where its norm has one."""
    return BN_SUFFIXES if u.norm is None or u.norm.scale else BN_SUFFIXES_NO_SCALE


def dense_shapes(d: Dense) -> dict[str, tuple[int, ...]]:
    return {f"{d.name}.weight": (d.out_features, d.in_features), f"{d.name}.bias": (d.out_features,)}


def canonical_shapes(p: Plan) -> dict[str, tuple[int, ...]]:
    """Every canonical key and its shape, in torchvision's state_dict order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for u in p.units():
        shapes.update(conv_shapes(u) if isinstance(u, ConvUnit) else dense_shapes(u))
    return shapes


def validate(p: Plan, params: Mapping[str, np.ndarray]) -> None:
    """Strict check before loading: every key present, none extra, shapes and dtype
    exact. The error names each offending key with both shapes."""
    expected = canonical_shapes(p)
    problems = [f"missing key {k!r} (expected shape {s})" for k, s in expected.items() if k not in params]
    problems += [f"unexpected key {k!r} (shape {_shape(v)})" for k, v in params.items() if k not in expected]
    for key, shape in expected.items():
        value = params.get(key)
        if value is None:
            continue
        if not isinstance(value, np.ndarray):
            problems.append(f"{key!r}: expected a numpy.ndarray, got {type(value).__name__}")
        elif value.shape != shape:
            problems.append(f"shape mismatch at {key!r}: expected {shape}, got {value.shape}")
        elif value.dtype != np.float32:
            problems.append(f"{key!r}: expected float32, got {value.dtype}")
    if problems:
        head = f"canonical parameters do not fit {describe(p)}: "
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CanonicalError(head + "; ".join(problems[:8]) + more)


def describe(p: Plan) -> str:
    return f"{p.variant.name} (num_classes={p.num_classes}, aux_logits={p.options.aux_logits})"


def _shape(value: object) -> object:
    return getattr(value, "shape", type(value).__name__)


def from_state_dict(state: Mapping[str, object]) -> Params:
    """A PyTorch or torchvision state_dict as canonical parameters: ``num_batches_tracked``
    (a training-step counter, not a weight) dropped, tensors as numpy arrays."""
    return {
        k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }


def default_params(p: Plan, seed: int = 0) -> Params:
    """The weights every framework's ``build`` starts from, as torchvision initialises
    GoogLeNet: conv and dense weights normal with std 0.01 (torchvision truncates at
    +-2, two hundred standard deviations out), biases and BatchNorm shifts 0, BatchNorm
    scales 1, running means 0 and variances 1. Drawn here once for every framework, so
    a freshly built model is the same network in all three."""
    # The three frameworks build the same plan one after the other (the check): drawn
    # once, copied for each (a copy costs a tenth of the draw).
    return {k: v.copy() for k, v in _default_params(p, seed).items()}


@functools.lru_cache(maxsize=1)
def _default_params(p: Plan, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    params: Params = {}
    for key, shape in canonical_shapes(p).items():
        if key.endswith((".bn.weight", ".running_var")):
            params[key] = np.ones(shape, np.float32)
        elif key.endswith(".weight"):
            params[key] = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
        else:
            params[key] = np.zeros(shape, np.float32)
    return params


def random_params(p: Plan, seed: int = 0, training: bool = False) -> Params:
    """Seeded weights that exercise every parameter and keep activations O(1).

    BatchNorm running variances are small (1e-3 .. 1e-2, comparable to eps 1e-3) with
    the scale compensating, so a wrong epsilon changes each layer's gain by up to 40%.
    ``training``: BatchNorm scales of 0.5 .. 1.5 instead, for batch statistics (the
    training-parity check). With the compensated scales (about 0.1) a shift of 0.1
    pushes whole channels below zero across the batch, and the next BatchNorm then
    normalises little but round-off.
    """
    rng = np.random.default_rng(seed)
    params: Params = {}
    for key, shape in canonical_shapes(p).items():
        if len(shape) == 4:  # conv kernels. He init: keeps the activation scale through ReLUs
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif key.endswith(".bn.running_var"):
            value = rng.uniform(1e-3, 1e-2, shape)
        elif key.endswith(".bn.weight"):
            value = rng.uniform(0.5, 1.5, shape)  # scaled by sqrt(var + eps) below
        elif key.endswith(".weight"):  # dense (out, in)
            value = rng.standard_normal(shape) / np.sqrt(shape[1])
        else:  # biases, BN shifts and running means
            value = rng.standard_normal(shape) * 0.1
        params[key] = value.astype(np.float32)
    for u in p.conv_units() if not training else ():
        if u.norm is not None:
            var = params[f"{u.name}.bn.running_var"].astype(np.float64)
            if u.norm.scale:
                gain = params[f"{u.name}.bn.weight"] * np.sqrt(var + u.norm.eps)
                params[f"{u.name}.bn.weight"] = gain.astype(np.float32)
            else:  # no scale to compensate with (TF-slim's): the kernel and the mean carry the gain
                gain = np.sqrt(var + u.norm.eps)
                w, mean = f"{conv_key(u)}.weight", f"{u.name}.bn.running_mean"
                params[w] = (params[w] * gain[:, None, None, None]).astype(np.float32)
                params[mean] = (params[mean] * gain).astype(np.float32)
    return params


def initial_params(p: Plan, seed: int = 0) -> Params:
    """Weights to train from, the same in every framework: PyTorch's default
    initialisation, which d2l and Liu's lecture train from (conv and dense weights and biases
    uniform in +-1 / sqrt(fan-in), BatchNorm scale 1 and shift 0, running mean 0 and
    variance 1). Each framework's own default differs, and torchvision's std 0.01
    stalls Liu's nets, which have no BatchNorm to restore the scale."""
    rng = np.random.default_rng(seed)
    shapes = canonical_shapes(p)
    params: Params = {}
    for key, shape in shapes.items():
        if key.endswith((".bn.weight", ".running_var")):
            value = np.ones(shape)
        elif key.endswith((".bn.bias", ".running_mean")):
            value = np.zeros(shape)
        else:  # a weight, or a bias bounded by its weight's fan-in
            weight = shapes[key[: -len("bias")] + "weight"] if key.endswith(".bias") else shape
            bound = 1.0 / np.sqrt(np.prod(weight[1:]))
            value = rng.uniform(-bound, bound, shape)
        params[key] = value.astype(np.float32)
    return params


def to_bytes(params: Mapping[str, np.ndarray], p: Plan | None = None, extra: Mapping[str, str] | None = None) -> bytes:
    """Canonical parameters as a safetensors file (validated against ``p`` when given).
    The metadata holds the variant, its options and ``sha256``, a digest of the tensors
    (:func:`conformance.reading.tensor_digest`) that :func:`load` checks, so a file
    changed after it was written is refused instead of read."""
    from safetensors.numpy import save as st_save

    metadata = {"format": "googlenet-canonical", **(extra or {})}
    if p is not None:
        validate(p, params)
        metadata.update({"variant": p.variant.name, **{k: str(v) for k, v in p.options.asdict().items()}})
    arrays = {k: np.ascontiguousarray(v) for k, v in params.items()}
    metadata["sha256"] = tensor_digest(arrays)
    return bytes(st_save(arrays, metadata=metadata))


def save(
    params: Mapping[str, np.ndarray],
    path: str | Path,
    p: Plan | None = None,
    overwrite: bool = False,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Save canonical parameters as safetensors (:func:`to_bytes`), atomically; an
    existing file only with ``overwrite``."""
    return atomic_write(path, to_bytes(params, p, extra), overwrite=overwrite)


def load(path: str | Path, p: Plan | None = None) -> Params:
    """Read a canonical safetensors file into numpy arrays. Declared sizes are checked
    against the file before reading and, with ``p``, against the plan's shapes; a
    ``sha256`` in the metadata must match the tensors (CanonicalError otherwise)."""
    return load_with_metadata(path, p)[0]


def load_with_metadata(path: str | Path, p: Plan | None = None) -> tuple[Params, dict[str, str]]:
    path = Path(path)
    try:
        header = safetensors(path)
    except Damaged as e:
        raise CanonicalError(f"{path}: not a readable safetensors file: {e}") from None
    if p is not None:
        expected = canonical_shapes(p)
        wrong = [
            f"{k!r} declares {t.shape}, expected {expected.get(k, 'no such key')}"
            for k, t in header.tensors.items()
            if expected.get(k) != t.shape
        ]
        if wrong:
            raise CanonicalError(f"{path}: does not fit {describe(p)}: " + "; ".join(wrong[:4]))
    bad = [f"{k!r} is {t.problem}" for k, t in header.tensors.items() if t.problem]
    if bad:
        raise CanonicalError(f"{path}: " + "; ".join(bad[:4]))
    params = {k: t.load() for k, t in header.tensors.items()}
    recorded = header.metadata.get("sha256")
    if recorded is not None and tensor_digest(params) != recorded:
        raise CanonicalError(
            f"{path}: damaged: its tensors do not match the SHA-256 recorded in its metadata "
            f"(the file changed after it was written)"
        )
    return params, header.metadata

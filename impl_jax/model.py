"""GoogLeNet in JAX + Flax (``flax.nnx``), built from a ``conformance.spec`` plan.

Mirrors ``impl_torch/model.py`` block for block. What differs, and why:

* Layout is NHWC (channels last), kernels HWIO: what ``flax.nnx.Conv`` and XLA's CPU
  convolutions take. Shape comments read ``N x H x W x C``; concatenation is on the
  last axis.
* Every module sits at its canonical attribute path (``inception3a.branch2.1.conv``),
  so a parameter's path is its canonical key with Flax's variable name at the end
  (``kernel`` for ``weight``); the weight adapter is a suffix table and a transpose.
* A flatten reads the map in (C, H, W) order, as PyTorch's: the dense layers' kernels
  are then their canonical weights transposed, and ``flatten`` is the canonical one.
* Training and inference are switched on the layers (``Module.train()`` / ``eval()``
  set ``use_running_average`` and ``deterministic``), as Flax does; layers take their
  dtype when made, as a Flax parameter's dtype is fixed when it is created.

The gaps Flax has (PyTorch's pools, the adaptive pool, LRN, PyTorch's BatchNorm) are
filled in ``layers.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from conformance.spec import LRN, InceptionAuxUnit, InceptionUnit, Plan, ReLU, ResidualUnit, Stage

from .layers import BasicConv2d, flatten, make_chain, make_dense, make_lrn, make_op, make_pool, make_relu


class Inception(nnx.Module):
    def __init__(self, block: InceptionUnit, dtype) -> None:
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branches = [[attr for attr, _ in branch] for branch in block.modules()]
        for branch in block.modules():
            for attr, ops in branch:  # branch1, branch2 (ops 0, 1), ...; Liu's: branch5x5_1, ...
                setattr(self, attr, make_chain(ops, dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        # N x 28 x 28 x 192 (inception3a)
        outputs = []
        for branch in self.branches:
            y = x
            for attr in branch:
                y = getattr(self, attr)(y)
            outputs.append(y)
        # N x 28 x 28 x (64 + 128 + 32 + 32): concatenated on the channel axis, last here
        return jnp.concatenate(outputs, axis=-1)


class ResidualBlock(nnx.Module):
    def __init__(self, block: ResidualUnit, dtype) -> None:
        self.conv1 = make_op(block.conv1, dtype)  # with its ReLU
        self.conv2 = make_op(block.conv2, dtype)  # without

    def __call__(self, x: jax.Array) -> jax.Array:
        # N x 12 x 12 x 16 (rblock1)
        return jax.nn.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(nnx.Module):
    def __init__(self, head: InceptionAuxUnit, dtype, rngs: nnx.Rngs) -> None:
        self.pool = make_pool(head.pool)
        self.conv = BasicConv2d(head.conv, dtype)
        self.fc1 = make_dense(head.fc1.in_features, head.fc1.out_features, dtype)
        self.fc2 = make_dense(head.fc2.in_features, head.fc2.out_features, dtype)
        self.dropout = nnx.Dropout(head.dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # aux1: N x 14 x 14 x 512, aux2: N x 14 x 14 x 528
        x = self.pool(x)
        # aux1: N x 4 x 4 x 512, aux2: N x 4 x 4 x 528
        x = self.conv(x)
        # N x 4 x 4 x 128
        x = flatten(x)
        # N x 2048, in (C, H, W) order: the canonical order
        x = jax.nn.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        return self.fc2(x)  # N x 1000 (num_classes)


def make_stage(stage: Stage, dtype) -> nnx.Module:
    if isinstance(stage, LRN):
        return make_lrn(stage)
    if isinstance(stage, ReLU):
        return make_relu(stage.name)
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage, dtype)
    if isinstance(stage, InceptionUnit):
        return Inception(stage, dtype)
    return make_op(stage, dtype)


class GoogLeNet(nnx.Module):
    def __init__(self, plan: Plan, dtype=jnp.float32) -> None:
        self.plan = plan
        self.dtype = jnp.dtype(dtype)
        # one key stream for every dropout, as PyTorch's one generator: each draw takes the
        # next key, so the aux heads' masks and the classifier's differ (own streams seeded
        # alike would drop the same units of their equally wide inputs)
        rngs = nnx.Rngs(dropout=0)
        for stage in plan.stages:  # conv1, maxpool1, ..., inception5b, in table order
            setattr(self, stage.name, make_stage(stage, dtype))
        for head in plan.aux:  # aux1, aux2
            setattr(self, head.name, InceptionAux(head, dtype, rngs))
        # global average (a fixed 7x7 in GluonCV; none in Liu's nets)
        self.avgpool = None if plan.head_pool is None else make_pool(plan.head_pool)
        self.dropout = nnx.Dropout(plan.dropout, rngs=rngs)
        setattr(self, plan.fc.name, make_dense(plan.fc.in_features, plan.fc.out_features, dtype))  # fc (l: Liu's)

    def forward_stages(self, x: jax.Array, with_aux: bool = False) -> dict[str, jax.Array]:
        """Every stage's output by name (NHWC), then ``flatten``, ``logits`` and the aux logits."""
        out = {}
        if self.plan.transform is not None:  # transform_input: channel by channel, reordered (Caffe's BGR)
            t = self.plan.transform
            # all channels at once, each with its own scale and shift: the same arithmetic
            # per element, three ops where a concatenation of slices is ten (eager compiles each)
            scale, shift = np.asarray(t.scale, self.dtype), np.asarray(t.shift, self.dtype)
            x = x[..., np.asarray(t.order)] * scale + shift
        # N x 224 x 224 x 3
        for stage in self.plan.stages:
            x = getattr(self, stage.name)(x)
            # conv1: N x 112 x 112 x 64 ... inception5b: N x 7 x 7 x 1024 (spec table)
            out[stage.name] = x
            for head in self.plan.aux_for(stage.name) if with_aux else ():
                out[head.name] = getattr(self, head.name)(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
            # N x 1 x 1 x 1024
        x = flatten(x)
        # N x 1024, or the whole last map in (C, H, W) order: N x 1408 (inception_mnist)
        out["flatten"] = x
        x = self.dropout(x)
        # N x 1024
        out["logits"] = getattr(self, self.plan.fc.name)(x)  # N x 1000 (num_classes)
        return out

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array, jax.Array]:
        """torchvision's contract: logits, or (logits, aux2, aux1) when training with aux."""
        training_aux = not self.dropout.deterministic and bool(self.plan.aux)
        out = self.forward_stages(x, with_aux=training_aux)
        if training_aux:
            return out["logits"], out["aux2"], out["aux1"]
        return out["logits"]

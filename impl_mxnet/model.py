"""GoogLeNet in MXNet Gluon, built from a ``conformance.spec`` plan.

Mirrors ``impl_torch/model.py`` block for block. What differs, and why:

* ``hybrid_forward(F, x)``: ``F`` is ``mx.nd`` when run imperatively and ``mx.sym``
  once hybridized, so every op goes through ``F``. ``hybridize()`` traces it once; the
  network's base (``engine.Network``) traces it again when the training mode changes, so
  its aux heads run in training only, as torchvision's, and ``export`` writes the
  inference graph.
* Training mode is not a flag on the model: inside ``autograd.record()`` BatchNorm
  uses batch statistics and Dropout drops.
* ``save_parameters`` names parameters by attribute path (``conv1.conv.weight``),
  the same tree as torchvision's state_dict; BatchNorm's scale and shift are
  ``gamma``/``beta``.

The gaps Gluon has (the adaptive pool, LRN, PyTorch's BatchNorm running variance) are
filled in ``layers.py``.
"""

from __future__ import annotations

import mxnet as mx
from mxnet.gluon import nn

from conformance.spec import LRN, InceptionAuxUnit, InceptionUnit, Plan, ReLU, ResidualUnit, Stage

from .engine import Network
from .layers import BasicConv2d, make_chain, make_lrn, make_op, make_pool, make_relu


class Inception(nn.HybridBlock):
    def __init__(self, block: InceptionUnit) -> None:
        super().__init__()
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branches = [[attr for attr, _ in branch] for branch in block.modules()]
        for branch in block.modules():
            for attr, ops in branch:  # branch1, branch2 (ops 0, 1), ...; Liu's: branch5x5_1, ...
                setattr(self, attr, make_chain(ops))

    def hybrid_forward(self, F, x):
        # N x 192 x 28 x 28 (inception3a)
        outputs = []
        for branch in self.branches:
            y = x
            for attr in branch:
                y = getattr(self, attr)(y)
            outputs.append(y)
        # N x (64 + 128 + 32 + 32) x 28 x 28: concatenated on the channel axis
        return F.concat(*outputs, dim=1)


class ResidualBlock(nn.HybridBlock):
    def __init__(self, block: ResidualUnit) -> None:
        super().__init__()
        self.conv1 = make_op(block.conv1)  # with its ReLU
        self.conv2 = make_op(block.conv2)  # without

    def hybrid_forward(self, F, x):
        # N x 16 x 12 x 12 (rblock1)
        return F.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(nn.HybridBlock):
    def __init__(self, head: InceptionAuxUnit) -> None:
        super().__init__()
        self.pool = make_pool(head.pool)
        self.conv = BasicConv2d(head.conv)
        self.fc1 = nn.Dense(head.fc1.out_features, in_units=head.fc1.in_features)
        self.fc2 = nn.Dense(head.fc2.out_features, in_units=head.fc2.in_features)
        self.dropout = nn.Dropout(head.dropout)

    def hybrid_forward(self, F, x):
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = self.pool(x)
        # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = F.flatten(x)
        # N x 2048, in (C, H, W) order, as PyTorch
        x = F.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        return self.fc2(x)  # N x 1000 (num_classes)


def make_stage(stage: Stage) -> nn.HybridBlock:
    if isinstance(stage, LRN):
        return make_lrn(stage)
    if isinstance(stage, ReLU):
        return make_relu(stage.name)
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage)
    if isinstance(stage, InceptionUnit):
        return Inception(stage)
    return make_op(stage)


class GoogLeNet(Network):
    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        for stage in plan.stages:  # conv1, maxpool1, ..., inception5b, in table order
            setattr(self, stage.name, make_stage(stage))
        for head in plan.aux:  # aux1, aux2
            setattr(self, head.name, InceptionAux(head))
        # global average (a fixed 7x7 in GluonCV; none in Liu's nets)
        self.avgpool = None if plan.head_pool is None else make_pool(plan.head_pool)
        self.dropout = nn.Dropout(plan.dropout)
        setattr(self, plan.fc.name, nn.Dense(plan.fc.out_features, in_units=plan.fc.in_features))  # fc (l: Liu's)

    def _stages(self, F, x, with_aux: bool) -> dict:
        out = {}
        if self.plan.transform is not None:  # transform_input: channel by channel, reordered (Caffe's BGR)
            t = self.plan.transform
            x = F.concat(
                *[
                    F.slice_axis(x, axis=1, begin=c, end=c + 1) * s + b
                    for c, s, b in zip(t.order, t.scale, t.shift, strict=True)
                ],
                dim=1,
            )
        # N x 3 x 224 x 224
        for stage in self.plan.stages:
            x = getattr(self, stage.name)(x)
            # conv1: N x 64 x 112 x 112 ... inception5b: N x 1024 x 7 x 7 (spec table)
            out[stage.name] = x
            for head in self.plan.aux_for(stage.name) if with_aux else ():
                out[head.name] = getattr(self, head.name)(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
            # N x 1024 x 1 x 1
        x = F.flatten(x)
        # N x 1024, or the whole last map in (C, H, W) order: N x 1408 (inception_mnist)
        out["flatten"] = x
        x = self.dropout(x)
        # N x 1024
        out["logits"] = getattr(self, self.plan.fc.name)(x)  # N x 1000 (num_classes)
        return out

    def forward_stages(self, x, with_aux: bool = False) -> dict:
        """Every stage's output by name, then ``flatten``, ``logits`` and the aux logits.
        ``x`` an NDArray runs them; a Symbol gives their graph (the hybrid mode's)."""
        return self._stages(mx.sym if isinstance(x, mx.sym.Symbol) else mx.nd, x, with_aux)

    def hybrid_forward(self, F, x):
        """torchvision's contract: logits, or (logits, aux2, aux1) when training with aux."""
        training_aux = mx.autograd.is_training() and bool(self.plan.aux)
        out = self._stages(F, x, with_aux=training_aux)
        if training_aux:
            return (out["logits"], *(out[head.name] for head in reversed(self.plan.aux)))
        return out["logits"]

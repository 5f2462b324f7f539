"""GoogLeNet in PyTorch, built from a ``conformance.spec`` plan.

Mirrors ``impl_keras/model.py`` and ``impl_mxnet/model.py`` block for block: same
class names, same attribute names (which are the canonical checkpoint names), same
order. The module tree is torchvision's, so ``state_dict()`` keys are torchvision's.
Shape comments are for the paper network at 224 x 224; the spec prints any size.

``torch.jit.script`` compiles ``forward``, which forces what differs from the other two:
TorchScript calls no child by a name computed at run time and reads no dataclass, so
the network and its Inception blocks are ``nn.ModuleDict``s whose forward walks their
children in order (a ``ModuleDict``'s keys are its children's names, so the
``state_dict`` keys do not change), with what it needs of the plan as lists, and
training returns a fixed (logits, aux2, aux1). ``torch.export``, ``torch.compile`` and
``torch.jit.trace`` take the module as it is.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conformance.spec import LRN, InceptionAuxUnit, InceptionUnit, Plan, ReLU, ResidualUnit, Stage

from .layers import BasicConv2d, make_chain, make_lrn, make_op, make_pool, make_relu


class Inception(nn.ModuleDict):
    def __init__(self, block: InceptionUnit) -> None:
        super().__init__()
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branches = [[attr for attr, _ in branch] for branch in block.modules()]
        for branch in block.modules():
            for attr, ops in branch:  # branch1, branch2 (ops 0, 1), ...; Liu's: branch5x5_1, ...
                self.add_module(attr, make_chain(ops))
        # TorchScript calls no child by a computed name: forward walks them in order
        self.starts = [attr == branch[0] for branch in self.branches for attr in branch]  # a branch's first
        self.ends = [attr == branch[-1] for branch in self.branches for attr in branch]  # and last

    def forward(self, x: Tensor) -> Tensor:
        # N x 192 x 28 x 28 (inception3a)
        outputs: list[Tensor] = []
        y = x
        for i, op in enumerate(self.values()):
            y = op(x if self.starts[i] else y)
            if self.ends[i]:
                outputs.append(y)
        # N x (64 + 128 + 32 + 32) x 28 x 28: concatenated on the channel axis
        return torch.cat(outputs, 1)


class ResidualBlock(nn.Module):
    def __init__(self, block: ResidualUnit) -> None:
        super().__init__()
        self.conv1 = make_op(block.conv1)  # with its ReLU
        self.conv2 = make_op(block.conv2)  # without

    def forward(self, x: Tensor) -> Tensor:
        # N x 16 x 12 x 12 (rblock1)
        return F.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(nn.Module):
    def __init__(self, head: InceptionAuxUnit) -> None:
        super().__init__()
        self.pool = make_pool(head.pool)
        self.conv = BasicConv2d(head.conv)
        self.fc1 = nn.Linear(head.fc1.in_features, head.fc1.out_features)
        self.fc2 = nn.Linear(head.fc2.in_features, head.fc2.out_features)
        self.dropout = nn.Dropout(head.dropout)

    def forward(self, x: Tensor) -> Tensor:
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14
        x = self.pool(x)
        # aux1: N x 512 x 4 x 4, aux2: N x 528 x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = torch.flatten(x, 1)
        # N x 2048, in (C, H, W) order: the canonical order
        x = F.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        return self.fc2(x)  # N x 1000 (num_classes)


def make_stage(stage: Stage) -> nn.Module:
    if isinstance(stage, LRN):
        return make_lrn(stage)
    if isinstance(stage, ReLU):
        return make_relu(stage.name)
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage)
    if isinstance(stage, InceptionUnit):
        return Inception(stage)
    return make_op(stage)


class GoogLeNet(nn.ModuleDict):
    taps: dict[str, str]  # TorchScript cannot infer the type of an empty dict or list
    order: list[int]  # plain lists, so TorchScript compiles the transform
    scale: list[float]
    shift: list[float]

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan
        for stage in plan.stages:  # conv1, maxpool1, ..., inception5b, in table order
            self.add_module(stage.name, make_stage(stage))
        for head in plan.aux:  # aux1, aux2
            self.add_module(head.name, InceptionAux(head))
        # global average (a fixed 7x7 in GluonCV; none in Liu's nets)
        self.avgpool = None if plan.head_pool is None else make_pool(plan.head_pool)
        self.dropout = nn.Dropout(plan.dropout)
        self.add_module(plan.fc.name, nn.Linear(plan.fc.in_features, plan.fc.out_features))  # fc (l: Liu's)
        # TorchScript reads no dataclass: the plan's names and numbers forward needs, as lists
        self.trunk = [stage.name for stage in plan.stages]
        self.taps = {head.name: head.tap for head in plan.aux}
        self.classifier = plan.fc.name
        self.order = [] if plan.transform is None else list(plan.transform.order)
        self.scale = [] if plan.transform is None else list(plan.transform.scale)
        self.shift = [] if plan.transform is None else list(plan.transform.shift)

    def forward_stages(self, x: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        """Every stage's output by name, then ``flatten``, ``logits`` and the aux logits."""
        out: dict[str, Tensor] = {}
        if self.scale:  # transform_input: channel by channel, reordered (Caffe's BGR)
            x = torch.cat([x[:, o : o + 1] * self.scale[c] + self.shift[c] for c, o in enumerate(self.order)], 1)
        # N x 3 x 224 x 224
        for name, stage in self.items():  # conv1, maxpool1, ..., inception5b, then aux1, aux2 and the head
            if name in self.trunk:
                x = stage(x)
                # conv1: N x 64 x 112 x 112 ... inception5b: N x 1024 x 7 x 7 (spec table)
                out[name] = x
            elif with_aux and name in self.taps:  # aux1, aux2: from the stage each taps
                out[name] = stage(out[self.taps[name]])
        if self.avgpool is not None:
            x = self.avgpool(x)
            # N x 1024 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 1024, or the whole last map in (C, H, W) order: N x 1408 (inception_mnist)
        out["flatten"] = x
        x = self.dropout(x)
        # N x 1024
        for name, fc in self.items():  # fc (l: Liu's), found by name as the stages are
            if name == self.classifier:
                out["logits"] = fc(x)  # N x 1000 (num_classes)
        return out

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """torchvision's contract: logits, or (logits, aux2, aux1) when training with aux."""
        training_aux = self.training and len(self.taps) > 0
        out = self.forward_stages(x, with_aux=training_aux)
        if training_aux:
            return out["logits"], out["aux2"], out["aux1"]
        return out["logits"]

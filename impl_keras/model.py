"""GoogLeNet in Keras 3, built from a ``conformance.spec`` plan.

Mirrors ``impl_torch/model.py`` block for block. What differs, and why:

* Layout is NHWC (channels last): TensorFlow's CPU kernels want it. Shape comments
  read ``N x H x W x C``; concatenation is on the last axis.
* Every weight-carrying layer is named with its canonical prefix, spelled with "-" for
  "." (``inception3a-branch2-1-conv``: Keras's torch backend refuses a "." in a layer
  name, ``weights.keras_name``), so the weight adapter is a table, not a pairing by
  order. Nested Keras layers do not prefix names, so full names are passed.
* ``Flatten`` reads NHWC in (H, W, C) order; the weight adapter permutes fc1's rows.
* Keras infers input channels when a layer is built; each block's ``build`` passes
  them from the spec (as Gluon's ``in_channels``), so no dummy forward pass runs.
* Layers take their dtype when made (``dtype``); PyTorch and Gluon cast a built model.
* The network is a functional ``keras.Model``, as keras-hub builds its backbones:
  ``__init__`` makes the layers, runs ``call`` on a ``keras.Input`` whose height and
  width are open (None, so one model runs at every input size) and hands that graph to
  ``keras.Model``; ``summary()`` and ``keras.utils.plot_model`` show every stage
  (``image_shape=(224, 224, 3)`` gives the sizes instead of None). Each block states its
  output shape from the spec (``layers.Block``), so wiring the graph traces nothing.
* A functional model's outputs are fixed: the logits, or with aux heads a dict of
  ``logits``, ``aux2`` and ``aux1``, in training and inference alike (torchvision returns
  the aux logits in training only), which ``compile``/``fit`` take a loss for each.

The gaps Keras has (PyTorch's pools, the adaptive pool, LRN, PyTorch's BatchNorm
running variance) are filled in ``layers.py``.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from conformance.spec import LRN, InceptionAuxUnit, InceptionUnit, Plan, ReLU, ResidualUnit, Stage, resolve

from .layers import BasicConv2d, Block, init, make_chain, make_lrn, make_op, make_pool, make_relu
from .weights import keras_name


class Inception(Block):
    def __init__(self, block: InceptionUnit, dtype=None) -> None:
        super().__init__(block, dtype)
        # 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 (3x3 in torchvision) | 3x3 max pool -> 1x1
        self.branches = [[attr for attr, _ in branch] for branch in block.modules()]
        for branch in block.modules():
            for attr, ops_ in branch:  # branch1, branch2 (ops 0, 1), ...; Liu's: branch5x5_1, ...
                setattr(self, attr, make_chain(ops_, f"{block.name}.{attr}", dtype))

    def build(self, input_shape=None) -> None:
        for branch in self.branches:
            for attr in branch:
                getattr(self, attr).build(None)

    def call(self, x, training=None):
        # N x 28 x 28 x 192 (inception3a)
        outputs = []
        for branch in self.branches:
            y = x
            for attr in branch:
                y = getattr(self, attr)(y, training=training)
            outputs.append(y)
        # N x 28 x 28 x (64 + 128 + 32 + 32): concatenated on the channel axis, last here
        return ops.concatenate(outputs, axis=-1)


class ResidualBlock(Block):
    def __init__(self, block: ResidualUnit, dtype=None) -> None:
        super().__init__(block, dtype)
        self.conv1 = make_op(block.conv1, dtype)  # with its ReLU
        self.conv2 = make_op(block.conv2, dtype)  # without

    def build(self, input_shape=None) -> None:
        self.conv1.build(None)
        self.conv2.build(None)

    def call(self, x, training=None):
        # N x 12 x 12 x 16 (rblock1)
        return ops.relu(x + self.conv2(self.conv1(x)))  # add, then activate


class InceptionAux(Block):
    def __init__(self, head: InceptionAuxUnit, dtype=None) -> None:
        super().__init__(head, dtype)
        self.head = head
        self.pool = make_pool(head.pool, dtype)
        self.conv = BasicConv2d(head.conv, dtype)
        self.flatten = layers.Flatten(dtype=dtype)
        self.fc1 = layers.Dense(
            head.fc1.out_features, kernel_initializer=init(), name=keras_name(head.fc1.name), dtype=dtype
        )
        self.fc2 = layers.Dense(
            head.fc2.out_features, kernel_initializer=init(), name=keras_name(head.fc2.name), dtype=dtype
        )
        self.dropout = layers.Dropout(head.dropout, dtype=dtype)

    def build(self, input_shape=None) -> None:
        self.conv.build(None)
        self.fc1.build((None, self.head.fc1.in_features))
        self.fc2.build((None, self.head.fc2.in_features))

    def call(self, x, training=None):
        # aux1: N x 14 x 14 x 512, aux2: N x 14 x 14 x 528
        x = self.pool(x)
        # aux1: N x 4 x 4 x 512, aux2: N x 4 x 4 x 528
        x = self.conv(x, training=training)
        # N x 4 x 4 x 128
        x = self.flatten(x)
        # N x 2048, in (H, W, C) order: fc1's rows are permuted when porting
        x = ops.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x, training=training)
        # N x 1024
        return self.fc2(x)  # N x 1000 (num_classes)


def make_stage(stage: Stage, dtype=None) -> layers.Layer:
    if isinstance(stage, LRN):
        return make_lrn(stage, dtype)
    if isinstance(stage, ReLU):
        return make_relu(stage.name, dtype)
    if isinstance(stage, ResidualUnit):
        return ResidualBlock(stage, dtype)
    if isinstance(stage, InceptionUnit):
        return Inception(stage, dtype)
    return make_op(stage, dtype)


@keras.saving.register_keras_serializable(package="conformance")
class GoogLeNet(keras.Model):
    def __init__(self, plan: Plan, dtype=None, image_shape: tuple | None = None, **kwargs) -> None:
        self.plan = plan
        made = {stage.name: make_stage(stage, dtype) for stage in plan.stages}  # conv1, ..., inception5b
        made.update({head.name: InceptionAux(head, dtype) for head in plan.aux})  # aux1, aux2
        # global average (a fixed 7x7 in GluonCV; none in Liu's nets)
        made["avgpool"] = None if plan.head_pool is None else make_pool(plan.head_pool, dtype)
        made["flatten"] = layers.Flatten(name="flatten", dtype=dtype)
        made["dropout"] = layers.Dropout(plan.dropout, name="dropout", dtype=dtype)
        made[plan.fc.name] = layers.Dense(
            plan.fc.out_features, kernel_initializer=init(), name=keras_name(plan.fc.name), dtype=dtype
        )  # fc (l: Liu's)
        made[plan.fc.name].build((None, plan.fc.in_features))  # fc may read a map of open size
        # A functional model, as keras-hub builds its backbones: the graph is this call on an
        # Input of any size (H and W None), so summary() and plot_model() show every stage.
        # On the torch backend a layer is a torch Module, which cannot be an attribute before
        # Module.__init__ (keras.Model's): the graph is traced on the dict, then the layers
        # become attributes, as keras-hub's backbones do.
        self.image_shape = tuple(image_shape or (None, None, plan.in_channels))
        image = keras.Input(self.image_shape, dtype=dtype, name="image")
        outputs = self.call(image, made=made)
        super().__init__(inputs=image, outputs=outputs, name=plan.variant.name, **kwargs)
        for attr, layer in made.items():
            setattr(self, attr, layer)

    def get_config(self) -> dict:
        """The variant, its options, the input's shape and dtype: enough to rebuild the model
        (``.keras`` files), as keras-hub's backbones store their constructor's arguments."""
        return {
            "variant": self.plan.variant.name,
            **self.plan.options.asdict(),
            "image_shape": self.image_shape,
            "dtype": self.input.dtype,
        }

    @classmethod
    def from_config(cls, config: dict) -> GoogLeNet:
        config = {k: v for k, v in config.items() if k not in ("name", "trainable")}
        dtype, image_shape = config.pop("dtype", None), config.pop("image_shape", None)
        return cls(resolve(config.pop("variant"), **config), dtype=dtype, image_shape=image_shape)

    def forward_stages(self, x, with_aux: bool = False, training: bool = False, made: dict | None = None) -> dict:
        """Every stage's output by name (NHWC), then ``flatten``, ``logits`` and the aux logits.
        ``made``: the layers by attribute name, while ``__init__`` traces the graph."""
        layer = made.__getitem__ if made is not None else lambda attr: getattr(self, attr)
        out = {}
        if self.plan.transform is not None:  # transform_input: channel by channel, reordered (Caffe's BGR)
            t = self.plan.transform
            x = ops.concatenate(
                [x[..., c : c + 1] * s + b for c, s, b in zip(t.order, t.scale, t.shift, strict=True)], axis=-1
            )
        # N x 224 x 224 x 3
        for stage in self.plan.stages:
            x = layer(stage.name)(x, training=training)
            # conv1: N x 112 x 112 x 64 ... inception5b: N x 7 x 7 x 1024 (spec table)
            out[stage.name] = x
            for head in self.plan.aux_for(stage.name) if with_aux else ():
                out[head.name] = layer(head.name)(x, training=training)
        if layer("avgpool") is not None:
            x = layer("avgpool")(x)
            # N x 1 x 1 x 1024
        x = layer("flatten")(x)
        # N x 1024, or the whole last map in (H, W, C) order: N x 1408 (inception_mnist),
        # so the weight adapter permutes fc's rows
        out["flatten"] = x
        x = layer("dropout")(x, training=training)
        # N x 1024
        out["logits"] = layer(self.plan.fc.name)(x)  # N x 1000 (num_classes)
        return out

    def call(self, x, training: bool = False, made: dict | None = None):
        """The logits; with aux heads, a dict of ``logits``, ``aux2`` and ``aux1`` (a functional
        model's outputs are fixed: torchvision returns the aux logits in training only)."""
        out = self.forward_stages(x, with_aux=bool(self.plan.aux), training=training, made=made)
        if self.plan.aux:
            return {"logits": out["logits"], **{head.name: out[head.name] for head in reversed(self.plan.aux)}}
        return out["logits"]

"""The pitfalls: the catalogue of porting mistakes, each one entry of data.

Every mistake is catalogued once, here; ``python -m conformance pitfalls`` measures
what it does, and the negative-control tests (``tests/test_negative_controls.py``,
``tests/test_training.py``) use the same entries to show that ``check`` fails on it.
A :class:`Pitfall` is data (what, where, why) naming its pieces, each in the module
of its kind: where the mistake shows, from the spec alone (:mod:`.locate`);
``broken(backend)``, a context manager giving the backend with the mistake made the
way a real port makes it (:mod:`.mistakes`); and, for an inference mistake, a
:class:`Replay`: the same mistake stated as a change to the plan, the canonical
weights, the input or the logits, which the reference (PyTorch) runs (:mod:`.replays`).
``verify``'s diagnosis (``conformance.verify.diagnose``) replays the catalogue that way
with a user's weights, and the mistakes hand-written PyTorch ports make are made from
their replay (:func:`.mistakes.replayed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .. import spec
from . import locate, mistakes, mistakes_jax, replays
from .locate import NotApplicable
from .mistakes import GLUON_BN_EPS, KERAS_BN_EPS, Broken, as_variant, made_by, patched, rebuilt, replayed
from .replays import Params, Replay

__all__ = ["PITFALLS", "NotApplicable", "Params", "Pitfall", "Replay", "patched", "where"]


@dataclass(frozen=True)
class Pitfall:
    name: str  # the command-line name
    title: str  # the mistake, in one line
    kind: Literal["inference", "training"]
    framework: str  # the framework whose port makes the mistake
    variants: tuple[str, ...]  # where it is shown by default
    row: str | None  # the row ("what") of the docs' "Where the four frameworks differ", if any
    why: str  # one sentence
    # The stage (inference) or quantity (training) where the mistake is made in this plan
    # at this input size; None: it changes nothing at this size. NotApplicable: it cannot
    # be made in this plan.
    where: Callable[[spec.Plan, int], str | None]
    broken: Broken
    # The mistake as the reference makes it, for verify's diagnosis; None for training
    # mistakes and for dropout-on (random: no run reproduces another's masks).
    replay: Replay | None = None


_RELU_MISSING = Replay(plan=replays.relu(False))
_RELU_ADDED = Replay(plan=replays.relu(True))
_BRANCHES_SWAPPED = Replay(plan=replays.middle_branches_swapped)
_SOFTMAX = Replay(logits=replays.softmax)
_COUNT_FLIPPED = Replay(plan=replays.ops_where(locate.padded_avg, replays.count_flipped))


# fmt: off
PITFALLS: dict[str, Pitfall] = {p.name: p for p in (
    Pitfall(
        "same-padding", 'Keras "same" padding on the strided 7x7 conv and the 3x3/2 max pools',
        "inference", "keras", ("googlenet_bn",), "conv padding",
        '"same" puts the odd pixel of padding at the end ((2, 3) on the 7x7/2 conv at an even size) where PyTorch '
        "pads (3, 3), so every window shifts by a pixel while every shape still matches, as in d2l's TensorFlow "
        "GoogLeNet.",
        locate.where_same, made_by(lambda b: rebuilt(b, mistakes.keras_same)),
        Replay(plan=replays.ops_where(locate.same_targets, replays.same_plan)),
    ),
    Pitfall(
        "floor-pooling", "max pools rounding their output size down (MXNet's default pooling_convention)",
        "inference", "mxnet", ("googlenet_bn",), "ceil-mode pools",
        "torchvision and Caffe round the pooled size up (ceil_mode=True); rounding down drops the last window on an "
        "even map (112 -> 55, not 56, at 224), so every later stage sees a smaller picture.",
        locate.where_floor, made_by(lambda b: rebuilt(b, mistakes.mxnet_floor)),
        Replay(plan=replays.ops_where(replays.is_max_pool, replays.floor_plan)),
    ),
    Pitfall(
        "kernel-transposed", "a conv kernel transposed the wrong way: OIHW -> HWIO as transpose(3, 2, 1, 0)",
        "inference", "keras", ("googlenet",), "kernel layouts",
        "swapping a kernel's height and width keeps a square kernel's shape, so nothing fails to load: every "
        "spatial filter is mirrored across its diagonal, from the first conv on.",
        locate.where_kernel, mistakes.keras_kernel_transposed, Replay(params=replays.transposed_kernels),
    ),
    Pitfall(
        "dense-rows", "dense rows not permuted for an NHWC flatten",
        "inference", "keras", ("googlenet_bn", "inception_mnist"), "flatten before a dense layer",
        "Keras flattens a map in (H, W, C) order and PyTorch in (C, H, W), so a dense layer reading a flattened map "
        "larger than 1 x 1 (the aux heads' fc1, the fc of Liu's nets) must have its rows reordered.",
        locate.where_dense, mistakes.keras_dense_unpermuted, Replay(params=replays.hwc_rows),
    ),
    Pitfall(
        "bn-eps-gluon", f"BatchNorm epsilon left at Gluon's default ({GLUON_BN_EPS:g})",
        "inference", "mxnet", ("googlenet_bn",), "BatchNorm",
        "BatchNorm divides by sqrt(running_var + eps): torchvision's GoogLeNet uses eps 1e-3, and where running "
        "variances are that small (here 1e-3 to 1e-2) Gluon's 1e-5 changes every channel's gain.",
        locate.where_eps(GLUON_BN_EPS), made_by(lambda b: rebuilt(b, mistakes.mxnet_default_eps)),
        Replay(plan=replays.eps_plan(GLUON_BN_EPS)),
    ),
    Pitfall(
        "bn-eps-keras", f"BatchNorm epsilon left at Keras's default ({KERAS_BN_EPS:g})",
        "inference", "keras", ("googlenet_cifar",), "BatchNorm",
        "pytorch-cifar100 keeps PyTorch's eps 1e-5, and Keras's BatchNormalization defaults to 1e-3: with running "
        "variances of 1e-3 to 1e-2 the denominator sqrt(var + eps) grows by up to 40%.",
        locate.where_eps(KERAS_BN_EPS), made_by(lambda b: rebuilt(b, mistakes.keras_default_eps)),
        Replay(plan=replays.eps_plan(KERAS_BN_EPS)),
    ),
    Pitfall(
        "lrn-alpha", "LRN alpha not divided by the window size (TensorFlow's operator)",
        "inference", "keras", ("googlenet_lrn",), "LRN",
        "Caffe, PyTorch and MXNet weigh the window's sum of squares by alpha / size, TensorFlow's "
        "local_response_normalization by alpha itself: passed unchanged, alpha normalises 5 times as hard.",
        locate.where_lrn, made_by(lambda b: rebuilt(b, mistakes.keras_tf_alpha)), Replay(plan=replays.tf_alpha_plan),
    ),
    Pitfall(
        "transform-input", "transform_input forgotten for torchvision's weights",
        "inference", "torch", ("googlenet_bn",), None,
        "torchvision's GoogLeNet weights expect each channel re-mapped from ImageNet's mean and std to "
        "(x - 0.5) / 0.5 (transform_input=True, which torchvision sets only when it loads them itself), so without "
        "it every image reaches conv1 off by a per-channel scale and shift.",
        locate.where_transform, made_by(mistakes.without_transform), Replay(plan=replays.untransformed),
    ),
    Pitfall(
        "rgb-bgr", "RGB fed to weights trained on BGR",
        "inference", "torch", ("googlenet_lrn",), None,
        "Caffe's models (bvlc_googlenet among them) were trained on BGR images, OpenCV's order: feeding RGB swaps "
        "the first and third input channels, so conv1 sees another image.",
        locate.where_bgr, made_by(mistakes.rgb_for_bgr), Replay(inputs=replays.bgr),
    ),
    Pitfall(
        "bn-momentum", "BatchNorm momentum passed to Gluon untranslated (training)",
        "training", "mxnet", ("googlenet_cifar",), "BatchNorm",
        "PyTorch's BatchNorm momentum 0.1 is the weight of the new batch, Gluon's and Keras's the weight of the old "
        "statistic: passed as is, the running statistics keep 10% of the old instead of 90%, while the loss and "
        "gradients still agree.",
        locate.needs_bn("running statistics after step 1"),
        made_by(lambda b: rebuilt(b, mistakes.mxnet_untranslated_momentum)),
    ),
    Pitfall(
        "running-variance", "biased instead of unbiased running variance: Keras's stock BatchNormalization (training)",
        "training", "keras", ("googlenet_cifar",), "BatchNorm running variance",
        "PyTorch folds the unbiased batch variance into its running variance, Keras and MXNet the biased one, "
        "n / (n - 1) smaller (3% at a 4 x 4 map and batch 2): training agrees, the statistics inference uses do not.",
        locate.needs_bn("running statistics after step 1"), mistakes.keras_stock_batchnorm,
    ),
    Pitfall(
        "aux-weight", "the aux losses weighted 1.0 instead of 0.3 (training)",
        "training", "mxnet", ("googlenet",), None,
        "the paper adds each aux classifier's loss with weight 0.3; with 1.0 the loss differs from the first step, "
        "and so do the gradients of every layer up to inception4d.",
        locate.where_aux_weight, made_by(mistakes.mxnet_aux_weight_one),
    ),
    Pitfall(
        "slim-5x5", "the 5x5 branch that is 3x3: TF-slim's kernels zero-filled at the end to the paper's 5x5",
        "inference", "torch", ("googlenet_slim",), None,
        "TF-slim's (and torchvision's) third branch is a 3x3 conv though Table 1 says 5x5; a port that builds the "
        "paper's 5x5 (padding 2) and pads the 3x3 kernels at the end loads without complaint but shifts every "
        "window of that branch by a pixel (zero-filled around the centre it would be exact).",
        locate.where_5x5,
        made_by(lambda b: as_variant(b, mistakes.paper_5x5, replays.padded_at_the_end, mistakes.cropped_back)),
        Replay(plan=replays.ops_where(locate.branch3_3x3, replays.paper_5x5_plan), params=replays.padded_kernels),
    ),
    Pitfall(
        "symmetric-padding", "symmetric instead of TensorFlow's SAME padding on TF-slim's strided conv and pools",
        "inference", "torch", ("googlenet_slim",), "conv padding",
        "TensorFlow's SAME pads the 7x7/2 conv (2, 3) and the 3x3/2 pools (0, 1) on an even map; PyTorch's "
        "padding=3 and padding=1 (torchvision's) keep every shape and move every window by a pixel. On an odd map "
        "SAME is symmetric, so those sizes hide it.",
        locate.where_symmetric, made_by(lambda b: as_variant(b, mistakes.symmetric)),
        Replay(plan=replays.ops_where(replays.same_op, replays.symmetric_plan)),
    ),
    Pitfall(
        "slim-gamma", "a BatchNorm gamma that is not there: Gluon's default scale=True for TF-slim's (training)",
        "training", "mxnet", ("googlenet_slim",), "BatchNorm",
        "TF-slim's BatchNorm has no scale; a layer built with one starts it at 1, so inference and the first step "
        "agree, but the scale trains, and from the second step on the network is another one.",
        locate.where_gamma, made_by(lambda b: rebuilt(b, mistakes.mxnet_gamma)),
    ),
    Pitfall(
        "sgd-momentum", 'SGD momentum "translated" to 1 - m like BatchNorm\'s (training)',
        "training", "keras", ("inception_mnist",), "SGD momentum",
        "SGD's momentum means the same in all three (the weight of the old velocity); 1 - m changes nothing in the "
        "first step, while the velocity is still zero, and every weight in the second: why the check takes two steps.",
        lambda p, size: "weights after step 2", made_by(mistakes.keras_sgd_one_minus),
    ),
    Pitfall(
        "relu-missing", "the ReLU left out of the conv unit: conv -> BatchNorm, no activation",
        "inference", "torch", ("googlenet_bn",), None,
        "a conv unit written as return self.bn(self.conv(x)) loads every weight and keeps every shape, but passes "
        "the negative values on that the ReLU would have cut: from the first conv on the network is another one.",
        locate.where_relu(True), replayed(_RELU_MISSING), _RELU_MISSING,
    ),
    Pitfall(
        "relu-added", "a ReLU after the convs that have none (Liu's Inception block written with BasicConv2d)",
        "inference", "torch", ("inception_mnist",), None,
        "Liu's convs and a residual block's second conv have no ReLU of their own (his stem applies it after the "
        "pool); a port writing them as torchvision's BasicConv2d cuts every negative value the next layer expects.",
        locate.where_relu(False), replayed(_RELU_ADDED), _RELU_ADDED,
    ),
    Pitfall(
        "dropout-on", "dropout left on at inference: F.dropout(x, p) without training=self.training",
        "inference", "torch", ("googlenet_cifar",), "inference mode",
        "F.dropout's training argument defaults to True, so a forward written with it keeps dropping features after "
        "model.eval(): every stage before the classifier agrees, and the logits change from one run to the next.",
        locate.where_dropout, made_by(mistakes.torch_dropout_on),
    ),
    Pitfall(
        "branch-order", "an Inception block's 3x3 and 5x5 branches concatenated in each other's place",
        "inference", "torch", ("googlenet_bn",), "layout",
        "the order of torch.cat is the next layer's channel order: the 5x5 branch before the 3x3 one (Liu's lecture "
        "order against the paper's) keeps every shape and hands every later conv its input channels shuffled.",
        locate.where_blocks, replayed(_BRANCHES_SWAPPED), _BRANCHES_SWAPPED,
    ),
    Pitfall(
        "softmax-output", "softmax in the model's output instead of the logits",
        "inference", "torch", ("googlenet_cifar",), None,
        "torchvision's GoogLeNet returns logits (CrossEntropyLoss takes its own log-softmax); a model ending in "
        "softmax returns probabilities: the ranking of the classes agrees, the values do not.",
        lambda p, size: "logits", replayed(_SOFTMAX), _SOFTMAX,
    ),
    Pitfall(
        "count-include-pad", "an average pool leaving its zero padding out of the mean where the source counts it",
        "inference", "torch", ("inception_mnist",), "average-pool divisor",
        'F.avg_pool2d counts zero padding in the mean (count_include_pad=True), Keras\'s AveragePooling2D(padding='
        '"same") does not: a 3x3/1 pool padded by 1 divides its border cells by 4 or 6 instead of 9 (and the '
        "reverse where a source excludes it).",
        locate.where_padded_avg, replayed(_COUNT_FLIPPED), _COUNT_FLIPPED,
    ),
    Pitfall(
        "zero-padded-max-pool", "a max pool padded with zeros (jnp.pad, then a valid lax.reduce_window), not -inf",
        "inference", "jax", ("googlenet_d2l", "googlenet_bn"), "ceil-mode pools",
        "lax.reduce_window pads with the initial value it is given, -inf for a max; a zero pad wins every window "
        "whose cells are all negative. In the suite's GoogLeNets every padded max pool (d2l's padding 1, the ceil "
        "mode's extra end, SAME) reads a ReLU's output, so no zero can win: measured, nothing changes. It matters "
        "where a padded pool reads a map before its ReLU (a pre-activation net, a pool on the image); Liu's "
        "relu(mp(conv(x))) reads one, but its 2x2 pools are unpadded, and a ReLU after the pool would hide it.",
        locate.where_zero_pad, made_by(lambda b: rebuilt(b, mistakes_jax.zero_padded_max_pools)),
    ),
    Pitfall(
        "flax-avg-pool", "an average pool as Flax's avg_pool(count_include_pad=False) where the source counts padding",
        "inference", "jax", ("inception_mnist",), "average-pool divisor",
        "nnx.avg_pool counts zero padding by default, as F.avg_pool2d does; passing count_include_pad=False, "
        "TensorFlow's convention (a port of Keras's AveragePooling2D(padding=\"same\")), divides border cells by "
        "4 or 6 instead of 9. The default is wrong the other way where a source excludes padding, and on a ceil-mode "
        "window's extra end, which Flax counts and PyTorch never does (no GoogLeNet's average pool has one).",
        locate.where_counted_padding, made_by(lambda b: rebuilt(b, mistakes_jax.flax_avg_pools)),
    ),
    Pitfall(
        "flax-kernel-io", "a conv kernel ported OIHW -> HWIO as transpose(2, 3, 0, 1): in and out channels swapped",
        "inference", "jax", ("googlenet_cifar",), "kernel layouts",
        "Flax's HWIO is transpose(2, 3, 1, 0) of PyTorch's OIHW; (2, 3, 0, 1) gives (kh, kw, out, in), which keeps "
        "the shape of every conv with as many outputs as inputs (pytorch-cifar100's conv2, 64 -> 64; googlenet's "
        "conv2 1x1; Liu's residual blocks), so those load and compute another network. Every GoogLeNet's first "
        "conv (3 -> 64) changes shape, and impl_jax's loader refuses it by key, before any forward.",
        locate.where_first_conv, mistakes_jax.io_kernels,
    ),
    Pitfall(
        "flax-bn-momentum", "PyTorch's BatchNorm momentum (0.1) passed to Flax's nnx.BatchNorm (training)",
        "training", "jax", ("googlenet_cifar",), "BatchNorm",
        "Flax's momentum is the old statistic's weight (0.99 by default), PyTorch's the new batch's: "
        "nnx.BatchNorm(momentum=0.1) keeps 10% of the old running statistics instead of 90%, while the loss and "
        "gradients still agree.",
        locate.needs_bn("running statistics after step 1"),
        made_by(lambda b: rebuilt(b, mistakes_jax.flax_momentum_untranslated)),
    ),
    Pitfall(
        "flax-running-variance", "Flax's own nnx.BatchNorm: the biased batch variance in the running one (training)",
        "training", "jax", ("googlenet_cifar",), "BatchNorm running variance",
        "nnx.BatchNorm, its momentum rightly 0.9, folds the batch variance it normalises with (biased) into var; "
        "PyTorch folds the unbiased one, n / (n - 1) larger (3% at a 4 x 4 map and batch 2): training agrees, "
        "the statistics inference uses do not.",
        locate.needs_bn("running statistics after step 1"),
        made_by(lambda b: rebuilt(b, mistakes_jax.flax_stock_batchnorm)),
    ),
)}
# fmt: on


def where(pitfall: Pitfall, p: spec.Plan, size: int) -> tuple[str | None, str | None]:
    """(stage or quantity where the mistake shows, None) or (None, why it cannot apply)."""
    try:
        return pitfall.where(p, size), None
    except NotApplicable as e:
        return None, str(e)

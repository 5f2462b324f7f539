"""The mistakes a JAX + Flax port makes, made in ``impl_jax``'s terms: each ``broken(backend)``
of a ``jax`` pitfall (:mod:`.pitfalls`) builds ``impl_jax``'s model with a layer swapped for
the one such a port writes (Flax's own ``BatchNorm``, ``nnx.avg_pool``, a zero-padded
``lax.reduce_window``), or loads its weights through the wrong permutation.

A swapped layer is another class, never a patched method: ``jax.jit`` may reuse a trace
of an equal model structure, so a broken model must differ from a correct one in its
structure (its ``GraphDef``), or a correct model's trace could run in its place (and the
broken one's in a correct model's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from ..interface import Backend


def swapped(model: Any, hit: Callable[[Any], bool], make: Callable[[Any], Any]) -> int:
    """Every module of ``model`` that ``hit`` selects replaced by ``make(module)`` at its
    own attribute path (so its variables keep their canonical keys); how many were."""
    from flax import nnx

    found = [(path, node) for path, node in nnx.iter_graph(model) if path and hit(node)]
    for path, node in found:
        parent = model
        for part in path[:-1]:
            parent = getattr(parent, str(part))
        setattr(parent, str(path[-1]), make(node))
    return len(found)


def zero_padded_max_pools(model: Any) -> None:
    """Every max pool padded as ``jnp.pad`` pads, with zeros, then reduced over valid
    windows: ``lax.reduce_window`` pads with the value it is given, and a max needs -inf."""
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from impl_jax.layers import Pool2D, pool_pads

    class ZeroPaddedMaxPool2D(Pool2D):
        def __call__(self, x: Any) -> Any:
            p = self.pool
            pads = ((0, 0), pool_pads(x.shape[1], p), pool_pads(x.shape[2], p), (0, 0))
            window, strides = (1, p.kernel, p.kernel, 1), (1, p.stride, p.stride, 1)
            return lax.reduce_window(jnp.pad(x, pads), np.array(-np.inf, x.dtype), lax.max, window, strides, "VALID")

    swapped(model, lambda m: type(m) is Pool2D and m.pool.kind == "max", lambda m: ZeroPaddedMaxPool2D(m.pool))


def flax_avg_pools(model: Any) -> None:
    """Every average pool written as Flax's ``nnx.avg_pool(..., count_include_pad=False)``,
    TensorFlow's convention (what a port of Keras's ``AveragePooling2D(padding="same")``
    passes), where the spec's source, ``F.avg_pool2d``, counts the padding."""
    from flax import nnx

    from impl_jax.layers import Pool2D, pool_pads

    class FlaxAvgPool2D(Pool2D):
        def __call__(self, x: Any) -> Any:
            p = self.pool
            pads = (pool_pads(x.shape[1], p), pool_pads(x.shape[2], p))
            return nnx.avg_pool(x, (p.kernel, p.kernel), (p.stride, p.stride), pads, count_include_pad=False)

    swapped(model, lambda m: type(m) is Pool2D and m.pool.kind == "avg", lambda m: FlaxAvgPool2D(m.pool))


def flax_momentum_untranslated(model: Any) -> None:
    """PyTorch's momentum (0.1, the new batch's weight) passed to Flax, whose momentum is the
    old statistic's weight: ``nnx.BatchNorm(momentum=0.1)`` keeps 10% of the old, so the
    new batch weighs 0.9, which in ``impl_jax``'s BatchNorm (the spec's meaning) is 0.9."""
    from impl_jax.layers import BatchNormalization

    def untranslated(bn: BatchNormalization) -> BatchNormalization:
        bn.momentum = 1.0 - bn.momentum
        return bn

    swapped(model, lambda m: isinstance(m, BatchNormalization), untranslated)


def flax_stock_batchnorm(model: Any) -> None:
    """Every BatchNorm Flax's own ``nnx.BatchNorm``, its momentum rightly translated
    (1 - PyTorch's) and its epsilon the spec's: it folds the biased batch variance into
    its running one, where PyTorch folds the unbiased one."""
    import jax.numpy as jnp
    from flax import nnx

    from impl_jax.layers import BatchNormalization

    class FlaxBatchNorm(nnx.BatchNorm):
        def __init__(self, bn: BatchNormalization) -> None:
            dtype = bn.bias.value.dtype
            super().__init__(
                bn.bias.value.shape[0],
                momentum=1.0 - bn.momentum,
                epsilon=bn.eps,
                use_scale=bn.scale is not None,
                use_fast_variance=False,  # the two-pass variance, as impl_jax's: only the fold differs
                dtype=dtype,
                param_dtype=dtype,
                rngs=nnx.Rngs(0),
            )
            self.use_running_average = bn.use_running_average
            self.batch_mean, self.batch_var = bn.batch_mean, bn.batch_var  # what the check reads

        def __call__(self, x: Any, use_running_average: bool | None = None, *, mask: Any = None) -> Any:
            if not self.use_running_average and self.batch_mean is not None and self.batch_var is not None:
                self.batch_mean.value = jnp.mean(x, axis=(0, 1, 2))
                self.batch_var.value = jnp.var(x, axis=(0, 1, 2))
            return super().__call__(x, use_running_average, mask=mask)

    swapped(model, lambda m: isinstance(m, BatchNormalization), FlaxBatchNorm)


@contextlib.contextmanager
def io_kernels(b: Backend) -> Iterator[Backend]:
    """Conv kernels loaded through ``transpose(2, 3, 0, 1)``: (kh, kw, out, in) where Flax
    wants HWIO, ``transpose(2, 3, 1, 0)``. A conv whose in and out channels are equal keeps
    its shape and loads with its channels swapped; any other is refused by shape."""
    import impl_jax.weights

    right = impl_jax.weights.to_flax
    with mock.patch.object(impl_jax.weights, "to_flax", lambda w: w.transpose(2, 3, 0, 1) if w.ndim == 4 else right(w)):
        yield b

"""impl_keras.distributed beyond the parity every engine passes (tests/test_distributed.py,
whose "sum" control shows Keras's optimizer summing the replicas' gradients): a start
after TensorFlow set up its devices is refused in one line."""

from __future__ import annotations

import pytest

from conformance.world import World, WorldError

from .conftest import backend_or_skip


def test_start_refuses_too_few_devices_after_tensorflow_initialised():
    """In this pytest process TensorFlow has one logical CPU once any op ran: start must
    say so in one line, not let MirroredStrategy fail later."""
    backend_or_skip("keras")
    import tensorflow as tf

    from impl_keras import distributed

    tf.constant(1.0) + 1.0  # initialise the devices
    many = len(tf.config.list_logical_devices("CPU")) + 1
    with pytest.raises(WorldError, match=f"--workers {many}: TensorFlow initialised its devices"):
        distributed.start(World(many))
    distributed.stop()

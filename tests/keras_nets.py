"""GoogLeNets written in Keras the way users write them, not built by the suite: what
``verify`` checks. ``d2l`` is d2l's TensorFlow GoogLeNet
(https://d2l.ai/chapter_convolutional-modern/googlenet.html): a Sequential of
Sequentials holding a subclassed ``Inception`` model, with ``padding="same"`` on the
strided 7x7 conv and the 3x3/2 pools as the chapter has it. "same" pads those (2, 3)
and (0, 1) where the chapter's PyTorch version (googlenet_d2l) pads (3, 3) and (1, 1):
the catalogue's ``same-padding``. ``d2l_padded`` pads as the PyTorch version does.
``functional`` is the same network written with the functional API, as Keras blog
posts write GoogLeNet (an ``inception(x, ...)`` function), which a ``.keras`` file can
hold alone."""

import keras
import tensorflow as tf

SIZE = 96  # d2l trains on Fashion-MNIST resized to 96 x 96, one channel


class Inception(tf.keras.Model):
    def __init__(self, c1, c2, c3, c4, relu4=True):
        super().__init__()
        self.p1_1 = tf.keras.layers.Conv2D(c1, 1, activation="relu")
        self.p2_1 = tf.keras.layers.Conv2D(c2[0], 1, activation="relu")
        self.p2_2 = tf.keras.layers.Conv2D(c2[1], 3, padding="same", activation="relu")
        self.p3_1 = tf.keras.layers.Conv2D(c3[0], 1, activation="relu")
        self.p3_2 = tf.keras.layers.Conv2D(c3[1], 5, padding="same", activation="relu")
        self.p4_1 = tf.keras.layers.MaxPool2D(3, 1, padding="same")
        self.p4_2 = tf.keras.layers.Conv2D(c4, 1, activation="relu" if relu4 else None)

    def call(self, x):
        p1 = self.p1_1(x)
        p2 = self.p2_2(self.p2_1(x))
        p3 = self.p3_2(self.p3_1(x))
        p4 = self.p4_2(self.p4_1(x))
        return tf.keras.layers.Concatenate()([p1, p2, p3, p4])


def _pool(padded):
    """The 3x3/2 max pool: "same" as the chapter writes it, or PyTorch's padding=1 (zeros
    are exact here: every pool reads a ReLU's output, so a padded zero never wins a max)."""
    if padded:
        return [tf.keras.layers.ZeroPadding2D(1), tf.keras.layers.MaxPool2D(pool_size=3, strides=2)]
    return [tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding="same")]


def d2l_net(padded=False, relu4=True, truncated=False):
    """``padded``: PyTorch's symmetric padding instead of "same"; ``relu4`` False forgets
    the ReLU after each block's pool projection; ``truncated`` ends after inception5a."""

    def b1():
        conv = [tf.keras.layers.Conv2D(64, 7, strides=2, padding="same", activation="relu")]
        if padded:
            conv = [tf.keras.layers.ZeroPadding2D(3), tf.keras.layers.Conv2D(64, 7, strides=2, activation="relu")]
        return tf.keras.models.Sequential([*conv, *_pool(padded)])

    def b2():
        return tf.keras.Sequential(
            [
                tf.keras.layers.Conv2D(64, 1, activation="relu"),
                tf.keras.layers.Conv2D(192, 3, padding="same", activation="relu"),
                *_pool(padded),
            ]
        )

    def b3():
        return tf.keras.models.Sequential(
            [
                Inception(64, (96, 128), (16, 32), 32, relu4),
                Inception(128, (128, 192), (32, 96), 64, relu4),
                *_pool(padded),
            ]
        )

    def b4():
        return tf.keras.Sequential(
            [
                Inception(192, (96, 208), (16, 48), 64, relu4),
                Inception(160, (112, 224), (24, 64), 64, relu4),
                Inception(128, (128, 256), (24, 64), 64, relu4),
                Inception(112, (144, 288), (32, 64), 64, relu4),
                Inception(256, (160, 320), (32, 128), 128, relu4),
                *_pool(padded),
            ]
        )

    def b5():
        last = [Inception(256, (160, 320), (32, 128), 128, relu4)]
        if not truncated:
            last.append(Inception(384, (192, 384), (48, 128), 128, relu4))
        return tf.keras.Sequential([*last, tf.keras.layers.GlobalAvgPool2D(), tf.keras.layers.Flatten()])

    net = tf.keras.Sequential([b1(), b2(), b3(), b4(), b5(), tf.keras.layers.Dense(10)])
    net.build((None, SIZE, SIZE, 1))  # d2l runs one batch through it to print the shapes
    return net


def d2l():
    """The chapter's code as it is: "same" padding (the same-padding mistake)."""
    return d2l_net()


def d2l_padded():
    return d2l_net(padded=True)


def d2l_padded_no_relu():
    return d2l_net(padded=True, relu4=False)


def d2l_truncated():
    return d2l_net(padded=True, truncated=True)


def d2l_unbuilt():
    return tf.keras.Sequential([tf.keras.layers.Conv2D(64, 7, strides=2), tf.keras.layers.Dense(10)])


def inception(x, c1, c2, c3, c4, order=(1, 2, 3, 4)):
    """A blog post's Inception block; ``order``: the branches' order in the concatenation
    (on the channel axis: the last, or the first after the batch's in channels_first)."""
    branches = {
        1: keras.layers.Conv2D(c1, 1, activation="relu")(x),
        2: keras.layers.Conv2D(c2[1], 3, padding="same", activation="relu")(
            keras.layers.Conv2D(c2[0], 1, activation="relu")(x)
        ),
        3: keras.layers.Conv2D(c3[1], 5, padding="same", activation="relu")(
            keras.layers.Conv2D(c3[0], 1, activation="relu")(x)
        ),
        4: keras.layers.Conv2D(c4, 1, activation="relu")(keras.layers.MaxPooling2D(3, 1, padding="same")(x)),
    }
    axis = 1 if keras.config.image_data_format() == "channels_first" else -1
    return keras.layers.Concatenate(axis=axis)([branches[b] for b in order])


def functional(order=(1, 2, 3, 4), data_format="channels_last"):
    """d2l's network in the functional API, padded as the PyTorch version; ``order``
    changes every block's concatenation (the branch-order mistake); ``data_format``:
    every layer's (Keras's default, taken when a layer is made, set for the while)."""
    default = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        return _functional(order, data_format)
    finally:
        keras.config.set_image_data_format(default)


def _functional(order, data_format):
    def pool(x):
        return keras.layers.MaxPooling2D(3, 2)(keras.layers.ZeroPadding2D(1)(x))  # after a ReLU: zeros never win

    inputs = keras.Input((SIZE, SIZE, 1) if data_format == "channels_last" else (1, SIZE, SIZE))
    x = keras.layers.Conv2D(64, 7, strides=2, activation="relu")(keras.layers.ZeroPadding2D(3)(inputs))
    x = pool(x)
    x = keras.layers.Conv2D(64, 1, activation="relu")(x)
    x = pool(keras.layers.Conv2D(192, 3, padding="same", activation="relu")(x))
    x = inception(x, 64, (96, 128), (16, 32), 32, order)
    x = pool(inception(x, 128, (128, 192), (32, 96), 64, order))
    x = inception(x, 192, (96, 208), (16, 48), 64, order)
    x = inception(x, 160, (112, 224), (24, 64), 64, order)
    x = inception(x, 128, (128, 256), (24, 64), 64, order)
    x = inception(x, 112, (144, 288), (32, 64), 64, order)
    x = pool(inception(x, 256, (160, 320), (32, 128), 128, order))
    x = inception(x, 256, (160, 320), (32, 128), 128, order)
    x = inception(x, 384, (192, 384), (48, 128), 128, order)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="googlenet")


def functional_swapped():
    return functional(order=(1, 3, 2, 4))


def functional_channels_first():
    return functional(data_format="channels_first")

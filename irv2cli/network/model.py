"""Inception-ResNet-V2 in Keras 3, layer for layer the graph of keras.applications.

The official weights file is loaded in topological layer order, so the order in
which layers are created here is part of the contract: it must match
``keras.applications.InceptionResNetV2`` exactly.
"""

from __future__ import annotations

from ..spec import SPEC
from .quiet import keras

layers = keras.layers


@keras.saving.register_keras_serializable(package="irv2cli")
class ScaledResidual(layers.Layer):
    """``shortcut + scale * residual``: the residual sum of an Inception-ResNet block."""

    def __init__(self, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        shortcut, residual = inputs
        return shortcut + residual * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def conv2d_bn(x, filters, kernel_size, strides=1, padding="same", activation="relu",
              use_bias=False, name=None):
    """Conv2D, then BatchNorm(scale=False) unless the conv has a bias, then activation."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                      use_bias=use_bias, name=name)(x)
    if not use_bias:
        x = layers.BatchNormalization(axis=3, scale=False,
                                      name=None if name is None else f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=None if name is None else f"{name}_ac")(x)
    return x


def _branches_block35(x):
    return [
        conv2d_bn(x, 32, 1),
        conv2d_bn(conv2d_bn(x, 32, 1), 32, 3),
        conv2d_bn(conv2d_bn(conv2d_bn(x, 32, 1), 48, 3), 64, 3),
    ]


def _branches_block17(x):
    return [
        conv2d_bn(x, 192, 1),
        conv2d_bn(conv2d_bn(conv2d_bn(x, 128, 1), 160, [1, 7]), 192, [7, 1]),
    ]


def _branches_block8(x):
    return [
        conv2d_bn(x, 192, 1),
        conv2d_bn(conv2d_bn(conv2d_bn(x, 192, 1), 224, [1, 3]), 256, [3, 1]),
    ]


_BLOCK_BRANCHES = {
    "block35": _branches_block35,
    "block17": _branches_block17,
    "block8": _branches_block8,
}


def inception_resnet_block(x, scale: float, block_type: str, block_idx: int,
                           activation: str | None = "relu"):
    """One Inception-ResNet block: branches, concat, 1x1 "up" conv, scaled residual sum."""
    name = f"{block_type}_{block_idx}"
    mixed = layers.Concatenate(axis=3, name=f"{name}_mixed")(_BLOCK_BRANCHES[block_type](x))
    up = conv2d_bn(mixed, x.shape[3], 1, activation=None, use_bias=True, name=f"{name}_conv")
    x = ScaledResidual(scale, name=name)([x, up])
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_ac")(x)
    return x


def build_model(include_top: bool = True, input_shape: tuple[int, int, int] | None = None,
                pooling: str | None = None, classes: int = SPEC.num_classes,
                classifier_activation: str | None = "softmax",
                name: str = "inception_resnet_v2") -> keras.Model:
    """Build the network with uninitialised weights, like ``InceptionResNetV2(weights=None)``.

    ``pooling`` ("avg" or "max") applies only without the top, giving 1536-d features.
    """
    size = SPEC.input_size
    if include_top and input_shape not in (None, (size, size, 3)):
        raise ValueError(f"with the top, input_shape must be ({size}, {size}, 3)")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    inputs = layers.Input(shape=input_shape or (size, size, 3))

    # Stem: 299x299x3 -> 35x35x192
    x = conv2d_bn(inputs, 32, 3, strides=2, padding="valid")
    x = conv2d_bn(x, 32, 3, padding="valid")
    x = conv2d_bn(x, 64, 3)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = conv2d_bn(x, 80, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, padding="valid")
    x = layers.MaxPooling2D(3, strides=2)(x)

    # Mixed 5b (Inception-A): 35x35x192 -> 35x35x320
    branch_0 = conv2d_bn(x, 96, 1)
    branch_1 = conv2d_bn(conv2d_bn(x, 48, 1), 64, 5)
    branch_2 = conv2d_bn(conv2d_bn(conv2d_bn(x, 64, 1), 96, 3), 96, 3)
    branch_pool = conv2d_bn(layers.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1)
    x = layers.Concatenate(axis=3, name="mixed_5b")([branch_0, branch_1, branch_2, branch_pool])

    # 10x block35 (Inception-ResNet-A): 35x35x320
    for block_idx in range(1, 11):
        x = inception_resnet_block(x, scale=0.17, block_type="block35", block_idx=block_idx)

    # Reduction-A: 35x35x320 -> 17x17x1088
    branch_0 = conv2d_bn(x, 384, 3, strides=2, padding="valid")
    branch_1 = conv2d_bn(conv2d_bn(conv2d_bn(x, 256, 1), 256, 3), 384, 3, strides=2,
                         padding="valid")
    branch_pool = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    x = layers.Concatenate(axis=3, name="mixed_6a")([branch_0, branch_1, branch_pool])

    # 20x block17 (Inception-ResNet-B): 17x17x1088
    for block_idx in range(1, 21):
        x = inception_resnet_block(x, scale=0.1, block_type="block17", block_idx=block_idx)

    # Reduction-B: 17x17x1088 -> 8x8x2080
    branch_0 = conv2d_bn(conv2d_bn(x, 256, 1), 384, 3, strides=2, padding="valid")
    branch_1 = conv2d_bn(conv2d_bn(x, 256, 1), 288, 3, strides=2, padding="valid")
    branch_2 = conv2d_bn(conv2d_bn(conv2d_bn(x, 256, 1), 288, 3), 320, 3, strides=2,
                         padding="valid")
    branch_pool = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    x = layers.Concatenate(axis=3, name="mixed_7a")([branch_0, branch_1, branch_2, branch_pool])

    # 9x block8 (Inception-ResNet-C) and a last one, unscaled and linear: 8x8x2080
    for block_idx in range(1, 10):
        x = inception_resnet_block(x, scale=0.2, block_type="block8", block_idx=block_idx)
    x = inception_resnet_block(x, scale=1.0, activation=None, block_type="block8", block_idx=10)

    # Final 1x1 conv: 8x8x2080 -> 8x8x1536
    x = conv2d_bn(x, SPEC.feature_dim, 1, name="conv_7b")

    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D()(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, x, name=name)

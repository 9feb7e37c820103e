"""Inception-ResNet-V2 in Keras 3, layer for layer the graph of keras.applications, built
from the network's one description (``architecture``).

The official weights file is loaded in topological layer order, so the order in
which layers are created here is part of the contract: it must match
``keras.applications.InceptionResNetV2`` exactly.
"""

from __future__ import annotations

from ..spec import SPEC
from . import architecture as arch
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


class _KerasLayers:
    """The ``architecture.Builder`` that creates the Keras layers, in the order and with
    the names of ``keras.applications.InceptionResNetV2``."""

    def channels(self, x) -> int:
        return x.shape[-1]

    def conv_bn(self, op: arch.Conv, x):
        x = layers.Conv2D(op.filters, op.kernel, strides=op.strides, padding=op.padding,
                          use_bias=False, name=op.name)(x)
        x = layers.BatchNormalization(axis=3, scale=False, name=_named(op.name, "_bn"))(x)
        return layers.Activation("relu", name=_named(op.name, "_ac"))(x)

    def pool(self, op: arch.Pool, x):
        pooling = layers.MaxPooling2D if op.kind == "max" else layers.AveragePooling2D
        return pooling(op.size, strides=op.strides, padding=op.padding)(x)

    def global_avg_pool(self, op: arch.GlobalAvgPool, x):
        return layers.GlobalAveragePooling2D(name=op.name)(x)

    def dense(self, op: arch.Dense, x):
        return layers.Dense(op.units, activation=op.activation, name=op.name)(x)

    def concat(self, xs: list, name: str):
        return layers.Concatenate(axis=3, name=name)(xs)

    def up_conv(self, x, channels: int, name: str):
        return layers.Conv2D(channels, 1, use_bias=True, name=name)(x)

    def scaled_residual(self, shortcut, residual, scale: float, name: str):
        return ScaledResidual(scale, name=name)([shortcut, residual])

    def activation(self, x, name: str):
        return layers.Activation("relu", name=name)(x)


def _named(name: str | None, suffix: str) -> str | None:
    return None if name is None else name + suffix


def build_model(include_top: bool = True, input_shape: tuple[int, int, int] | None = None,
                pooling: str | None = None, classes: int = SPEC.num_classes,
                classifier_activation: str | None = "softmax",
                name: str = "inception_resnet_v2") -> keras.Model:
    """Build the network with uninitialised weights, like ``InceptionResNetV2(weights=None)``,
    from its description (``architecture.BODY``, then ``architecture.top``).

    ``pooling`` ("avg" or "max") applies only without the top, giving 1536-d features.
    """
    size = SPEC.input_size
    if include_top and input_shape not in (None, (size, size, 3)):
        raise ValueError(f"with the top, input_shape must be ({size}, {size}, 3)")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    inputs = layers.Input(shape=input_shape or (size, size, 3))
    builder = _KerasLayers()
    x = arch.walk(builder, arch.BODY, inputs)
    if include_top:
        x = arch.walk(builder, arch.top(classes, classifier_activation), x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D()(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inputs, x, name=name)

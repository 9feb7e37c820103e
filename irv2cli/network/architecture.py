"""Inception-ResNet-V2 as plain data, the one description of the network: its stages and
the branch layout of each block (``STAGES``), and ``walk``, which visits them layer by
layer in the order Keras creates them.

``model.build_model`` walks them with Keras layers; ``irv2 summary`` walks them here
with plain arithmetic that gives every layer's Keras name, type, output shape and
parameters, no Keras or TensorFlow, so it answers at once. tests/test_model.py proves
the Keras build equal to ``keras.applications.InceptionResNetV2``, and
tests/test_summary.py the arithmetic equal to the Keras build, layer for layer.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ..spec import SPEC

Shape = tuple[int, ...]
SAME, VALID = "same", "valid"


@dataclass(frozen=True)
class Conv:
    """Conv2D without bias, BatchNorm (scale=False), ReLU (Keras's ``conv2d_bn``)."""

    filters: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: str = SAME
    name: str | None = None


@dataclass(frozen=True)
class Pool:
    """Max or average pooling over ``size`` x ``size`` windows."""

    kind: str  # "max" or "avg"
    size: int = 3
    strides: int = 2
    padding: str = VALID


@dataclass(frozen=True)
class GlobalAvgPool:
    """Global average pooling: HxWxC -> C."""

    name: str


@dataclass(frozen=True)
class Dense:
    """The fully connected classifier, with a bias."""

    units: int
    name: str
    activation: str | None = "softmax"


Op = Conv | Pool | GlobalAvgPool | Dense
Branch = tuple[Op, ...]


@dataclass(frozen=True)
class Blocks:
    """A run of residual blocks: ``x + scale * up(concat(branches(x)))``, then activation.
    ``up`` is a 1x1 conv with a bias, no BatchNorm, back to x's channels."""

    count: int
    scale: float
    activation: str | None = "relu"


@dataclass(frozen=True)
class Stage:
    """One row of the summary. A branch's ops run in sequence; several branches are
    concatenated under ``name``; with ``blocks``, the branches are one residual block's."""

    name: str
    kind: str
    branches: tuple[Branch, ...]
    blocks: tuple[Blocks, ...] = ()

    @property
    def block_count(self) -> int:
        return sum(run.count for run in self.blocks) or 1


INPUT_SHAPE: Shape = (SPEC.input_size, SPEC.input_size, 3)
MAX_POOL = Pool("max")

BODY: tuple[Stage, ...] = (
    # 299x299x3 -> 35x35x192
    Stage("stem", "convolutions", ((
        Conv(32, (3, 3), 2, VALID), Conv(32, (3, 3), padding=VALID), Conv(64, (3, 3)), MAX_POOL,
        Conv(80, (1, 1), padding=VALID), Conv(192, (3, 3), padding=VALID), MAX_POOL,
    ),)),
    # 35x35x192 -> 35x35x320
    Stage("mixed_5b", "Inception-A", (
        (Conv(96, (1, 1)),),
        (Conv(48, (1, 1)), Conv(64, (5, 5))),
        (Conv(64, (1, 1)), Conv(96, (3, 3)), Conv(96, (3, 3))),
        (Pool("avg", strides=1, padding=SAME), Conv(64, (1, 1))),
    )),
    # 35x35x320
    Stage("block35", "Inception-ResNet-A", (
        (Conv(32, (1, 1)),),
        (Conv(32, (1, 1)), Conv(32, (3, 3))),
        (Conv(32, (1, 1)), Conv(48, (3, 3)), Conv(64, (3, 3))),
    ), (Blocks(10, 0.17),)),
    # 35x35x320 -> 17x17x1088
    Stage("mixed_6a", "Reduction-A", (
        (Conv(384, (3, 3), 2, VALID),),
        (Conv(256, (1, 1)), Conv(256, (3, 3)), Conv(384, (3, 3), 2, VALID)),
        (MAX_POOL,),
    )),
    # 17x17x1088
    Stage("block17", "Inception-ResNet-B", (
        (Conv(192, (1, 1)),),
        (Conv(128, (1, 1)), Conv(160, (1, 7)), Conv(192, (7, 1))),
    ), (Blocks(20, 0.1),)),
    # 17x17x1088 -> 8x8x2080
    Stage("mixed_7a", "Reduction-B", (
        (Conv(256, (1, 1)), Conv(384, (3, 3), 2, VALID)),
        (Conv(256, (1, 1)), Conv(288, (3, 3), 2, VALID)),
        (Conv(256, (1, 1)), Conv(288, (3, 3)), Conv(320, (3, 3), 2, VALID)),
        (MAX_POOL,),
    )),
    # 8x8x2080; the last block is unscaled and linear
    Stage("block8", "Inception-ResNet-C", (
        (Conv(192, (1, 1)),),
        (Conv(192, (1, 1)), Conv(224, (1, 3)), Conv(256, (3, 1))),
    ), (Blocks(9, 0.2), Blocks(1, 1.0, activation=None))),
    # 8x8x2080 -> 8x8x1536 -> 1536 -> 1000
    Stage("conv_7b", "1x1 conv", ((Conv(SPEC.feature_dim, (1, 1), name="conv_7b"),),)),
)


def top(classes: int = SPEC.num_classes, activation: str | None = "softmax"
        ) -> tuple[Stage, ...]:
    """The classifier after ``BODY``: global average pooling, then ``classes`` units."""
    return (
        # 8x8x1536 -> 1536 -> 1000
        Stage("avg_pool", "global average pooling", ((GlobalAvgPool("avg_pool"),),)),
        Stage("predictions", "classifier", ((Dense(classes, "predictions", activation),),)),
    )


STAGES: tuple[Stage, ...] = BODY + top()

X = TypeVar("X")


class Builder(Protocol, Generic[X]):
    """What ``walk`` asks for, in the order Keras creates the layers: each method adds
    the layers of one op to the tensor (or whatever stands for one) ``x`` and returns
    the result."""

    def channels(self, x: X) -> int: ...

    def conv_bn(self, op: Conv, x: X) -> X:
        """Conv2D without bias, BatchNorm (scale=False), ReLU."""

    def pool(self, op: Pool, x: X) -> X: ...

    def global_avg_pool(self, op: GlobalAvgPool, x: X) -> X: ...

    def dense(self, op: Dense, x: X) -> X: ...

    def concat(self, xs: list[X], name: str) -> X: ...

    def up_conv(self, x: X, channels: int, name: str) -> X:
        """A residual block's 1x1 conv with a bias, no BatchNorm, no activation."""

    def scaled_residual(self, shortcut: X, residual: X, scale: float, name: str) -> X:
        """``shortcut + scale * residual``."""

    def activation(self, x: X, name: str) -> X: ...


def walk(builder: Builder[X], stages: Sequence[Stage], x: X) -> X:
    """Build ``stages`` after ``x`` with ``builder``; the last stage's output."""
    for stage in stages:
        x = _stage(builder, stage, x)
    return x


def _op(builder: Builder[X], op: Op, x: X) -> X:
    match op:
        case Conv():
            return builder.conv_bn(op, x)
        case Pool():
            return builder.pool(op, x)
        case GlobalAvgPool():
            return builder.global_avg_pool(op, x)
        case Dense():
            return builder.dense(op, x)


def _branch(builder: Builder[X], branch: Branch, x: X) -> X:
    for op in branch:
        x = _op(builder, op, x)
    return x


def _concat(builder: Builder[X], stage: Stage, x: X, name: str) -> X:
    return builder.concat([_branch(builder, branch, x) for branch in stage.branches], name)


def _residual_block(builder: Builder[X], stage: Stage, run: Blocks, index: int, x: X) -> X:
    name = f"{stage.name}_{index}"
    mixed = _concat(builder, stage, x, f"{name}_mixed")
    up = builder.up_conv(mixed, builder.channels(x), f"{name}_conv")
    x = builder.scaled_residual(x, up, run.scale, name)
    if run.activation is not None:
        x = builder.activation(x, f"{name}_ac")
    return x


def _stage(builder: Builder[X], stage: Stage, x: X) -> X:
    if stage.blocks:
        runs = [run for run in stage.blocks for _ in range(run.count)]
        for index, run in enumerate(runs, start=1):
            x = _residual_block(builder, stage, run, index, x)
        return x
    if len(stage.branches) > 1:
        return _concat(builder, stage, x, stage.name)
    return _branch(builder, stage.branches[0], x)


# The names Keras gives unnamed layers: the first "conv2d", then "conv2d_1", ...
AUTO_NAMES = {"InputLayer": "input_layer", "Conv2D": "conv2d",
              "BatchNormalization": "batch_normalization", "Activation": "activation",
              "MaxPooling2D": "max_pooling2d", "AveragePooling2D": "average_pooling2d"}
POOL_TYPES = {"max": "MaxPooling2D", "avg": "AveragePooling2D"}


@dataclass(frozen=True)
class Layer:
    """One Keras layer: its name, class, output shape (no batch axis) and the shapes of its
    weights in Keras's order, of which ``non_trainable`` are BatchNorm's moving statistics."""

    name: str
    type: str
    output_shape: Shape
    weights: tuple[Shape, ...] = ()
    non_trainable: int = 0
    inputs: tuple[int, ...] = field(default=(), repr=False)  # indices in creation order

    @property
    def parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.weights)


@dataclass(frozen=True)
class StageSummary:
    """A stage with what it adds up to: its output shape, its parameters, its last layer."""

    stage: Stage
    output_shape: Shape
    parameters: int
    last_layer: str


class _Graph:
    """A ``Builder`` of plain layers in creation order, named as Keras names them in a
    fresh session; a tensor is a layer's index."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self._uids: Counter[str] = Counter()

    def add(self, type_: str, shape: Shape, inputs: tuple[int, ...],
            weights: tuple[Shape, ...] = (), non_trainable: int = 0,
            name: str | None = None) -> int:
        name = name or self._auto_name(type_)
        self.layers.append(Layer(name, type_, shape, weights, non_trainable, inputs))
        return len(self.layers) - 1

    def shape(self, x: int) -> Shape:
        return self.layers[x].output_shape

    def channels(self, x: int) -> int:
        return self.shape(x)[-1]

    def _auto_name(self, type_: str) -> str:
        prefix = AUTO_NAMES[type_]
        uid = self._uids[prefix]
        self._uids[prefix] += 1
        return f"{prefix}_{uid}" if uid else prefix

    def conv_bn(self, op: Conv, x: int) -> int:
        shape = self.shape(x)
        out = _windowed(shape, op.kernel, op.strides, op.padding, op.filters)
        x = self.add("Conv2D", out, (x,), ((*op.kernel, shape[-1], op.filters),), name=op.name)
        # BatchNorm(scale=False): beta trains; the moving mean and variance do not.
        x = self.add("BatchNormalization", out, (x,), ((op.filters,),) * 3, 2 * op.filters,
                     name=_named(op.name, "_bn"))
        return self.add("Activation", out, (x,), name=_named(op.name, "_ac"))

    def pool(self, op: Pool, x: int) -> int:
        shape = self.shape(x)
        out = _windowed(shape, (op.size, op.size), op.strides, op.padding, shape[-1])
        return self.add(POOL_TYPES[op.kind], out, (x,))

    def global_avg_pool(self, op: GlobalAvgPool, x: int) -> int:
        return self.add("GlobalAveragePooling2D", self.shape(x)[-1:], (x,), name=op.name)

    def dense(self, op: Dense, x: int) -> int:
        weights = ((self.channels(x), op.units), (op.units,))
        return self.add("Dense", (op.units,), (x,), weights, name=op.name)

    def concat(self, xs: list[int], name: str) -> int:
        channels = sum(self.channels(x) for x in xs)
        return self.add("Concatenate", (*self.shape(xs[0])[:2], channels), tuple(xs), name=name)

    def up_conv(self, x: int, channels: int, name: str) -> int:
        shape = (*self.shape(x)[:2], channels)
        weights = ((1, 1, self.channels(x), channels), (channels,))
        return self.add("Conv2D", shape, (x,), weights, name=name)

    def scaled_residual(self, shortcut: int, residual: int, scale: float, name: str) -> int:
        return self.add("ScaledResidual", self.shape(shortcut), (shortcut, residual), name=name)

    def activation(self, x: int, name: str) -> int:
        return self.add("Activation", self.shape(x), (x,), name=name)


def _extent(size: int, kernel: int, strides: int, padding: str) -> int:
    """One spatial side after a conv or pooling window."""
    if padding == SAME:
        return math.ceil(size / strides)
    return (size - kernel) // strides + 1


def _windowed(shape: Shape, kernel: tuple[int, int], strides: int, padding: str,
              channels: int) -> Shape:
    height, width, _ = shape
    return (_extent(height, kernel[0], strides, padding),
            _extent(width, kernel[1], strides, padding), channels)


def _named(name: str | None, suffix: str) -> str | None:
    return None if name is None else name + suffix


@functools.cache
def _build() -> tuple[tuple[Layer, ...], tuple[StageSummary, ...]]:
    """The layers in creation order, and the stages they add up to."""
    g = _Graph()
    x = g.add("InputLayer", INPUT_SHAPE, ())
    summaries = []
    start = 0
    for stage in STAGES:
        x = walk(g, (stage,), x)
        parameters = sum(layer.parameters for layer in g.layers[start:])
        summaries.append(StageSummary(stage, g.shape(x), parameters, g.layers[x].name))
        start = len(g.layers)
    return tuple(g.layers), tuple(summaries)


def _keras_order(layers: tuple[Layer, ...]) -> list[Layer]:
    """Keras's Functional order: the longest path to the output first, ties broken by
    the depth-first walk from the output that visits each layer's inputs in order."""
    depth = [0] * len(layers)
    for index in reversed(range(len(layers))):  # creation order is topological
        for source in layers[index].inputs:
            depth[source] = max(depth[source], depth[index] + 1)
    visited: dict[int, int] = {}
    stack = [len(layers) - 1]
    while stack:
        index = stack.pop()
        if index not in visited:
            visited[index] = len(visited)
            stack.extend(reversed(layers[index].inputs))
    order = sorted(visited, key=lambda index: (-depth[index], visited[index]))
    return [layers[index] for index in order]


def layers() -> list[Layer]:
    """Every layer of ``build_model()``, in the order of ``model.layers``."""
    return _keras_order(_build()[0])


def stages() -> tuple[StageSummary, ...]:
    """The stages from the stem to the classifier, each with its shape and parameters."""
    return _build()[1]


def parameter_counts() -> dict[str, int]:
    """Total, trainable and non-trainable parameters, as Keras counts them."""
    all_layers = _build()[0]
    total = sum(layer.parameters for layer in all_layers)
    frozen = sum(layer.non_trainable for layer in all_layers)
    return {"total": total, "trainable": total - frozen, "non_trainable": frozen}

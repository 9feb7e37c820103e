"""Export the Keras network to ONNX directly, without tf2onnx or Keras's own exporter.

The functional graph is walked node by node, in the order Keras itself executes it,
and each layer becomes one or a few ONNX operators. The input stays NHWC
(``images``, ``[batch, 299, 299, 3]``, already scaled to [-1, 1]); one Transpose
makes it NCHW, which is what ONNX ``Conv`` wants, and every 4-D tensor stays NCHW
from there on. BatchNormalization after a linear Conv2D is folded into the conv's
weights and bias.

Memory: besides Keras's own copy, the weights exist once as ONNX initializers and
once serialized (about 0.45 GB for this network), far below a TensorFlow-graph route.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from ..network.model import ScaledResidual
from ..store.atomic import atomic_file

INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "logits", "features")
BATCH_DIM = "batch"
DEFAULT_OPSET = 17
# IR version 8 is the one released with opset 17; older runtimes refuse IR versions
# newer than they know, and nothing here needs a newer one.
IR_VERSION = 8
# Keras channels-last axis -> axis of the same tensor in our NCHW layout (4-D only).
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}


class OnnxExportError(ExportError):
    """The model holds something this exporter cannot translate."""


def export_onnx(model: keras.Model, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (one NHWC image input, one or several outputs) to ``path`` as ONNX.

    The graph input is ``images`` (float32, NHWC, dynamic batch). A model whose output is
    a dict has one graph output per key, named by the key. A single output is named
    ``probabilities`` when the model ends in a softmax classifier, ``logits`` when it
    ends in a linear Dense, and ``features`` otherwise. Every output has a dynamic batch.
    The file is written to a temporary name in the same folder and then moved into
    place, so a reader never sees half a file. Raises ``OnnxExportError`` for layers
    or settings it does not know.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = _Converter(model).convert().to_proto(model.name)
    onnx_model = helper.make_model(graph, producer_name="irv2cli", ir_version=IR_VERSION,
                                   opset_imports=[helper.make_opsetid("", opset)])
    with atomic_file(path) as stream:
        stream.write(onnx_model.SerializeToString())
    return path


class _GraphWriter:
    """Collects the nodes and initializers of the graph being built."""

    def __init__(self, public_names: Sequence[str]):
        # The public names are reserved so that no layer can take them.
        self._used_names: set[str] = {INPUT_NAME, *OUTPUT_NAMES, *public_names}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def unique_name(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``... if it is taken already."""
        name, index = base, 1
        while name in self._used_names:
            index += 1
            name = f"{base}_{index}"
        self._used_names.add(name)
        return name

    def initializer(self, base: str, array: np.ndarray) -> str:
        """Add ``array`` as a float32 initializer; return its name."""
        name = self.unique_name(base)
        self.initializers.append(
            numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], base: str, **attributes) -> str:
        """Add one single-output node; return the name of its output tensor."""
        output = self.unique_name(base)
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [output], name=output, **attributes)
        )
        return output

    def rename(self, old: str, new: str) -> None:
        """Rename tensor ``old`` to ``new`` wherever a node produces or reads it."""
        for node in self.nodes:
            for field in (node.input, node.output):
                for index, name in enumerate(field):
                    if name == old:
                        field[index] = new


class _Graph:
    """What the walk produces: nodes, weights, graph inputs and outputs."""

    def __init__(self, writer: _GraphWriter, inputs: list[onnx.ValueInfoProto],
                 outputs: list[onnx.ValueInfoProto]):
        self.writer = writer
        self.inputs = inputs
        self.outputs = outputs

    def to_proto(self, name: str) -> onnx.GraphProto:
        return helper.make_graph(self.writer.nodes, name, self.inputs, self.outputs,
                                 self.writer.initializers)


def _value_info(name: str, keras_shape: Sequence[int | None]) -> onnx.ValueInfoProto:
    """A float32 graph input/output with Keras's shape; unknown sizes become symbolic."""
    dims = [dim if dim is not None else (BATCH_DIM if axis == 0 else f"{name}_dim{axis}")
            for axis, dim in enumerate(keras_shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _to_numpy(variable) -> np.ndarray:
    """A Keras variable as a float32 NumPy array (a copy, dropped by the caller soon)."""
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _pair(value) -> tuple[int, int]:
    """Keras's int-or-tuple hyper-parameters as a 2-tuple."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _same_pads(size: int | None, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of TF/Keras 'same' along one axis; any odd pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    if stride == 1:
        total = effective - 1
    elif size is None:
        raise OnnxExportError("'same' padding with stride > 1 needs a known input size")
    else:
        total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _onnx_pads(padding: str, spatial: Sequence[int | None], kernel: tuple[int, int],
               strides: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> list[int]:
    """ONNX ``pads`` ([top, left, bottom, right]) for Keras 'valid' or 'same' padding."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding != "same":
        raise OnnxExportError(f"padding {padding!r} is not supported")
    (top, bottom), (left, right) = (
        _same_pads(spatial[axis], kernel[axis], strides[axis], dilation[axis]) for axis in (0, 1)
    )
    return [top, left, bottom, right]


def _channel_axis(axis: int, rank: int) -> int:
    """Map a Keras axis of a rank-``rank`` tensor to our layout (NCHW when 4-D)."""
    axis = axis % rank
    if rank == 4:
        return _NHWC_TO_NCHW_AXIS[axis]
    if rank == 2:
        return axis
    raise OnnxExportError(f"tensors of rank {rank} are not supported (only 2-D and 4-D)")


def _output_name(operation) -> str:
    """``probabilities``, ``logits`` or ``features``, from the layer that makes the output."""
    activation = operation.get_config().get("activation")
    if isinstance(operation, keras.layers.Dense | keras.layers.Activation) and (
        activation == "softmax"
    ):
        return "probabilities"
    if type(operation) is keras.layers.Dense and activation in (None, "linear"):
        return "logits"
    return "features"


def _named_outputs(model: keras.Model) -> list[tuple[str, object]]:
    """The graph outputs and their names: a dict output's keys, or for a single output
    its kind (see ``_output_name``)."""
    if isinstance(model.output, dict):
        named = list(model.output.items())
    elif len(model.outputs) == 1:
        (tensor,) = model.outputs
        named = [(_output_name(tensor._keras_history.operation), tensor)]
    else:
        raise OnnxExportError(
            f"{model.name}: {len(model.outputs)} outputs in a list; name them with a dict")
    if INPUT_NAME in dict(named):
        raise OnnxExportError(f"{model.name}: an output may not be named {INPUT_NAME!r}")
    return named


def _graph_nodes(model: keras.Model) -> list:
    """The model's call nodes in execution order, as Keras's own ``Function`` runs them.

    Keras 3 keeps no public node list; ``_nodes_by_depth`` is what
    ``Function._run_through_graph`` iterates (deepest first), and unlike
    ``model.operations`` it also gets layers that are called more than once right.
    """
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise OnnxExportError(f"{model.name}: only Keras functional models can be exported")
    return [node for depth in sorted(nodes_by_depth, reverse=True)
            for node in nodes_by_depth[depth] if node.operation is not None and not node.is_input]


class _Converter:
    """Translates one Keras functional model, node by node, into a ``_GraphWriter``."""

    def __init__(self, model: keras.Model):
        if len(model.inputs) != 1:
            raise OnnxExportError(f"{model.name}: expected one input, got {len(model.inputs)}")
        self.model = model
        self.outputs = _named_outputs(model)
        self.writer = _GraphWriter([name for name, _ in self.outputs])
        self.nodes = _graph_nodes(model)
        self.names: dict[int, str] = {}  # id(KerasTensor) -> ONNX tensor name
        self.folded: set[int] = set()  # id(Node) of BatchNormalizations folded into a conv
        self.consumers: dict[int, list] = {}
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
        self.handlers: dict[type, Callable] = {
            keras.layers.Conv2D: self._conv2d,
            keras.layers.BatchNormalization: self._batch_norm,
            keras.layers.Activation: self._activation,
            keras.layers.MaxPooling2D: self._pooling,
            keras.layers.AveragePooling2D: self._pooling,
            keras.layers.Concatenate: self._concatenate,
            ScaledResidual: self._scaled_residual,
            keras.layers.GlobalAveragePooling2D: self._global_pooling,
            keras.layers.GlobalMaxPooling2D: self._global_pooling,
            keras.layers.Dense: self._dense,
        }

    # -- driver -----------------------------------------------------------------------------

    def convert(self) -> _Graph:
        """Walk the whole graph; return its nodes and graph inputs/outputs."""
        source = self.model.inputs[0]
        self.names[id(source)] = self._input(source)
        for node in self.nodes:
            if id(node) in self.folded:
                continue
            handler = self.handlers.get(type(node.operation))
            if handler is None:
                layer = node.operation
                raise OnnxExportError(
                    f"layer {layer.name!r} of type {type(layer).__name__} cannot be exported "
                    f"to ONNX (known: {', '.join(sorted(t.__name__ for t in self.handlers))})"
                )
            self._check_supported(node.operation)
            handler(node)
        for output_name, target in self.outputs:
            self._output(target, output_name)
        return _Graph(
            self.writer,
            [_value_info(INPUT_NAME, source.shape)],
            [_value_info(output_name, target.shape) for output_name, target in self.outputs],
        )

    def _input(self, tensor) -> str:
        """The graph input; a 4-D (NHWC) image batch is transposed to NCHW once, here."""
        if len(tensor.shape) == 4:
            return self.writer.node("Transpose", [INPUT_NAME], "images_nchw", perm=[0, 3, 1, 2])
        _channel_axis(0, len(tensor.shape))  # rejects unsupported ranks
        return INPUT_NAME

    def _output(self, tensor, output_name: str) -> None:
        """Give the final tensor the public name, transposing 4-D features back to NHWC."""
        last = self.names[id(tensor)]
        if len(tensor.shape) == 4:
            self.writer.nodes.append(
                helper.make_node("Transpose", [last], [output_name], name=output_name,
                                 perm=[0, 2, 3, 1])
            )
        elif last == INPUT_NAME:
            self.writer.nodes.append(helper.make_node("Identity", [last], [output_name]))
        else:
            self.writer.rename(last, output_name)

    @staticmethod
    def _check_supported(layer) -> None:
        """Reject channels-first, non-float32 and quantized layers."""
        config = layer.get_config()
        if config.get("data_format", "channels_last") != "channels_last":
            raise OnnxExportError(f"layer {layer.name!r}: only channels_last is supported")
        if getattr(layer, "compute_dtype", "float32") != "float32" or config.get(
            "quantization_config"
        ):
            raise OnnxExportError(f"layer {layer.name!r}: only float32 layers are supported")

    def _source(self, node, index: int = 0) -> str:
        return self.names[id(node.input_tensors[index])]

    def _set_output(self, node, name: str) -> None:
        (tensor,) = node.outputs
        self.names[id(tensor)] = name

    def _apply_activation(self, activation, tensor: str, base: str) -> str:
        """Append the named Keras activation after ``tensor`` ('linear' adds nothing)."""
        if activation in (None, "linear"):
            return tensor
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            raise OnnxExportError(f"{base}: activation {activation!r} is not supported")
        attributes = {"axis": 1} if activation == "softmax" else {}
        return self.writer.node(_ACTIVATIONS[activation], [tensor], base, **attributes)

    # -- layers -----------------------------------------------------------------------------

    def _foldable_batch_norm(self, conv_node):
        """The BatchNormalization node that alone reads this conv's output, if any."""
        (output,) = conv_node.outputs
        readers = self.consumers.get(id(output), [])
        if (len(readers) != 1 or type(readers[0].operation) is not keras.layers.BatchNormalization
                or any(output is t for t in self.model.outputs)
                or conv_node.operation.get_config()["activation"] != "linear"):
            return None
        bn = readers[0].operation
        return readers[0] if bn.axis in (-1, 3) else None

    def _conv2d(self, node) -> None:
        """Conv2D (+ folded BatchNormalization) + its own activation."""
        layer, config = node.operation, node.operation.get_config()
        kernel_size, strides = _pair(config["kernel_size"]), _pair(config["strides"])
        dilations = _pair(config["dilation_rate"])
        pads = _onnx_pads(config["padding"], node.input_tensors[0].shape[1:3], kernel_size,
                          strides, dilations)
        kernel = _to_numpy(layer.kernel)
        bias = _to_numpy(layer.bias) if layer.use_bias else None
        bn_node = self._foldable_batch_norm(node)
        if bn_node is not None:
            kernel, bias = _fold_batch_norm(kernel, bias, bn_node.operation)
        inputs = [self._source(node),
                  self.writer.initializer(f"{layer.name}/kernel", kernel.transpose(3, 2, 0, 1))]
        del kernel
        if bias is not None:
            inputs.append(self.writer.initializer(f"{layer.name}/bias", bias))
        out = self.writer.node("Conv", inputs, layer.name, kernel_shape=list(kernel_size),
                               strides=list(strides), dilations=list(dilations), pads=pads,
                               group=int(config["groups"]))
        out = self._apply_activation(config["activation"], out, f"{layer.name}_activation")
        self._set_output(node, out)
        if bn_node is not None:
            self.folded.add(id(bn_node))
            self._set_output(bn_node, out)

    def _batch_norm(self, node) -> None:
        """A BatchNormalization that could not be folded: ONNX BatchNormalization on axis 1."""
        layer = node.operation
        rank = len(node.input_tensors[0].shape)
        if _channel_axis(layer.axis, rank) != 1:
            raise OnnxExportError(f"{layer.name}: BatchNormalization must be on the channel axis")
        mean, variance = _to_numpy(layer.moving_mean), _to_numpy(layer.moving_variance)
        gamma = _to_numpy(layer.gamma) if layer.scale else np.ones_like(mean)
        beta = _to_numpy(layer.beta) if layer.center else np.zeros_like(mean)
        inputs = [self._source(node)] + [
            self.writer.initializer(f"{layer.name}/{label}", array)
            for label, array in (("gamma", gamma), ("beta", beta), ("moving_mean", mean),
                                 ("moving_variance", variance))
        ]
        self._set_output(node, self.writer.node("BatchNormalization", inputs, layer.name,
                                                epsilon=float(layer.epsilon)))

    def _activation(self, node) -> None:
        layer = node.operation
        activation = layer.get_config()["activation"]
        self._set_output(node, self._apply_activation(activation, self._source(node), layer.name))

    def _pooling(self, node) -> None:
        """MaxPooling2D / AveragePooling2D; 'same' average pooling ignores the padding."""
        layer, config = node.operation, node.operation.get_config()
        pool_size = _pair(config["pool_size"])
        strides = _pair(config["strides"] or config["pool_size"])
        pads = _onnx_pads(config["padding"], node.input_tensors[0].shape[1:3], pool_size, strides)
        attributes = {"kernel_shape": list(pool_size), "strides": list(strides), "pads": pads}
        if type(layer) is keras.layers.AveragePooling2D:
            op_type = "AveragePool"
            attributes["count_include_pad"] = 0
        else:
            op_type = "MaxPool"
        self._set_output(node, self.writer.node(op_type, [self._source(node)], layer.name,
                                                **attributes))

    def _concatenate(self, node) -> None:
        layer = node.operation
        axis = _channel_axis(layer.axis, len(node.outputs[0].shape))
        inputs = [self._source(node, index) for index in range(len(node.input_tensors))]
        self._set_output(node, self.writer.node("Concat", inputs, layer.name, axis=axis))

    def _scaled_residual(self, node) -> None:
        """``shortcut + scale * residual``; a scale of exactly 1 needs no Mul."""
        layer = node.operation
        shortcut, residual = self._source(node, 0), self._source(node, 1)
        if layer.scale != 1.0:
            scale = self.writer.initializer(f"{layer.name}/scale",
                                            np.array(layer.scale, dtype=np.float32))
            residual = self.writer.node("Mul", [residual, scale], f"{layer.name}_scaled")
        self._set_output(node, self.writer.node("Add", [shortcut, residual], layer.name))

    def _global_pooling(self, node) -> None:
        """GlobalAverage/MaxPooling2D; flattened to [batch, channels] unless keepdims."""
        layer = node.operation
        op_type = ("GlobalAveragePool" if type(layer) is keras.layers.GlobalAveragePooling2D
                   else "GlobalMaxPool")
        out = self.writer.node(op_type, [self._source(node)], layer.name)
        if not layer.get_config().get("keepdims", False):
            out = self.writer.node("Flatten", [out], f"{layer.name}_flat", axis=1)
        self._set_output(node, out)

    def _dense(self, node) -> None:
        """Dense on a [batch, features] tensor: Gemm, then its activation."""
        layer, config = node.operation, node.operation.get_config()
        if len(node.input_tensors[0].shape) != 2:
            raise OnnxExportError(f"{layer.name}: Dense is supported on 2-D inputs only")
        inputs = [self._source(node),
                  self.writer.initializer(f"{layer.name}/kernel", _to_numpy(layer.kernel))]
        if layer.use_bias:
            inputs.append(self.writer.initializer(f"{layer.name}/bias", _to_numpy(layer.bias)))
        out = self.writer.node("Gemm", inputs, layer.name)
        self._set_output(node, self._apply_activation(config["activation"], out,
                                                      f"{layer.name}_activation"))


def _fold_batch_norm(kernel: np.ndarray, bias: np.ndarray | None,
                     bn) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference BatchNorm into a HWIO conv kernel and bias, computed in float64.

    ``bn(conv(x) + b) = conv(x) * f + (b - mean) * f + beta`` with
    ``f = gamma / sqrt(variance + epsilon)``, per output channel.
    """
    mean = _to_numpy(bn.moving_mean).astype(np.float64)
    factor = 1.0 / np.sqrt(_to_numpy(bn.moving_variance).astype(np.float64) + bn.epsilon)
    if bn.scale:
        factor *= _to_numpy(bn.gamma)
    beta = _to_numpy(bn.beta).astype(np.float64) if bn.center else 0.0
    folded_bias = beta + ((bias if bias is not None else 0.0) - mean) * factor
    folded_kernel = (kernel * factor).astype(np.float32)
    return folded_kernel, folded_bias.astype(np.float32)

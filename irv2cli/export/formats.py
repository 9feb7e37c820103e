"""Export the network for other runtimes: ONNX, OpenVINO IR, TensorFlow SavedModel, .keras.

Beside each artifact goes its preprocessing contract, ``<artifact>.preprocessing.json``
(``preprocessing.json`` inside a SavedModel folder): what the input must be and what the
output means, so the model can be served without irv2cli. Everything is written into a
scratch folder next to the output and moved into place only when complete, so a failed
export leaves nothing behind, and an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError, Hint
from ..spec import EXPORT_FORMATS, SPEC
from ..store.atomic import place
from ..store.weights import Progress, ensure_weights, file_md5
from ..version import __version__

CONTRACT_SUFFIX = ".preprocessing.json"
CONTRACT_IN_FOLDER = "preprocessing.json"
# Input name of every export that lets us choose it (the ONNX exporter's name).
INPUT_NAME = "images"
SERVING_SIGNATURE = "serving_default"
OPENVINO_HINT = "pip install 'irv2cli[openvino]'"
# File formats whose loaders need a suffix: it is appended when the output lacks it.
_SUFFIXES = {"openvino": ".xml", "keras": ".keras"}


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a written artifact, as its own runtime names it."""

    name: str
    shape: list[int | str]  # "batch" for the dynamic batch axis


def artifact_paths(fmt: str, output: str | os.PathLike) -> list[Path]:
    """The files (or folder) ``fmt`` writes for ``output``, the main one first."""
    output = Path(output)
    suffix = _SUFFIXES.get(fmt)
    if suffix and output.suffix != suffix:
        output = output.with_name(output.name + suffix)
    if fmt == "openvino":
        return [output, output.with_suffix(".bin")]
    return [output]


def contract_path(fmt: str, artifact: Path) -> Path:
    """Where the preprocessing contract of ``artifact`` goes."""
    if fmt == "savedmodel":
        return artifact / CONTRACT_IN_FOLDER
    return artifact.with_name(artifact.name + CONTRACT_SUFFIX)


def export_model(fmt: str, output: str | os.PathLike, weights: str | os.PathLike | None = None,
                 include_top: bool = True, pooling: str | None = None, force: bool = False,
                 progress: Progress | None = None, head: str | os.PathLike | None = None
                 ) -> list[Path]:
    """Write the network as ``fmt`` to ``output``, with its preprocessing contract beside it.

    ``weights``: a weights file (official .h5 layout or Keras 3 .weights.h5); default: the
    official weights for ``include_top``, downloaded into the cache if missing (``progress``
    is called while bytes arrive). ``pooling`` ("avg"/"max") applies only without the top.
    An existing output is refused unless ``force``. Returns the paths written.

    ``head``: a head file (``irv2 train``), fused after the features (a dense layer and
    its softmax: MatMul, Add, Softmax in ONNX), so the output is the probabilities of
    its classes, which the contract names; the head must come from these weights.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(
            f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    if include_top and pooling is not None:
        raise ExportError("pooling applies only to the feature extractor (include_top=False).")
    loaded_head = None
    if head is not None:
        from ..results.heads import load_head
        from ..store.artifacts import network_key

        loaded_head = load_head(head)
        loaded_head.check_network(network_key(None if weights is None else Path(weights)),
                                  head)
    artifacts = artifact_paths(fmt, output)
    contract = contract_path(fmt, artifacts[0])
    # A SavedModel's contract lives in its folder and moves with it.
    targets = artifacts if fmt == "savedmodel" else [*artifacts, contract]
    _check_targets(fmt, targets, force)
    openvino = _import_openvino() if fmt == "openvino" else None

    from ..network.h5weights import load_weights
    from ..network.model import build_model

    weight_file = SPEC.weights(include_top)
    weights_path = (ensure_weights(include_top, progress=progress) if weights is None
                    else Path(weights))
    if loaded_head is not None:
        model = _with_head(weights_path, loaded_head)
    else:
        model = build_model(include_top=include_top, pooling=pooling)
        load_weights(model, weights_path)
    md5 = weight_file.md5 if weights is None else file_md5(weights_path)

    folder = artifacts[0].parent
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{artifacts[0].name}.", suffix=".tmp", dir=folder))
    try:
        staged = scratch / artifacts[0].name
        if fmt == "onnx":
            signature = _write_onnx(model, staged)
        elif fmt == "openvino":
            signature = _write_openvino(model, staged, openvino)
        elif fmt == "savedmodel":
            signature = _write_savedmodel(model, staged)
        else:
            signature = _write_keras(model, staged)
        del model
        document = preprocessing_contract(
            fmt, signature, include_top=include_top, pooling=pooling,
            weights={"file": weights_path.name, "md5": md5, "official": md5 == weight_file.md5},
            files=[path.name for path in artifacts],
        )
        if loaded_head is not None:
            document["model"]["head"] = {"file": Path(head).name,
                                         "identity": loaded_head.identity}
            document["output"].update(_head_meaning(loaded_head))
        staged_contract = scratch / contract.relative_to(folder)
        staged_contract.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        for target in targets:
            _move_into_place(scratch / target.name, target, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [*artifacts, contract]


def _with_head(weights: Path, head):
    """The network's features (``avg_pool``) with ``head`` after them: one output, the
    softmax of a dense layer holding the head's weights."""
    from ..network.heads import load_named_outputs
    from ..network.quiet import keras
    from ..spec import FEATURES

    network = load_named_outputs(weights)
    dense = keras.layers.Dense(len(head.classes), activation="softmax", name="head")
    probabilities = dense(network.output[FEATURES])
    dense.set_weights([head.weights.T, head.bias])
    return keras.Model(network.input, probabilities, name="inception_resnet_v2_head")


def _head_meaning(head) -> dict:
    return {"kind": "probabilities",
            "meaning": f"softmax probabilities over the head's {len(head.classes)} classes; "
                       "index i is classes[i]",
            "classes": list(head.classes)}


def _check_targets(fmt: str, targets: list[Path], force: bool) -> None:
    """Refuse to write over existing paths unless ``force``, and never over a stranger's folder."""
    for target in targets:
        if not (target.exists() or target.is_symlink()):
            continue
        if not force:
            raise ExportError(f"{target} already exists", Hint.REPLACE)
        if target.is_dir() and not target.is_symlink():
            if fmt != "savedmodel":
                raise ExportError(f"{target} is a folder", Hint.OTHER_OUTPUT)
            if any(target.iterdir()) and not (target / "saved_model.pb").is_file():
                raise ExportError(
                    f"{target} is a folder that holds no SavedModel, so it is not replaced "
                    "even when forced", Hint.OTHER_OUTPUT)


def _move_into_place(staged: Path, target: Path, scratch: Path) -> None:
    """Move ``staged`` onto ``target``; an old ``target`` goes into ``scratch`` (deleted later)."""
    if target.exists() or target.is_symlink():
        os.replace(target, scratch / f".replaced-{target.name}")
    place(staged, target)


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise ExportError(
            f"exporting to OpenVINO needs the openvino package: {OPENVINO_HINT}"
        ) from None
    return openvino


def _batch_shape(dims) -> list[int | str]:
    """Static sizes as ints, the dynamic batch axis as "batch"."""
    return [dim if isinstance(dim, int) and dim >= 0 else "batch" for dim in dims]


def _write_onnx(model, path: Path) -> tuple[TensorInfo, TensorInfo]:
    import onnx

    from .onnx_graph import export_onnx

    export_onnx(model, path)
    graph = onnx.load(str(path), load_external_data=False).graph

    def info(value) -> TensorInfo:
        dims = [d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim]
        return TensorInfo(value.name, _batch_shape(dims))

    initializers = {tensor.name for tensor in graph.initializer}
    (source,) = [value for value in graph.input if value.name not in initializers]
    (target,) = graph.output
    return info(source), info(target)


def _write_openvino(model, path: Path, openvino) -> tuple[TensorInfo, TensorInfo]:
    """Through ONNX: our exporter, then OpenVINO's ONNX frontend; weights stay float32."""
    from .onnx_graph import export_onnx

    intermediate = export_onnx(model, path.with_name(f".{path.stem}.intermediate.onnx"))
    converted = openvino.convert_model(intermediate)
    intermediate.unlink()
    # save_model halves the weights to float16 unless told not to.
    openvino.save_model(converted, path, compress_to_fp16=False)

    def info(port) -> TensorInfo:
        dims = [dim.get_length() if dim.is_static else -1 for dim in port.get_partial_shape()]
        return TensorInfo(port.get_any_name(), _batch_shape(dims))

    (source,), (target,) = converted.inputs, converted.outputs
    return info(source), info(target)


def _write_savedmodel(model, path: Path) -> tuple[TensorInfo, TensorInfo]:
    """Keras 3's own SavedModel export; the names are read back from the serving signature."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)
    model.export(str(path), format="tf_saved_model", verbose=False, input_signature=[spec])
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    signature = saved.meta_graphs[0].signature_def[SERVING_SIGNATURE]

    def info(name, tensor) -> TensorInfo:
        return TensorInfo(name, _batch_shape([dim.size for dim in tensor.tensor_shape.dim]))

    (source,), (target,) = signature.inputs.items(), signature.outputs.items()
    return info(*source), info(*target)


def _write_keras(model, path: Path) -> tuple[TensorInfo, TensorInfo]:
    model.save(path)
    return (TensorInfo(model.layers[0].name, _batch_shape(model.input_shape)),
            TensorInfo(model.output_names[0], _batch_shape(model.output_shape)))


_USAGE = {
    "onnx": "onnxruntime.InferenceSession(PATH).run(None, {{'{input}': x}})[0]",
    "openvino": "openvino.Core().compile_model(PATH)({{'{input}': x}})[0]",
    "savedmodel": ("tf.saved_model.load(PATH).signatures['" + SERVING_SIGNATURE
                   + "']({input}=x)['{output}']"),
    "keras": ("import irv2cli.network.model (it registers the custom layer "
              "irv2cli>ScaledResidual), "
              "then keras.saving.load_model(PATH)(x)"),
}


def _output_meaning(include_top: bool, pooling: str | None, shape: list) -> dict:
    if include_top:
        from ..results.labels import class_index_path

        class_index = class_index_path()
        return {
            "kind": "probabilities",
            "meaning": f"softmax probabilities over the {SPEC.num_classes} ImageNet classes; "
                       "index i is the class under key \"i\" of imagenet_class_index.json, "
                       "[WordNet ID, label] (the order of Keras's decode_predictions)",
            "classes": {
                "file": "irv2cli/data/imagenet_class_index.json",
                "md5": hashlib.md5(class_index.read_bytes()).hexdigest(),
            },
        }
    if pooling is not None:
        how = {"avg": "global average", "max": "global max"}[pooling]
        return {"kind": "features",
                "meaning": f"{SPEC.feature_dim}-d image features: {how} pooling of the last "
                           "convolution (conv_7b); no classifier"}
    return {"kind": "features",
            "meaning": f"the last convolution's feature map (conv_7b), "
                       f"{'x'.join(str(d) for d in shape[1:])} per image (NHWC); no classifier"}


def preprocessing_contract(fmt: str, signature: tuple[TensorInfo, TensorInfo], *,
                           include_top: bool, pooling: str | None, weights: dict,
                           files: list[str]) -> dict:
    """The facts a consumer of the artifact needs, as a JSON-ready dict."""
    source, target = signature
    size = SPEC.input_size
    shorter_side = SPEC.shorter_side()
    return {
        "format": fmt,
        "files": files,
        "model": {"name": "Inception-ResNet-V2", "include_top": include_top,
                  "pooling": pooling},
        "input": {
            "name": source.name,
            "layout": "NHWC",
            "shape": source.shape,
            "dtype": "float32",
            "channel_order": "RGB",
            "scaling": "x / 127.5 - 1",
            "mean": [127.5, 127.5, 127.5],
            "std": [127.5, 127.5, 127.5],
            "range": [-1.0, 1.0],
            "resize": {
                "recommended": {
                    "method": "center-crop",
                    "description": f"resize the shorter side to {shorter_side} px "
                                   f"({SPEC.default_interpolation}), then take the centre "
                                   f"{size}x{size}",
                    "shorter_side": shorter_side,
                    "crop": [size, size],
                    "crop_fraction": SPEC.crop_fraction,
                    "interpolation": SPEC.default_interpolation,
                },
                "keras_load_img": {
                    "method": "squash",
                    "description": f"resize the whole image to {size}x{size} ignoring the "
                                   "aspect ratio (nearest), as "
                                   f"keras.utils.load_img(path, target_size=({size}, {size})) "
                                   "does",
                    "size": [size, size],
                    "interpolation": "nearest",
                },
            },
            "decoding": "apply the EXIF orientation; composite transparency on white",
        },
        "output": {
            "name": target.name,
            "shape": target.shape,
            "dtype": "float32",
            **_output_meaning(include_top, pooling, target.shape),
        },
        "usage": _USAGE[fmt].format(input=source.name, output=target.name),
        "weights": weights,
        "producer": f"irv2cli {__version__}",
    }

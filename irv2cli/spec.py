"""The model's facts in one place: input size, preprocessing defaults, weight files."""

from __future__ import annotations

from dataclasses import dataclass

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/"


@dataclass(frozen=True)
class WeightFile:
    """One official weights file: where Keras serves it and its MD5."""

    filename: str
    md5: str
    include_top: bool

    @property
    def url(self) -> str:
        return KERAS_BASE_URL + self.filename


BACKENDS = ("auto", "onnx", "keras")
# fp32: the network as trained (the default, exact); int8: ONNX Runtime's statically
# quantized graph, built per weights file from calibration images (onnx backend only).
PRECISIONS = ("fp32", "int8")
RUNNERS = ("local", "ray")  # where a run over inputs goes: this machine, or a Ray cluster
# The engines' named outputs: class probabilities (N, 1000), and the features that feed
# the classifier (N, 1536), the global average pooling of the last convolution.
PROBABILITIES = "probabilities"
FEATURES = "features"
EXPORT_FORMATS = ("onnx", "openvino", "savedmodel", "keras")
RESULT_FORMATS = ("json", "jsonl", "csv")  # what predict writes
FEATURE_FORMATS = ("parquet", "npy", "jsonl")  # what embed writes
RESIZE_MODES = ("center-crop", "squash")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
# Pillow's own warning threshold for decompression bombs.
DEFAULT_MAX_PIXELS = 89_478_485


@dataclass(frozen=True)
class ModelSpec:
    """Inception-ResNet-V2 as published with the TF-slim ImageNet weights."""

    input_size: int = 299
    num_classes: int = 1000
    feature_dim: int = 1536
    param_count: int = 55_873_736
    # timm's pretrained_cfg for these weights: shorter side to round(299 / 0.8975),
    # then the centre 299x299, bicubic (80.46% top-1 on ImageNet-val).
    crop_fraction: float = 0.8975
    default_resize: str = "center-crop"
    default_interpolation: str = "bicubic"
    top_weights: WeightFile = WeightFile(
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
        "e693bd0210a403b3192acc6073ad2e96",
        include_top=True,
    )
    notop_weights: WeightFile = WeightFile(
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "d19885ff4a710c122648d3b5c3b684e4",
        include_top=False,
    )

    def shorter_side(self, size: int | None = None) -> int:
        """What center-crop resizes the shorter side to before cropping ``size`` (333)."""
        return round((size or self.input_size) / self.crop_fraction)

    def weights(self, include_top: bool = True) -> WeightFile:
        return self.top_weights if include_top else self.notop_weights


SPEC = ModelSpec()

"""INT8 encoders as explicit Q/DQ graphs: static quantization on real images.

Only the encoder is quantized; it is where the time goes, and the decoder's
log-probabilities decide the words, so they stay in floating point. Two
flavours of the same calibration, each written beside encoder.onnx and
reused until re-made:

- `encoder.int8.onnx` for ONNX Runtime on CPUs: unsigned 8-bit activations
  with a zero point and signed weights, the fast path of its x86 kernels;
- `encoder.qdq.onnx` for TensorRT: what its explicit quantization accepts
  (TensorRT 11 has nothing else: no calibrator, no INT8 builder flag):
  signed 8-bit, symmetric (zero points 0) activations per tensor and weights
  per output channel, biases left in float (TensorRT folds them itself).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from streamcap.backends.calibration import OrtCalibrationReader, calibration_images
from streamcap.backends.export import OnnxModel
from streamcap.model.encoder import EncoderSpec

log = logging.getLogger(__name__)


FLAVOURS = ("onnxruntime", "tensorrt")


def int8_encoder_path(onnx: OnnxModel, flavour: str = "onnxruntime") -> Path:
    return onnx.dir / ("encoder.int8.onnx" if flavour == "onnxruntime" else "encoder.qdq.onnx")


def quantize_encoder(onnx: OnnxModel, calib_dir: str | Path, calib_images: int = 64, batch_size: int = 8,
                     flavour: str = "onnxruntime") -> Path:
    """Write the int8 encoder of this flavour beside the fp32 one, calibrated on `calib_dir`."""
    paths = calibration_images(calib_dir, calib_images)
    target = int8_encoder_path(onnx, flavour)
    quantize_onnx_encoder(onnx.path("encoder"), target, paths, onnx.encoder_spec, batch_size, flavour)
    target.with_suffix(".json").write_text(json.dumps({"calibration": str(calib_dir), "images": len(paths), "flavour": flavour}, indent=2))
    log.info("quantized %s to int8 for %s on %d images from %s", onnx.path("encoder").name, flavour, len(paths), calib_dir)
    return target


def quantize_onnx_encoder(source: Path, target: Path, paths: list[Path], spec: EncoderSpec, batch_size: int = 8,
                          flavour: str = "onnxruntime") -> Path:
    """QDQ int8 (per-channel weights) copy of an encoder graph, calibrated on `paths`."""
    if flavour not in FLAVOURS:
        raise ValueError(f"int8 flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_suffix(".pre.onnx")
    # Shape inference and ONNX Runtime's graph optimisations first, as its docs
    # recommend: the dynamic "same" padding folds away and every Conv gets shapes.
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    # The stem and head convolutions stay fp32: on efficientnet_lite0 that lifts the
    # cosine of int8 to fp32 grids from 0.77-0.92 to 0.86-0.94 on dev images, for
    # about 8% of the multiply-adds (the usual first/last-layer exception).
    convs = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
    tmp = target.with_suffix(".tmp.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantizer logs one INFO line per rescaled weight to root
    try:
        tensorrt = flavour == "tensorrt"
        quantize_static(
            str(prepared), str(tmp), OrtCalibrationReader(paths, spec, batch_size),
            quant_format=QuantFormat.QDQ, per_channel=True,
            # ONNX Runtime: u8 activations x s8 weights is the fast path of its x86 int8 kernels.
            # TensorRT: signed and symmetric only, and biases stay float.
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,  # Entropy and Percentile measured no better here
            nodes_to_exclude=[convs[0], convs[-1]],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False} if tensorrt else {},
        )
    finally:
        root.setLevel(level)
    tmp.replace(target)
    prepared.unlink(missing_ok=True)
    return target

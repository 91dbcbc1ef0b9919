"""Real images for INT8 calibration, preprocessed exactly as inference sees them.

ONNX Runtime's static quantizer reads these batches for both INT8 encoders
(its own and TensorRT's Q/DQ graph), so both quantize against the same
activation statistics, of frames preprocessed exactly as at inference.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamcap.model.encoder import EncoderSpec
from streamcap.model.preprocess import preprocess
from streamcap.model.images import ImageReadError, read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def calibration_images(directory: str | Path, limit: int = 256) -> list[Path]:
    """Up to `limit` image files from `directory`, spread evenly over its sorted listing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: calibration directory not found; give a folder of real camera frames or photos")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{directory}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) to calibrate on")
    stride = max(1, len(paths) // limit)  # a strided sample, not the first N, for variety
    return paths[::stride][:limit]


def calibration_batches(paths: list[Path], spec: EncoderSpec, batch_size: int, drop_last: bool = True) -> Iterator[np.ndarray]:
    """float32 (B, 3, S, S) batches; TensorRT's calibrator wants equal batches, hence drop_last."""
    frames: list[np.ndarray] = []
    for path in paths:
        try:
            frames.append(read_image(path))
        except ImageReadError as exc:
            log.warning("calibration: %s", exc)
            continue
        if len(frames) == batch_size:
            yield preprocess(frames, spec).numpy()
            frames = []
    if frames and not drop_last:
        yield preprocess(frames, spec).numpy()


class OrtCalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over `calibration_batches`."""

    def __init__(self, paths: list[Path], spec: EncoderSpec, batch_size: int = 8, input_name: str = "images"):
        self.paths, self.spec, self.batch_size, self.input_name = paths, spec, batch_size, input_name
        self.rewind()

    def get_next(self) -> dict | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._batches = calibration_batches(self.paths, self.spec, self.batch_size, drop_last=False)

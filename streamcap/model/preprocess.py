"""Frames -> the encoder's input, defined once, run on the CPU or on the encoder's device.

The rule: BGR uint8 frames of any size are stretched (not cropped; see
`streamcap.model.encoder`) to the encoder's square input with OpenCV's
INTER_AREA when the frame is taller than the input, else INTER_LINEAR; grey
frames become BGR; then RGB, minus the mean, over the standard deviation,
channels first.

`preprocess` runs it on the CPU with OpenCV. `preprocess_on` runs it for a
backend on its device: on a GPU the uint8 frames are uploaded as they are and
resized there (`resize="device"`), or resized by OpenCV first so only the
small square crosses the bus (`resize="host"`); either way the arithmetic of
the normalisation is the same torch code as on the CPU.

The device resize is OpenCV's own arithmetic written as two matrices per
frame size, (S, H) and (W, S), cached per size: the exact box weights of
INTER_AREA, and the bilinear weights of INTER_LINEAR rounded to OpenCV's
11-bit fixed point. Measured against OpenCV (tests/unit/test_preprocess.py):
shrinking (the usual camera case) differs by one grey level on under 0.05% of
the pixels (exact halves rounded the other way); enlarging, by one level on
about an eighth of them (OpenCV truncates twice in its fixed point); a frame
already at the input size is copied exactly. Frames taller than the input but
narrower (OpenCV's mixed INTER_AREA case) are resized by OpenCV on the host.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

RESIZE_MODES = ("device", "host")
RESIZE_CHUNK = 32  # frames resized per product: 32 float 1080p frames are 0.8 GB on the device
LINEAR_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: bilinear weights in 11-bit fixed point for uint8


def interpolation_for(height: int, size: int) -> int:
    return cv2.INTER_AREA if height > size else cv2.INTER_LINEAR


def as_bgr(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """One BGR (or grey) uint8 frame -> uint8 (S, S, 3) BGR."""
    frame = as_bgr(frame)
    return cv2.resize(frame, (size, size), interpolation=interpolation_for(frame.shape[0], size))


def resize_batch(frames_bgr: list[np.ndarray], size: int) -> np.ndarray:
    """Frames of any size -> uint8 (B, S, S, 3) BGR."""
    batch = np.empty((len(frames_bgr), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames_bgr):
        batch[i] = resize_frame(frame, size)
    return batch


def normalize(pixels_bgr: torch.Tensor, spec) -> torch.Tensor:
    """(B, 3, S, S) BGR pixel values (uint8, or floats holding whole numbers) -> normalised float32 RGB, on their device."""
    rgb = pixels_bgr.flip(1).float()  # (B, 3, S, S)
    mean = torch.tensor(spec.mean_rgb, dtype=torch.float32, device=rgb.device)[:, None, None]  # (3, 1, 1)
    std = torch.tensor(spec.std_rgb, dtype=torch.float32, device=rgb.device)[:, None, None]
    return ((rgb - mean) / std).contiguous()


def preprocess(frames_bgr: list[np.ndarray], spec) -> torch.Tensor:
    """BGR uint8 frames of any size -> normalised float tensor (B, 3, S, S), on the CPU."""
    pixels = torch.from_numpy(resize_batch(frames_bgr, spec.input_size)).permute(0, 3, 1, 2)  # (B, 3, S, S) uint8
    return normalize(pixels, spec)


def area_weights(source: int, size: int) -> np.ndarray:
    """(size, source) float64: OpenCV's INTER_AREA box weights for shrinking `source` pixels to `size` (source >= size)."""
    scale = source / size
    weights = np.zeros((size, source))
    for d in range(size):  # as OpenCV's computeResizeAreaTab
        start, stop = d * scale, (d + 1) * scale
        cell = min(scale, source - start)
        first, last = math.ceil(start), min(math.floor(stop), source - 1)
        first = min(first, last)
        if first - start > 1e-3:
            weights[d, first - 1] = (first - start) / cell
        weights[d, first:last] = 1.0 / cell
        if stop - last > 1e-3:
            weights[d, last] = min(min(stop - last, 1.0), cell) / cell
    return weights


def linear_weights(source: int, size: int) -> np.ndarray:
    """(size, source) float64: OpenCV's INTER_LINEAR weights for uint8 (half-pixel centres, 11-bit fixed point)."""
    scale = source / size
    weights = np.zeros((size, source))
    for d in range(size):
        position = np.float32((d + 0.5) * scale - 0.5)  # OpenCV computes the position in float
        s = math.floor(position)
        frac = float(position) - s
        if s < 0:
            s, frac = 0, 0.0
        if s >= source - 1:
            s, frac = source - 1, 0.0
        right = round(frac * LINEAR_COEF_SCALE)
        weights[d, s] += (LINEAR_COEF_SCALE - right) / LINEAR_COEF_SCALE
        if right:
            weights[d, s + 1] += right / LINEAR_COEF_SCALE
    return weights


class DeviceResizer:
    """OpenCV's resize of uint8 frames as two matrix products on a device, with the weights cached per frame size."""

    def __init__(self, size: int, device: torch.device):
        self.size, self.device = size, torch.device(device)
        self._weights: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def handles(self, height: int, width: int) -> bool:
        """False for OpenCV's mixed case (shrink rows with INTER_AREA, grow columns), left to OpenCV."""
        return not (height > self.size and width < self.size)

    def weights(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows (S, H), columns (W, S)) float32 on the device."""
        if (height, width) not in self._weights:
            make = area_weights if interpolation_for(height, self.size) == cv2.INTER_AREA else linear_weights
            rows = torch.from_numpy(make(height, self.size)).float()  # (S, H)
            columns = torch.from_numpy(make(width, self.size).T.copy()).float()  # (W, S)
            self._weights[(height, width)] = (rows.to(self.device), columns.to(self.device))
        return self._weights[(height, width)]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) BGR frames of one size, on the device -> (N, 3, S, S) float32 whole pixel values."""
        N, H, W, _ = pixels.shape
        rows, columns = self.weights(H, W)
        x = pixels.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        # Shrink the longer side first: fewer multiply-adds for the second product.
        y = rows @ (x @ columns) if W >= H else (rows @ x) @ columns  # (N, 3, S, S)
        return y.round_().clamp_(0, 255)


def preprocess_on(frames_bgr: list[np.ndarray], spec, device: torch.device, resize: str = "device",
                  resizer: DeviceResizer | None = None) -> torch.Tensor:
    """`preprocess` for a backend on `device`: (B, 3, S, S) float32 there.

    Only uint8 pixels cross the bus: whole frames resized on the device by
    `resizer` (`resize="device"`), or squares resized by OpenCV first
    (`resize="host"`, or no resizer: always so on the CPU backends).
    """
    device = torch.device(device)
    size = spec.input_size
    if resize == "host" or resizer is None:
        if device.type == "cpu":
            return preprocess(frames_bgr, spec)
        pixels = torch.from_numpy(resize_batch(frames_bgr, size)).pin_memory().to(device, non_blocking=True)  # (B, S, S, 3)
        return normalize(pixels.permute(0, 3, 1, 2), spec)
    pinned = device.type == "cuda"  # page-locked staging lets the upload run without the host waiting
    out = torch.empty(len(frames_bgr), 3, size, size, device=device)  # (B, 3, S, S)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(frames_bgr):
        shape = (*frame.shape[:2], 3)
        groups.setdefault(shape if resizer.handles(*shape[:2]) else (size, size, 3), []).append(i)
    for shape, members in groups.items():
        for start in range(0, len(members), RESIZE_CHUNK):
            indices = members[start : start + RESIZE_CHUNK]
            staged = torch.empty((len(indices), *shape), dtype=torch.uint8, pin_memory=pinned)  # (N, H, W, 3)
            host = staged.numpy()
            for j, i in enumerate(indices):
                frame = as_bgr(frames_bgr[i])
                host[j] = frame if frame.shape == shape else resize_frame(frame, size)
            index = torch.tensor(indices)
            out.index_copy_(0, index.pin_memory().to(device, non_blocking=True) if pinned else index,
                            resizer(staged.to(device, non_blocking=True)))
    return normalize(out, spec)

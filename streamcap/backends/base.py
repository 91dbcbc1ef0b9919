"""The backend interface: what `streamcap caption` and the pipeline call.

Every backend `encode`s frames into a grid, `decode`s the grid with the shared
search (`streamcap.model.decoding.decode_grid`), and `describe`s frames (both,
returning each caption with its concept probabilities). A backend only
supplies the encoder and the three decoder pieces (`prepare`, `init_state`,
`step`); `SearchCaptioner` runs greedy or beam search over them, so all
backends decode the same way.

The search works on CPU tensors (it indexes beams with CPU index tensors), so a
GPU backend's `step` takes and returns CPU tensors and keeps its own device
copies; `DeviceMemory` uploads the per-image memory once per search, not once
per step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from streamcap.model.decoding import DecodeOptions, Description, decode_grid, describe
from streamcap.model.checkpoint import CaptionModelSpec
from streamcap.model.decoder import Memory, State
from streamcap.model.encoder import EncoderSpec
from streamcap.model.search import Hypothesis


class BackendUnavailable(RuntimeError):
    """This backend cannot run here; the message says why in one line."""


@runtime_checkable
class CaptionBackend(Protocol):
    name: str  # e.g. "onnxruntime-cpu", "tensorrt-fp16"
    spec: CaptionModelSpec
    options: DecodeOptions

    @property
    def model_name(self) -> str: ...

    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor: ...  # (B, P, D)

    def decode(self, grid: torch.Tensor) -> tuple[list[Hypothesis], torch.Tensor | None]: ...

    def caption(self, frames_bgr: list[np.ndarray]) -> list[str]: ...

    def describe(self, frames_bgr: list[np.ndarray]) -> list[Description]: ...


class SearchCaptioner:
    """Shared decode/caption over a backend's `prepare`, `init_state` and `step`."""

    name = "base"

    def __init__(self, spec: CaptionModelSpec, options: DecodeOptions, model_path: str):
        self.spec, self.options, self.model_path = spec, options, model_path
        self.selection = ""  # set by load_captioner: which backend was picked and why

    @property
    def model_name(self) -> str:
        return Path(self.model_path).stem if self.model_path else "model"

    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, grid: torch.Tensor) -> tuple[Memory, torch.Tensor | None]:
        """(decoder memory, concept probabilities (B, C) or None)."""
        raise NotImplementedError

    def init_state(self, memory: Memory) -> State:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    @torch.no_grad()
    def decode(self, grid: torch.Tensor) -> tuple[list[Hypothesis], torch.Tensor | None]:
        # This class has the decoder's prepare/init_state/step, so the one search dispatch serves it as is.
        return decode_grid(self, self.spec.vocab, grid, self.options, self.spec.concept_names)

    def caption(self, frames_bgr: list[np.ndarray]) -> list[str]:
        return [d.text for d in self.describe(frames_bgr)]

    def describe(self, frames_bgr: list[np.ndarray]) -> list[Description]:
        if not frames_bgr:
            return []
        hypotheses, concepts = self.decode(self.encode(frames_bgr))
        return describe(self.spec.vocab, hypotheses, concepts, self.spec.concept_names)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} model={self.model_name}>"


class DeviceMemory:
    """Device copies of the search's CPU memory tuple, uploaded once per search.

    Beam search expands the memory once and then passes the same tuple object
    to every step, so identity is a sound cache key.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._source: Memory | None = None
        self._copy: Memory = ()

    def get(self, memory: Memory) -> Memory:
        if memory is not self._source:
            self._copy = tuple(m.to(self.device, non_blocking=True) for m in memory)
            self._source = memory
        return self._copy


def resize_batch(frames_bgr: list[np.ndarray], size: int) -> np.ndarray:
    """Frames of any size -> uint8 (B, S, S, 3) BGR, resized as `encoder.preprocess` does."""
    batch = np.empty((len(frames_bgr), size, size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames_bgr):
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        interpolation = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_LINEAR
        batch[i] = cv2.resize(frame, (size, size), interpolation=interpolation)
    return batch


def preprocess_on(frames_bgr: list[np.ndarray], spec: EncoderSpec, device: torch.device) -> torch.Tensor:
    """`encoder.preprocess` with the arithmetic on `device`: (B, 3, S, S) float32.

    Resizing stays on the CPU (OpenCV), but only uint8 pixels cross the bus,
    a quarter of the float bytes, and the normalisation runs on the GPU.
    """
    pixels = torch.from_numpy(resize_batch(frames_bgr, spec.input_size))  # (B, S, S, 3) uint8 BGR
    pixels = pixels.to(device, non_blocking=True)
    rgb = pixels.flip(-1).float()  # (B, S, S, 3)
    mean = torch.tensor(spec.mean_rgb, dtype=torch.float32, device=device)
    std = torch.tensor(spec.std_rgb, dtype=torch.float32, device=device)
    return ((rgb - mean) / std).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)

"""The backend interface: what `streamcap caption` and the pipeline call.

Every backend `encode`s frames into a grid, `decode`s the grid with the shared
search (`streamcap.model.decoding.decode_grid`), and `describe`s frames (both,
returning each caption with its concept probabilities). A backend only
supplies the encoder and the three decoder pieces (`prepare`, `init_state`,
`step`); `SearchCaptioner` runs greedy or beam search over them, so all
backends decode the same way.

The search runs on the device of the tensors a backend's `prepare` returns
(`streamcap.model.search`): a GPU backend keeps grid, memory, state and
log-probabilities on the GPU, and only the finished captions come back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from streamcap.model.decoding import DecodeOptions, Description, decode_grid, describe
from streamcap.model.checkpoint import CaptionModelSpec
from streamcap.model.decoder import Memory, State
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

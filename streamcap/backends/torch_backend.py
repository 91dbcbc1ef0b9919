"""PyTorch backend: the checkpoint's decoder and the encoder module, on the CPU or a CUDA device."""
from __future__ import annotations

import numpy as np
import torch

from streamcap.backends.base import BackendUnavailable, DeviceMemory, SearchCaptioner, preprocess_on
from streamcap.model.checkpoint import CaptionModelSpec, CheckpointError
from streamcap.model.decoder import Memory, State
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import ImageEncoder


class TorchCaptioner(SearchCaptioner):
    def __init__(self, spec: CaptionModelSpec, decoder: torch.nn.Module, encoder: ImageEncoder, options: DecodeOptions,
                 model_path: str = "", device: str = "cpu", precision: str = "fp32"):
        if encoder.feature_dim != spec.decoder.feature_dim or encoder.name != spec.encoder:
            raise CheckpointError(
                f"{model_path or 'model'}: decoder was trained on {spec.encoder} features "
                f"({spec.decoder.feature_dim}-d) but the encoder is {encoder.name} ({encoder.feature_dim}-d); "
                f"use encoder {spec.encoder}"
            )
        super().__init__(spec, options, model_path)
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device visible to torch")
        self.device = torch.device(device)
        # fp16 only pays on a GPU; on the CPU it is slower than fp32, so it is not offered there.
        self.half = precision == "fp16" and device == "cuda"
        self.name = f"torch-{device}" + ("-fp16" if self.half else "")
        self.encoder = encoder.to(self.device)
        if self.half:
            self.encoder.half()
        self.decoder = decoder.to(self.device)
        self._memory = DeviceMemory(self.device)

    @torch.no_grad()
    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        images = preprocess_on(frames_bgr, self.encoder.spec, self.device)  # (B, 3, S, S)
        grid = self.encoder(images.half() if self.half else images)  # (B, P, D)
        return grid.float().cpu()

    @torch.no_grad()
    def prepare(self, grid: torch.Tensor) -> tuple[Memory, torch.Tensor | None]:
        memory, concepts = self.decoder.prepare(grid.to(self.device))
        return tuple(m.cpu() for m in memory), None if concepts is None else concepts.cpu()

    def init_state(self, memory: Memory) -> State:
        return tuple(s.cpu() for s in self.decoder.init_state(memory))

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        if self.device.type == "cpu":
            return self.decoder.step(tokens, state, memory)
        device_state = tuple(s.to(self.device, non_blocking=True) for s in state)
        logprobs, new_state = self.decoder.step(tokens.to(self.device), device_state, self._memory.get(memory))
        return logprobs.cpu(), tuple(s.cpu() for s in new_state)

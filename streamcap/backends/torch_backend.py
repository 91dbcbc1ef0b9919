"""PyTorch backend: the checkpoint's decoder and the encoder module, on the CPU or a CUDA device.

On CUDA everything stays on the GPU: frames go up as uint8 and are resized
and normalised there (`streamcap.model.preprocess`), the search runs on the
GPU (`streamcap.model.search`), and the decoder step replays from CUDA graphs
(`streamcap.backends.cuda_graphs`).
"""
from __future__ import annotations

import numpy as np
import torch

from streamcap.backends.base import BackendUnavailable, SearchCaptioner
from streamcap.backends.cuda_graphs import Capture, GraphedStep
from streamcap.model.checkpoint import CaptionModelSpec, CheckpointError
from streamcap.model.decoder import Memory, State
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import ImageEncoder
from streamcap.model.preprocess import DeviceResizer, preprocess_on


class TorchCaptioner(SearchCaptioner):
    def __init__(self, spec: CaptionModelSpec, decoder: torch.nn.Module, encoder: ImageEncoder, options: DecodeOptions,
                 model_path: str = "", device: str = "cpu", precision: str = "fp32", max_batch: int = 8,
                 cuda_graphs: bool = True, resize: str = "device", capture: Capture | None = None):
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
        self.resize = resize
        self.resizer = DeviceResizer(encoder.spec.input_size, self.device) if self.device.type != "cpu" else None
        self.graphed: GraphedStep | None = None
        if cuda_graphs and (self.device.type == "cuda" or capture is not None):
            rows = max_batch * max(1, options.beam_size)
            self.graphed = GraphedStep(self.decoder.step, rows, capture)

    @torch.no_grad()
    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        """(B, P, D) float32 on this backend's device."""
        images = preprocess_on(frames_bgr, self.encoder.spec, self.device, self.resize, self.resizer)  # (B, 3, S, S)
        return self.encoder(images.half() if self.half else images).float()  # (B, P, D)

    @torch.no_grad()
    def prepare(self, grid: torch.Tensor) -> tuple[Memory, torch.Tensor | None]:
        return self.decoder.prepare(grid.to(self.device, torch.float32))

    def init_state(self, memory: Memory) -> State:
        return self.decoder.init_state(memory)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        if self.graphed is not None:
            return self.graphed(tokens, state, memory)
        return self.decoder.step(tokens, state, memory)

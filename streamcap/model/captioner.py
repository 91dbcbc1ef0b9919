"""The captioner: frames in, caption text out, on PyTorch.

It joins an encoder, a decoder checkpoint and a search. The accelerated
backends replace `encode` and the decoder step but keep this search, so every
backend decodes the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamcap.model.checkpoint import DEFAULT_MODEL, CaptionModelSpec, CheckpointError, load_checkpoint
from streamcap.model.encoder import ImageEncoder, build_encoder
from streamcap.model.search import Hypothesis, beam_search, greedy_search

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    length_penalty: float = 0.0
    max_len: int = 34


@torch.no_grad()
def decode_grid(decoder, vocab, grid: torch.Tensor, options: DecodeOptions) -> list[Hypothesis]:
    """Greedy or beam search over a PyTorch decoder, for a batch of encoder grids (B, P, D)."""
    memory = decoder.prepare(grid)
    state = decoder.init_state(memory)
    if options.beam_size <= 1:
        return greedy_search(decoder.step, state, memory, vocab.start_index, vocab.end_index, options.max_len,
                             banned_after=vocab.banned_after)
    return beam_search(
        decoder.step, state, memory, vocab.start_index, vocab.end_index, options.max_len,
        beam_size=options.beam_size, length_penalty=options.length_penalty, banned_after=vocab.banned_after,
    )


class Captioner:
    def __init__(self, spec: CaptionModelSpec, encoder: ImageEncoder, decoder: torch.nn.Module, options: DecodeOptions, model_path: str = ""):
        if encoder.feature_dim != spec.decoder.feature_dim or encoder.name != spec.encoder:
            raise CheckpointError(
                f"{model_path or 'model'}: decoder was trained on {spec.encoder} features "
                f"({spec.decoder.feature_dim}-d) but the encoder is {encoder.name} ({encoder.feature_dim}-d); "
                f"use encoder {spec.encoder}"
            )
        self.spec, self.encoder, self.decoder, self.options = spec, encoder, decoder, options
        self.model_path = model_path

    @classmethod
    def load(
        cls,
        model_path: str | Path | None = None,
        beam_size: int | None = None,
        length_penalty: float | None = None,
        encoder_name: str | None = None,
        encoder_weights: str | None = None,
    ) -> "Captioner":
        path = Path(model_path) if model_path else DEFAULT_MODEL
        spec, decoder, _ = load_checkpoint(path)
        encoder = build_encoder(encoder_name or spec.encoder, encoder_weights)
        options = DecodeOptions(
            beam_size=spec.beam_size if beam_size is None else beam_size,
            length_penalty=spec.length_penalty if length_penalty is None else length_penalty,
            max_len=spec.max_len,
        )
        return cls(spec, encoder, decoder, options, str(path))

    @property
    def model_name(self) -> str:
        return Path(self.model_path).stem if self.model_path else "model"

    @torch.no_grad()
    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        return self.encoder(self.encoder.preprocess(frames_bgr))  # (B, P, D)

    def decode(self, grid: torch.Tensor) -> list[Hypothesis]:
        return decode_grid(self.decoder, self.spec.vocab, grid, self.options)

    def caption(self, frames_bgr: list[np.ndarray]) -> list[str]:
        if not frames_bgr:
            return []
        return [self.spec.vocab.decode(h.tokens) for h in self.decode(self.encode(frames_bgr))]

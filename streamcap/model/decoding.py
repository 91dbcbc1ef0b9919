"""Decoding: the one search dispatch every backend uses, and what it returns.

A backend (PyTorch, ONNX Runtime, TensorRT; see `streamcap.backends`) encodes
frames into a grid and supplies the decoder contract (`prepare`,
`init_state`, `step`); `decode_grid` runs greedy or beam search over it under
the same step rules (`streamcap.model.grounding`), so every backend decodes
the same way and returns the same `Description`s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from streamcap.model.checkpoint import CaptionModelSpec
from streamcap.model.grounding import GroundingOptions, StepRules
from streamcap.model.search import Hypothesis, beam_search, greedy_search


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    length_penalty: float = 0.0
    max_len: int = 34
    grounding: GroundingOptions = GroundingOptions()

    @classmethod
    def for_model(cls, spec: CaptionModelSpec, beam_size: int | None = None, length_penalty: float | None = None) -> "DecodeOptions":
        """The checkpoint's own defaults, with the caller's overrides."""
        return cls(
            beam_size=spec.beam_size if beam_size is None else beam_size,
            length_penalty=spec.length_penalty if length_penalty is None else length_penalty,
            max_len=spec.max_len,
            grounding=spec.grounding,
        )


@dataclass(frozen=True)
class Description:
    """What the captioner says about one frame: the caption and its concept probabilities."""

    text: str
    concepts: dict[str, float]  # concept -> probability; empty for a model without a concept head


@torch.no_grad()
def decode_grid(decoder, vocab, grid: torch.Tensor, options: DecodeOptions, concept_names: tuple[str, ...] = ()) -> tuple[list[Hypothesis], torch.Tensor | None]:
    """Greedy or beam search for a batch of encoder grids (B, P, D): (best hypothesis per image, concepts (B, C) or None).

    The search runs on the device the decoder's memory lives on; the captions
    and the concept probabilities come back to the host once, at the end.

    `decoder` is anything with the decoder contract (a PyTorch decoder, or a
    backend's prepare/init_state/step), so every backend searches this way.
    """
    memory, concepts = decoder.prepare(grid)
    state = decoder.init_state(memory)
    rules = StepRules(vocab, concept_names, concepts, options.grounding, device=memory[0].device)
    if options.beam_size <= 1:
        hypotheses = greedy_search(decoder.step, state, memory, vocab.start_index, vocab.end_index, options.max_len, rules)
    else:
        hypotheses = beam_search(
            decoder.step, state, memory, vocab.start_index, vocab.end_index, options.max_len,
            beam_size=options.beam_size, length_penalty=options.length_penalty, rules=rules,
        )
    return hypotheses, None if concepts is None else concepts.float().cpu()


def describe(vocab, hypotheses: list[Hypothesis], concepts: torch.Tensor | None, concept_names: tuple[str, ...]) -> list[Description]:
    probs = concepts.tolist() if concepts is not None else [[] for _ in hypotheses]
    return [Description(vocab.decode(h.tokens), {c: round(float(p), 4) for c, p in zip(concept_names, row)})
            for h, row in zip(hypotheses, probs)]

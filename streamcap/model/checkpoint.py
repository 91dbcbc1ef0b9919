"""Checkpoints: decoder weights plus everything needed to use them honestly.

A checkpoint holds the decoder's `state_dict` and config, the vocabulary, the
encoder's name (its weights come from its own package, never from here), the
decoding defaults and a format version. No pickled modules: it loads with
`torch.load(weights_only=True)`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.grounding import GroundingOptions
from streamcap.model.vocab import Vocabulary

FORMAT_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "assets" / "default.pt"


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not fit the model it is loaded into."""


@dataclass
class CaptionModelSpec:
    encoder: str
    decoder: DecoderConfig
    vocab: Vocabulary
    max_len: int = 34
    beam_size: int = 1
    length_penalty: float = 0.0
    grounding: GroundingOptions = field(default_factory=GroundingOptions)  # decoding defaults, tuned on dev
    info: dict = field(default_factory=dict)  # training command, data, scores

    @property
    def concept_names(self) -> tuple[str, ...]:
        return self.decoder.concept_names


def save_checkpoint(path: str | Path, spec: CaptionModelSpec, decoder: torch.nn.Module, half: bool = False, extra: dict | None = None) -> None:
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in decoder.state_dict().items()}
    payload = {
        "format_version": FORMAT_VERSION,
        "encoder": spec.encoder,
        "decoder": spec.decoder.to_dict(),
        "vocab": list(spec.vocab.words),
        "max_len": spec.max_len,
        "beam_size": spec.beam_size,
        "length_penalty": spec.length_penalty,
        "grounding": asdict(spec.grounding),
        "info": spec.info,
        "state_dict": state,
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-save never leaves a truncated checkpoint


def load_checkpoint(path: str | Path) -> tuple[CaptionModelSpec, torch.nn.Module, dict]:
    """(spec, decoder in eval mode with float32 weights, the raw payload)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a streamcap checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a streamcap checkpoint of format {FORMAT_VERSION}")
    config = DecoderConfig(**payload["decoder"])
    vocab = Vocabulary(payload["vocab"])
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"{path}: vocabulary has {len(vocab)} words but the decoder expects {config.vocab_size}; "
            "the file was assembled from mismatched parts, retrain or re-export it"
        )
    decoder = build_decoder(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    try:
        decoder.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit a {config.kind} decoder: {str(exc).splitlines()[0]}") from None
    decoder.eval()
    spec = CaptionModelSpec(
        encoder=payload["encoder"],
        decoder=config,
        vocab=vocab,
        max_len=payload["max_len"],
        beam_size=payload["beam_size"],
        length_penalty=payload["length_penalty"],
        grounding=GroundingOptions(**payload.get("grounding", {})),
        info=payload.get("info", {}),
    )
    return spec, decoder, payload

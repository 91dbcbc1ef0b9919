"""Small random caption checkpoints and real dev images for the backend tests.

Parity between backends does not need a trained model: a random decoder with
the real vocabulary and the real efficientnet_lite0 encoder exercises every
tensor the trained one does.
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamcap.model.checkpoint import CaptionModelSpec, save_checkpoint
from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.images import read_image
from streamcap.model.vocab import Vocabulary

KINDS = ["merge", "attention"]


def make_checkpoint(directory: Path, kind: str, shared_data: Path, seed: int = 0, beam_size: int = 1) -> Path:
    words = (shared_data / "glove" / "flickr8k_vocab.txt").read_text().split()
    vocab = Vocabulary(words)
    torch.manual_seed(seed)
    config = DecoderConfig(kind=kind, vocab_size=len(vocab), feature_dim=1280)
    decoder = build_decoder(config).eval()
    path = Path(directory) / f"{kind}.pt"
    save_checkpoint(path, CaptionModelSpec("efficientnet_lite0", config, vocab, beam_size=beam_size), decoder)
    return path


def dev_image_paths(shared_data: Path, count: int) -> list[Path]:
    names = (shared_data / "flickr8k" / "Flickr_8k.devImages.txt").read_text().split()
    return [shared_data / "flickr8k" / "Images" / name for name in names[:count]]


def dev_frames(shared_data: Path, count: int) -> list:
    return [read_image(p) for p in dev_image_paths(shared_data, count)]


def calibration_folder(folder: Path, shared_data: Path, count: int) -> Path:
    """`count` real training images symlinked into `folder`, so INT8 calibration never sees the dev images it is judged on."""
    names = (shared_data / "flickr8k" / "Flickr_8k.trainImages.txt").read_text().split()
    for name in names[:count]:
        (folder / name).symlink_to(shared_data / "flickr8k" / "Images" / name)
    return folder

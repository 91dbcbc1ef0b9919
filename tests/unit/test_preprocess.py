"""Preprocessing defined once, and its device version: OpenCV's resize as weight matrices, run here on the CPU.

Measured on 56 dev frames (Flickr8k 224x224, COCO 256x256, clip frames up to
640 wide, camera frames up to 960x540): the matrix resize is within one grey
level of OpenCV's everywhere, on under 0.1% of the pixels when shrinking.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _backend_models import dev_set_paths

from streamcap.backends.select import load_captioner
from streamcap.model.encoder import SPECS
from streamcap.model.images import read_image
from streamcap.model.preprocess import DeviceResizer, preprocess, preprocess_on, resize_frame

SPEC = SPECS["efficientnet_lite0"]


@pytest.fixture(scope="module")
def frames(shared_data):
    import cv2

    frames = [read_image(p) for p in dev_set_paths(shared_data, 16)]
    capture = cv2.VideoCapture(str(shared_data / "cctv_clips" / "videos" / "motorway-elevated.mp4"))  # 960x540 camera frames
    for _ in range(4):
        ok, frame = capture.read()
        assert ok
        frames.append(frame)
    capture.release()
    return frames


@pytest.mark.parametrize("shape", [(360, 640), (540, 960), (256, 256), (720, 1280), (1088, 960), (300, 225)])
def test_shrinking_is_opencvs_inter_area_within_a_grey_level(shape):
    frame = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = DeviceResizer(224, "cpu")(torch.from_numpy(frame)[None])[0].permute(1, 2, 0).numpy()
    difference = np.abs(got.astype(int) - resize_frame(frame, 224).astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.001


@pytest.mark.parametrize("shape", [(144, 176), (200, 400), (224, 300)])
def test_enlarging_is_opencvs_inter_linear_within_a_grey_level(shape):
    frame = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    got = DeviceResizer(224, "cpu")(torch.from_numpy(frame)[None])[0].permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - resize_frame(frame, 224).astype(int)).max() <= 1


def test_a_frame_at_the_input_size_is_copied_exactly():
    frame = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    got = DeviceResizer(224, "cpu")(torch.from_numpy(frame)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, frame)


def test_the_device_path_batches_mixed_sizes_grey_and_mixed_cases(frames):
    # given frames of several sizes, a grey one, and OpenCV's mixed case (taller, but narrower than the input)
    tall = np.random.default_rng(2).integers(0, 256, (400, 180, 3), dtype=np.uint8)
    batch = [*frames[:3], frames[40], frames[-1], frames[5][:, :, 0], tall]
    # when preprocessed by the device path (here on the CPU) and by OpenCV
    got = preprocess_on(batch, SPEC, torch.device("cpu"), "device", DeviceResizer(224, "cpu"))
    expected = preprocess(batch, SPEC)
    # then every frame is where it belongs, within one grey level (the mixed case exactly: OpenCV did it)
    assert got.shape == expected.shape == (7, 3, 224, 224)
    levels = (got - expected).abs().amax(dim=(1, 2, 3)) * SPEC.std_rgb[0]
    assert bool((levels <= 1.0 + 1e-4).all()) and float(levels[-1]) == 0.0


def test_captions_from_the_device_resize_are_todays(frames):
    # the shipped model, greedy, on 52 real frames resized both ways
    captioner = load_captioner(backend="onnxruntime-cpu", beam_size=1)
    resized = preprocess_on(frames, captioner.encoder_spec, torch.device("cpu"), "device",
                            DeviceResizer(captioner.encoder_spec.input_size, "cpu")).numpy()
    expected = captioner.caption(frames)
    hypotheses, concepts = captioner.decode(captioner.encode_images(resized))
    got = [captioner.spec.vocab.decode(h.tokens) for h in hypotheses]
    same = sum(a == b for a, b in zip(got, expected))
    assert same >= len(frames) - 2, [(a, b) for a, b in zip(got, expected) if a != b]

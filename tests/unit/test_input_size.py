"""The encoder's input size: decided in one function, honoured by every backend, part of every cache key."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from streamcap.backends.select import load_captioner
from streamcap.backends.tensorrt_build import batch_profiles, engine_cache_key
from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint
from streamcap.model.encoder import input_size_for


@pytest.fixture(scope="module")
def spec():
    return load_checkpoint(DEFAULT_MODEL)[0]


def test_the_config_wins_then_the_checkpoint_then_the_encoder(spec):
    # the shipped model: 224 on a CPU box, 320 on a GPU box (its model card has why)
    assert input_size_for(spec) == input_size_for(spec, "onnxruntime-cpu") == 224
    assert input_size_for(spec, "tensorrt") == input_size_for(spec, "torch-cuda") == 320
    assert input_size_for(spec, "torch-cuda", 320) == 320
    one_size = {k: v for k, v in spec.info.items() if not k.startswith("input_size")}
    carrying = dataclasses.replace(spec, info={**one_size, "input_size": 288})
    assert input_size_for(carrying, "tensorrt") == 288
    per_box = dataclasses.replace(spec, info={**one_size, "input_size_gpu": "320", "input_size_cpu": "224"})
    assert input_size_for(per_box, "tensorrt") == 320
    assert input_size_for(per_box, "torch-cuda") == 320
    assert input_size_for(per_box, "onnxruntime-cpu") == 224
    assert input_size_for(per_box, "onnxruntime-cuda", 256) == 256
    with pytest.raises(ValueError, match="input size 300: choose 224-640 in steps of 32"):
        input_size_for(spec, "torch-cpu", 300)


def test_engines_differ_by_input_size():
    key = dict(model_hash="h", trt_version="11.1.0", gpu_name="g", compute_capability="9.0", precision="fp16",
               profiles=batch_profiles(8, 3))
    assert engine_cache_key(**key, input_size=224) != engine_cache_key(**key, input_size=320)


def test_every_backend_sees_the_larger_square(shared_data):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _backend_models import dev_frames

    frames = dev_frames(shared_data, 4)
    standard = load_captioner(backend="onnxruntime-cpu", beam_size=1)
    larger = load_captioner(backend="onnxruntime-cpu", beam_size=1, input_size=320)
    torch_larger = load_captioner(backend="torch-cpu", beam_size=1, input_size=320)
    # a separate export, traced at 320, with a 10x10 grid
    assert larger.onnx.dir != standard.onnx.dir and larger.onnx.input_size == 320
    assert larger.encoder_spec.input_size == torch_larger.encoder.spec.input_size == 320
    grid = larger.encode(frames)
    assert grid.shape == (4, 100, 1280) and standard.encode(frames).shape == (4, 49, 1280)
    torch.testing.assert_close(torch_larger.encode(frames), grid, atol=2e-4, rtol=1e-3)
    # and the decoder, trained at 224, still describes the frames: the same words on both backends
    assert larger.caption(frames) == torch_larger.caption(frames)
    assert all(larger.caption(frames))

"""The TensorRT builder and runtime code against a stand-in of TensorRT 10 and of TensorRT 11 (tests/unit/_fake_tensorrt.py).

TensorRT cannot run here; everything up to it does: the typed graphs it is
given, the network flags, the profiles, the engine cache, the buffers bound
once per shape, and a captioner whose engines run the same graphs in ONNX
Runtime, compared with the ONNX Runtime backend word for word.
"""
from __future__ import annotations

import functools
import logging
import sys
from collections import Counter

import pytest
import torch
from _backend_models import calibration_folder, dev_frames, make_checkpoint
from _fake_tensorrt import engine_plan, make

from streamcap.backends import LOADERS, BackendUnavailable, load_captioner
from streamcap.backends.export import cached_export
from streamcap.backends.select import load_tensorrt
from streamcap.backends.tensorrt_backend import TensorRTCaptioner, TrtEngine
from streamcap.backends.tensorrt_build import build_engines, network_flags
from streamcap.model.decoding import DecodeOptions
from streamcap.model.checkpoint import load_checkpoint

FAKE_GPU = ("NVIDIA H200", "9.0")


@pytest.fixture
def gpu(request):
    """A GPU identity of this test's own, so its engines are built here, not found in another test's cache."""
    return (f"NVIDIA H200 ({request.node.name})", "9.0")


@pytest.fixture(params=["10.3.0", "11.1.0"])
def trt(request, monkeypatch):
    module = make(request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_data):
    return make_checkpoint(tmp_path_factory.mktemp("trt"), "attention-concepts", shared_data, beam_size=3)


@pytest.fixture(scope="module")
def onnx(checkpoint):
    return cached_export(checkpoint)


@pytest.fixture(scope="module")
def frames(shared_data):
    return dev_frames(shared_data, 6)


def _calls(trt, name):
    return [call[1:] for call in trt.calls if call[0] == name]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engines_are_strongly_typed_networks_of_the_typed_graphs(trt, onnx, precision, gpu):
    # when engines are built for batch 4 and beam 3
    engines, built = build_engines(onnx, precision, max_batch=4, beam_size=3, trt=trt, gpu=gpu)
    # then each graph became a strongly typed network: asked for with the flag on 10, by default on 11
    assert built and sorted(p.name for p in engines.glob("*.engine")) == ["encoder.engine", "prepare.engine", "step.engine"]
    assert [flags for (flags,) in _calls(trt, "create_network")] == [network_flags(trt)] * 3
    assert network_flags(trt) == (2 if trt.__version__.startswith("10.") else 0)
    plans = {graph: engine_plan(engines / f"{graph}.engine") for graph in ("encoder", "prepare", "step")}
    assert all(plan["strongly_typed"] for plan in plans.values())
    # with the precision in the graph, never in a builder flag (11 has none; strongly typed 10 refuses them)
    assert not _calls(trt, "set_flag")
    if precision == "fp32":
        assert _calls(trt, "clear_flag") == [("TF32",)] * 3 and all(plan["fp32_exact"] for plan in plans.values())
        assert {plan["onnx"] for plan in plans.values()} == {str(onnx.path(g)) for g in plans}
    else:
        assert all(plan["onnx"].endswith(f"{graph}.fp16.onnx") for graph, plan in plans.items())
    # and profiles cover the images for the encoder and prepare, images x beams for the step
    shapes = {name: (low[0], opt[0], high[0]) for name, low, opt, high in _calls(trt, "set_shape")}
    assert shapes["images"] == shapes["grid"] == (1, 4, 4) and shapes["tokens"] == (1, 12, 12)


def test_engines_are_cached_per_version_gpu_and_precision(onnx, gpu):
    ten, eleven = make("10.3.0"), make("11.1.0")
    first, built = build_engines(onnx, "fp16", 4, 3, trt=ten, gpu=gpu)
    again, rebuilt = build_engines(onnx, "fp16", 4, 3, trt=ten, gpu=gpu)
    assert built and not rebuilt and again == first
    assert len(_calls(ten, "build_serialized_network")) == 3  # the second call built nothing
    assert build_engines(onnx, "fp16", 4, 3, trt=eleven, gpu=gpu)[0] != first
    assert build_engines(onnx, "fp16", 4, 3, trt=ten, gpu=("Orin", "8.7"))[0] != first
    assert build_engines(onnx, "fp32", 4, 3, trt=ten, gpu=gpu)[0] != first
    # and an engine of one version does not load in another: it says so and names the file
    with pytest.raises(RuntimeError, match="encoder.engine: TensorRT cannot load this engine; delete it to rebuild"):
        TrtEngine(eleven, first / "encoder.engine", torch.device("cpu"))


def test_int8_quantizes_the_encoder_as_qdq_once_and_keeps_the_decoder_fp16(trt, onnx, tmp_path, shared_data, gpu):
    calib = calibration_folder(tmp_path, shared_data, 8)
    engines, _ = build_engines(onnx, "int8", 4, 3, calib_dir=calib, calib_images=8, trt=trt, gpu=gpu)
    plans = {graph: engine_plan(engines / f"{graph}.engine")["onnx"] for graph in ("encoder", "prepare", "step")}
    assert plans["encoder"].endswith("encoder.qdq.onnx")
    assert plans["prepare"].endswith("prepare.fp16.onnx") and plans["step"].endswith("step.fp16.onnx")
    assert not any(call for call in trt.calls if call[0] in ("int8_calibrator", "set_calibration_profile"))


def test_int8_without_calibration_images_says_how_to_get_them(trt, checkpoint, tmp_path, gpu):
    fresh = cached_export(checkpoint, cache_dir=tmp_path)  # an export without a quantized encoder yet
    with pytest.raises(BackendUnavailable, match="INT8 needs calibration images once: run `streamcap build-engine"):
        build_engines(fresh, "int8", 4, 3, trt=trt, gpu=gpu)


def test_a_captioner_over_the_engines_says_what_onnxruntime_says(trt, checkpoint, onnx, frames, gpu):
    # given fp32 engines and the onnxruntime backend over the same export
    engines, _ = build_engines(onnx, "fp32", max_batch=4, beam_size=3, trt=trt, gpu=gpu)
    spec = load_checkpoint(checkpoint)[0]
    options = DecodeOptions.for_model(spec)
    captioner = TensorRTCaptioner(onnx, engines, spec, options, str(checkpoint), "fp32", max_batch=4, trt=trt, device="cpu")
    reference = load_captioner(checkpoint, backend="onnxruntime-cpu")
    # when both describe six frames (two engine batches) with beam 3 and grounding
    got, expected = captioner.describe(frames), reference.describe(frames)
    # then captions and concept probabilities agree
    assert [d.text for d in got] == [d.text for d in expected]
    assert all(abs(a.concepts[c] - b.concepts[c]) < 1e-4 for a, b in zip(got, expected) for c in a.concepts)
    # and each engine bound its tensors once per shape, not once per step
    executions = Counter(stream for (stream,) in _calls(trt, "execute_async_v3"))
    rebinds = [name for (name, _) in _calls(trt, "set_input_shape") if name == "tokens"]
    assert sum(executions.values()) > 3 * len(rebinds) > 0


def test_auto_says_why_tensorrt_was_used(trt, checkpoint, gpu):
    loaders = {**LOADERS, "tensorrt": functools.partial(load_tensorrt, device="cpu", gpu=gpu)}
    first = load_captioner(checkpoint, backend="auto", precision="fp16", max_batch=2, loaders=loaders)
    assert first.name == "tensorrt-fp16"
    assert first.selection == f"tensorrt-fp16 (auto; tensorrt {trt.__version__}: built fp16 engines)"
    again = load_captioner(checkpoint, backend="auto", precision="fp16", max_batch=2, loaders=loaders)
    assert again.selection == f"tensorrt-fp16 (auto; tensorrt {trt.__version__}: cached fp16 engines)"


@pytest.mark.parametrize("version", ["8.6.1", "9.2.0", "12.0.0"])
def test_auto_says_why_tensorrt_was_not_used(version, checkpoint, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorrt", make(version))
    loaders = {**LOADERS, "tensorrt": functools.partial(load_tensorrt, device="cpu", gpu=FAKE_GPU)}
    with caplog.at_level(logging.INFO, logger="streamcap.backend"):
        captioner = load_captioner(checkpoint, backend="auto", loaders=loaders)
    assert captioner.name != "tensorrt-fp32"
    assert f"tensorrt: tensorrt {version} found; streamcap builds engines with TensorRT 10 or 11" in captioner.selection
    assert f"backend tensorrt unavailable: tensorrt {version} found" in caplog.text


def test_without_a_gpu_tensorrt_says_so(trt, checkpoint):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present here")
    captioner = load_captioner(checkpoint, backend="auto")
    assert f"tensorrt: tensorrt {trt.__version__}: no CUDA device visible to torch" in captioner.selection

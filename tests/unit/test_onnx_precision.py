"""The graphs TensorRT builds from, run in ONNX Runtime on the CPU: FP16 where safe, INT8 as Q/DQ nodes.

Stated tolerances (shipped model, dev images, the graph run as written: no
ONNX Runtime graph optimisation, so every Cast happens):
- FP16 encoder: grid relative L2 error <= 2%, pooled-grid cosine >= 0.999;
- FP16 prepare: memory relative error <= 1%; concept probabilities bit-identical
  (the concept head is kept in float32 and reads the float32 grid);
- FP16 step: log-probs within 0.05 of float32 over a 10-step greedy rollout;
  greedy captions equal on at least 20 of 24 dev images;
- Q/DQ INT8 encoder (TensorRT flavour): pooled-grid cosine >= 0.9 (as the ONNX Runtime INT8 encoder).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from _backend_models import calibration_folder, dev_set_paths
from onnx import TensorProto, numpy_helper

from streamcap.backends.export import cached_export
from streamcap.backends.onnx_fp16 import KEEP_FP32_OPS, convert_file
from streamcap.backends.quantize import int8_encoder_path, quantize_encoder
from streamcap.backends.select import load_captioner
from streamcap.model.images import read_image
from streamcap.model.preprocess import preprocess


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def exported():
    return cached_export()  # the shipped model, in this module's private cache


@pytest.fixture(scope="module")
def fp16(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16")
    return {graph: convert_file(exported.path(graph), out / f"{graph}.fp16.onnx") for graph in ("encoder", "prepare", "step")}


@pytest.fixture(scope="module")
def frames(shared_data):
    return [read_image(p) for p in dev_set_paths(shared_data, 8)]  # 24: Flickr8k, COCO, clip frames


@pytest.fixture(scope="module")
def images(exported, frames):
    return preprocess(frames, exported.encoder_spec).numpy()


def test_fp16_graphs_keep_io_float32_and_the_sensitive_nodes_in_float32(fp16):
    for graph, path in fp16.items():
        model = onnx.load(str(path))
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output, *model.graph.value_info]}
        types.update((i.name, i.data_type) for i in model.graph.initializer)  # weights included
        assert all(v.type.tensor_type.elem_type != TensorProto.FLOAT16 for v in [*model.graph.input, *model.graph.output])
        converted = 0
        for node in model.graph.node:
            float_inputs = [types.get(name) for name in node.input if types.get(name) in (TensorProto.FLOAT, TensorProto.FLOAT16)]
            if node.op_type in KEEP_FP32_OPS or "/concept_head/" in node.name:
                assert all(t == TensorProto.FLOAT for t in float_inputs), (graph, node.name)
            elif node.op_type in ("MatMul", "Gemm", "Conv"):
                assert all(t == TensorProto.FLOAT16 for t in float_inputs), (graph, node.name)
                converted += 1
        assert converted >= 3, graph


def test_fp16_encoder_grid_is_within_two_percent(exported, fp16, images):
    (expected,) = _session(exported.path("encoder")).run(["grid"], {"images": images})
    (got,) = _session(fp16["encoder"]).run(["grid"], {"images": images})
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert _relative(got, expected) <= 0.02
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(got.mean(1)), torch.from_numpy(expected.mean(1)))
    assert float(cosine.min()) >= 0.999


def test_fp16_decoder_graphs_follow_float32(exported, fp16, images):
    (grid,) = _session(exported.path("encoder")).run(["grid"], {"images": images})
    reference, converted = _session(exported.path("prepare")), _session(fp16["prepare"])
    names = [o.name for o in reference.get_outputs()]
    expected, got = dict(zip(names, reference.run(names, {"grid": grid}))), dict(zip(names, converted.run(names, {"grid": grid})))
    for name in names:
        if name.startswith("memory"):
            assert _relative(got[name], expected[name]) <= 0.01, name
    np.testing.assert_array_equal(got["concepts"], expected["concepts"])  # the concept head ran in float32
    step32, step16 = _session(exported.path("step")), _session(fp16["step"])
    state_names = [i.name for i in step32.get_inputs() if i.name.startswith("state")]
    memory = {n: v for n, v in expected.items() if n.startswith("memory")}
    state = {n: np.zeros((len(grid), *exported.meta["state_shapes"][i]), np.float32) for i, n in enumerate(state_names)}
    tokens = np.full(len(grid), 1, np.int32)  # startseq
    for _ in range(10):
        feeds = {"tokens": tokens, **state, **memory}
        out32, out16 = step32.run(None, feeds), step16.run(None, feeds)
        assert np.abs(out16[0] - out32[0]).max() <= 0.05
        state = dict(zip(state_names, out32[1:]))
        tokens = out32[0].argmax(1).astype(np.int32)


def test_qdq_encoder_for_tensorrt_is_symmetric_int8_and_close_to_float32(exported, images, tmp_path_factory, shared_data):
    calib = calibration_folder(tmp_path_factory.mktemp("calib"), shared_data, 16)
    path = quantize_encoder(exported, calib, calib_images=16, flavour="tensorrt")
    assert path == int8_encoder_path(exported, "tensorrt")
    model = onnx.load(str(path))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quantize and dequantize
    for node in quantize + dequantize:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name  # symmetric, signed: what TensorRT takes
    assert all(initializers[n.input[0]].dtype == np.int8 for n in dequantize if n.input[0] in initializers), "no int32 biases"
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in model.graph.node for o in n.output}
    quantized_convs = [c for c in convs if producers.get(c.input[1]) is not None and producers[c.input[1]].op_type == "DequantizeLinear"]
    assert len(quantized_convs) >= len(convs) - 2  # all but the stem and the head
    (expected,) = _session(exported.path("encoder")).run(["grid"], {"images": images})
    (got,) = _session(path).run(["grid"], {"images": images})
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(got.mean(1)), torch.from_numpy(expected.mean(1)))
    assert float(cosine.min()) >= 0.9, cosine


def test_fp16_greedy_captions_mostly_equal_float32(exported, fp16, frames):
    """The same search over the float16 graphs (run by ONNX Runtime) and the float32 ones."""
    from streamcap.backends.onnxruntime_backend import OnnxRuntimeCaptioner

    fp32 = load_captioner(backend="onnxruntime-cpu", beam_size=1)
    half = OnnxRuntimeCaptioner(exported, fp32.spec, fp32.options, fp32.model_path, encoder_path=fp16["encoder"])
    half.prepare_session, half.step_session = _session(fp16["prepare"]), _session(fp16["step"])
    expected, got = fp32.caption(frames), half.caption(frames)
    assert sum(a == b for a, b in zip(got, expected)) >= 20, list(zip(got, expected))

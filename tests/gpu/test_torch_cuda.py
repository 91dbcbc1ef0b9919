"""torch-cuda end to end on real frames: the device search, CUDA graphs, GPU preprocessing, fp16, auto.

Runs where CUDA is visible (the GPU box: `benchmarks/bench_gpu.py` runs this
folder first); skipped with the reason elsewhere. Agreement thresholds follow
what was measured on an H200 before this work: torch-cuda fp32 captions equal
torch-cpu's on 313 of 315 held-out images, fp16 on 307.
"""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from streamcap.backends.select import load_captioner
from streamcap.model.decoding import decode_grid
from streamcap.model.preprocess import preprocess, preprocess_on
from streamcap.model.search_reference import reference_decode

pytestmark = pytest.mark.gpu


def _agree(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a)


@pytest.fixture(scope="module")
def cpu():
    # at the size the GPU takes by default (a CPU box takes a smaller one), so the two see the same pixels
    from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint
    from streamcap.model.encoder import input_size_for

    size = input_size_for(load_checkpoint(DEFAULT_MODEL)[0], "torch-cuda")
    return load_captioner(backend="torch-cpu", max_batch=48, input_size=size)


@pytest.fixture(scope="module")
def gpu(cuda):
    return load_captioner(backend="torch-cuda", max_batch=48)


def test_torch_cuda_captions_like_torch_cpu(gpu, cpu, real_frames):
    assert gpu.name == "torch-cuda" and gpu.graphed is not None
    got, expected = gpu.describe(real_frames), cpu.describe(real_frames)
    assert _agree([d.text for d in got], [d.text for d in expected]) >= 0.9
    worst = max(abs(a.concepts[c] - b.concepts[c]) for a, b in zip(got, expected) for c in a.concepts)
    assert worst < 1e-3


def test_device_search_on_the_gpu_matches_the_host_search(gpu, real_frames):
    grid = gpu.encode(real_frames)
    assert grid.is_cuda
    spec = gpu.spec
    new, _ = decode_grid(gpu, spec.vocab, grid, gpu.options, spec.concept_names)
    old, _ = reference_decode(gpu, spec.vocab, grid, gpu.options, spec.concept_names)
    assert _agree([str(h.tokens) for h in new], [str(h.tokens) for h in old]) >= 0.9


def test_cuda_graphs_change_no_caption(gpu, real_frames):
    with_graphs = gpu.caption(real_frames)
    assert gpu.graphed.enabled and gpu.graphed.graphs, "a graph was captured and replayed"
    graphed, gpu.graphed = gpu.graphed, None
    try:
        eager = gpu.caption(real_frames)
    finally:
        gpu.graphed = graphed
    assert _agree(with_graphs, eager) >= 0.95  # padded rows change GEMM shapes, so the last bit may differ


def test_the_step_loop_never_waits_for_the_host(gpu, real_frames):
    grid = gpu.encode(real_frames[:32])
    gpu.decode(grid)  # warm: graphs captured, allocator primed
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hypotheses, _ = gpu.decode(grid)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    steps = max(len(h.tokens) for h in hypotheses)
    # the tokens and the concepts come back once each; nothing per step
    assert len(syncs) <= 4 < steps, [str(w.message)[:120] for w in syncs]


def test_gpu_preprocessing_is_opencvs_within_a_grey_level(gpu, cpu, real_frames):
    spec = gpu.encoder.spec
    on_gpu = preprocess_on(real_frames, spec, gpu.device, "device", gpu.resizer).cpu()
    on_cpu = preprocess(real_frames, spec)
    worst = (on_gpu - on_cpu).abs().amax().item() * max(spec.std_rgb)
    assert worst <= 1.0 + 1e-3  # at most one grey level (exact halves rounded the other way)
    host_resized = preprocess_on(real_frames, spec, gpu.device, "host").cpu()
    torch.testing.assert_close(host_resized, on_cpu, atol=1e-6, rtol=0)


def test_fp16_encoder_captions_mostly_like_fp32(cuda, gpu, real_frames):
    half = load_captioner(backend="torch-cuda", precision="fp16", max_batch=48)
    assert half.name == "torch-cuda-fp16"
    assert _agree(half.caption(real_frames), gpu.caption(real_frames)) >= 0.8


def test_auto_on_this_box_picks_the_first_backend_it_can_run_and_says_why(cuda, caplog):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here: tests/gpu/test_tensorrt.py covers auto picking it")
    except ImportError:
        pass
    import onnxruntime

    with caplog.at_level(logging.INFO, logger="streamcap.backend"):
        captioner = load_captioner(backend="auto")
    assert "tensorrt: not installed" in captioner.selection
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert captioner.name == "onnxruntime-cuda"
    else:
        assert captioner.name == "torch-cuda"
        assert "onnxruntime-cuda: CUDAExecutionProvider not available" in captioner.selection

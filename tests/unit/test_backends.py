"""Backends agree with PyTorch on real dev images, and `auto` falls back with one-line reasons."""
import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _backend_models import KINDS, dev_frames, make_checkpoint

from streamcap.backends import AUTO_CHAIN, LOADERS, BackendUnavailable, CaptionBackend, load_captioner
from streamcap.model.preprocess import preprocess_on
from streamcap.concepts import named_concepts
from streamcap.model.grounding import GroundingOptions
from streamcap.model.checkpoint import DEFAULT_MODEL, CheckpointError
from streamcap.model.encoder import SPECS
from streamcap.model.preprocess import preprocess


@pytest.fixture(scope="module")
def frames(shared_data):
    return dev_frames(shared_data, 8)


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory, shared_data):
    """(torch-cpu, onnxruntime-cpu) captioners over one random checkpoint."""
    checkpoint = make_checkpoint(tmp_path_factory.mktemp(request.param), request.param, shared_data)
    return load_captioner(checkpoint, backend="torch"), load_captioner(checkpoint, backend="onnxruntime")


def test_both_backends_follow_the_interface(pair):
    torch_backend, ort_backend = pair
    assert [b.name for b in pair] == ["torch-cpu", "onnxruntime-cpu"]
    assert all(isinstance(b, CaptionBackend) for b in pair)
    assert torch_backend.model_name == ort_backend.model_name == Path(torch_backend.model_path).stem


def test_onnxruntime_grid_matches_torch_on_dev_images(pair, frames):
    torch_backend, ort_backend = pair
    # when both encode the same real images
    expected, got = torch_backend.encode(frames), ort_backend.encode(frames)
    # then the grids agree to float32 rounding
    assert got.shape == expected.shape == (8, 49, 1280)
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-3)


def test_onnxruntime_step_logprobs_match_torch_over_a_greedy_rollout(pair, frames):
    torch_backend, ort_backend = pair
    grid = torch_backend.encode(frames)  # one grid for both, to compare the decoder alone
    memories = [b.prepare(grid)[0] for b in pair]
    states = [b.init_state(m) for b, m in zip(pair, memories)]
    tokens = torch.full((8,), torch_backend.spec.vocab.start_index, dtype=torch.long)
    for _ in range(10):
        # when both take the same step
        (expected, state_t), (got, state_o) = (b.step(tokens, s, m) for b, s, m in zip(pair, states, memories))
        # then log-probs agree within a small tolerance
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        states = [state_t, state_o]
        tokens = expected.argmax(-1)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_onnxruntime_captions_equal_torch_captions(pair, frames, beam_size):
    # given both backends with the same decoding options
    for backend in pair:
        backend.options = dataclasses.replace(backend.options, beam_size=beam_size)
    torch_backend, ort_backend = pair
    grid = torch_backend.encode(frames)
    # when each decodes the same grid with greedy or beam search
    (expected, expected_concepts), (got, got_concepts) = torch_backend.decode(grid), ort_backend.decode(grid)
    # then the tokens are identical and the scores agree
    assert [h.tokens for h in got] == [h.tokens for h in expected]
    np.testing.assert_allclose([h.logprob for h in got], [h.logprob for h in expected], atol=1e-3)
    if expected_concepts is None:
        assert got_concepts is None
    else:  # and so do the concept head's probabilities
        torch.testing.assert_close(got_concepts, expected_concepts, atol=1e-4, rtol=1e-4)
    # and end to end, from frames, the captions are the same text
    assert ort_backend.caption(frames) == torch_backend.caption(frames)


@pytest.mark.parametrize("pair", ["attention-concepts"], indirect=True)  # the only kind with a concept head
@pytest.mark.parametrize("beam_size", [1, 3])
def test_grounding_holds_on_every_backend(pair, frames, beam_size):
    # given a model whose head rules out people and is sure of a vehicle, while its decoder likes person words
    torch_backend, ort_backend = pair
    assert torch_backend.spec.concept_names
    for backend in pair:
        backend.options = dataclasses.replace(backend.options, beam_size=beam_size, grounding=backend.spec.grounding)
    # when both describe the same frames
    described = [b.describe(frames) for b in pair]
    # then neither says a person word, each names a vehicle, and they agree word for word
    for descriptions in described:
        for d in descriptions:
            assert "person" not in named_concepts(d.text) and "vehicle" in named_concepts(d.text), d.text
            assert d.concepts["person"] < 0.1 and d.concepts["vehicle"] > 0.9
    assert [d.text for d in described[0]] == [d.text for d in described[1]]
    # and without grounding the same decoder does say person words (the test can fail)
    torch_backend.options = dataclasses.replace(torch_backend.options, grounding=GroundingOptions())
    assert any("person" in named_concepts(d.text) for d in torch_backend.describe(frames))


def test_caption_of_no_frames_is_empty(pair):
    assert [b.caption([]) for b in pair] == [[], []]


def test_preprocess_on_a_device_equals_the_encoder_preprocess(frames):
    # given frames of two sizes and a grey one
    mixed = [frames[0], frames[1][:100, :150], frames[2][:, :, 0]]
    spec = SPECS["efficientnet_lite0"]
    # when normalised with torch ops instead of numpy
    got = preprocess_on(mixed, spec, torch.device("cpu"))
    # then the batch is identical
    torch.testing.assert_close(got, preprocess(mixed, spec), atol=0, rtol=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_data):
    return make_checkpoint(tmp_path_factory.mktemp("auto"), "merge", shared_data)


def test_auto_on_a_cpu_box_picks_onnxruntime_cpu_and_says_why(checkpoint, caplog):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; auto would pick it")
    except ImportError:
        pass
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; auto would pick a GPU backend")
    # when auto loads
    with caplog.at_level(logging.INFO, logger="streamcap.backend"):
        backend = load_captioner(checkpoint, backend="auto")
    # then it picks onnxruntime-cpu, with one line per skipped backend and one for the pick
    assert backend.name == "onnxruntime-cpu"
    lines = [r.getMessage() for r in caplog.records if r.name == "streamcap.backend"]
    assert [line.split(" unavailable")[0] for line in lines[:3]] == [
        "backend tensorrt", "backend onnxruntime-cuda", "backend torch-cuda"]
    assert "tensorrt unavailable: not installed" in lines[0] and "CUDAExecutionProvider" in lines[1] and "no CUDA" in lines[2]
    assert lines[3].startswith("backend: picked onnxruntime-cpu (auto; tensorrt: not installed")
    assert all("\n" not in line for line in lines)


def test_auto_on_a_cuda_box_without_tensorrt_picks_a_gpu_backend_and_says_why(checkpoint, caplog):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: test_auto_on_a_cpu_box_picks_onnxruntime_cpu_and_says_why covers this box")
    if _tensorrt_importable():
        pytest.skip("tensorrt is installed here; tests/gpu/test_tensorrt.py covers auto picking it")
    import onnxruntime

    backend = load_captioner(checkpoint, backend="auto")
    assert backend.selection.startswith(f"{backend.name} (auto; tensorrt: not installed")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert backend.name == "onnxruntime-cuda"
    else:
        assert backend.name == "torch-cuda" and "onnxruntime-cuda: CUDAExecutionProvider not available" in backend.selection


def test_a_backend_that_raises_on_load_falls_through_to_the_next(checkpoint, caplog):
    # given a chain whose onnxruntime-cpu loader crashes
    def crash(request):
        raise RuntimeError("session creation failed\nsecond line is dropped")

    loaders = {**LOADERS, "onnxruntime-cpu": crash}
    # when auto loads
    with caplog.at_level(logging.INFO, logger="streamcap.backend"):
        backend = load_captioner(checkpoint, backend="auto", loaders=loaders)
    # then the crash is one warning line and torch-cpu takes over
    assert backend.name.startswith("torch-") and backend.name in [f"torch-{d}" for d in ("cuda", "cpu")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "streamcap.backend"]
    assert warnings == ["backend onnxruntime-cpu unavailable: RuntimeError: session creation failed"]
    assert "onnxruntime-cpu: RuntimeError: session creation failed" in backend.selection


def test_when_nothing_loads_the_error_lists_every_reason(checkpoint):
    def unavailable(request):
        raise BackendUnavailable("not here")

    with pytest.raises(BackendUnavailable, match="tensorrt: not here; .*torch-cpu: not here"):
        load_captioner(checkpoint, loaders={name: unavailable for name in AUTO_CHAIN})


def test_a_broken_checkpoint_stops_the_chain_instead_of_trying_every_backend(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: not a streamcap checkpoint"):
        load_captioner(tmp_path / "bad.pt", backend="auto")


@pytest.mark.parametrize("backend, message", [
    ("tensorrt", "no backend for 'tensorrt' could load: tensorrt: "),
    ("bogus", "unknown backend 'bogus'"),
])
def test_explicit_backend_that_cannot_load_is_an_error(checkpoint, backend, message):
    if backend == "tensorrt" and _tensorrt_importable() and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here; tensorrt loads (tests/gpu/test_tensorrt.py)")
    with pytest.raises((BackendUnavailable, ValueError), match=message):
        load_captioner(checkpoint, backend=backend)


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


TORCH_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("backend, precision, note", [
    ("onnxruntime", "fp16", "onnxruntime runs fp32 or int8, not fp16; running fp32"),
    ("onnxruntime", "int8", "no int8 encoder yet"),
    ("torch", "int8", f"torch-{TORCH_DEVICE} does not run int8; running fp32"),
])
def test_a_precision_the_backend_cannot_honour_runs_fp32_and_says_so(checkpoint, backend, precision, note):
    loaded = load_captioner(checkpoint, backend=backend, precision=precision)
    assert note in loaded.selection and not loaded.name.endswith(precision)


def test_shipped_model_captions_identically_on_torch_and_onnxruntime(tmp_path, shared_data):
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"{DEFAULT_MODEL} does not exist yet (the model is still training)")
    # given a private copy of the trained model, so its export lands in tmp_path
    checkpoint = shutil.copy(DEFAULT_MODEL, tmp_path / "default.pt")
    dev = dev_frames(shared_data, 16)
    # when both backends caption sixteen dev images greedily
    expected = load_captioner(checkpoint, backend="torch", beam_size=1).caption(dev)
    got = load_captioner(checkpoint, backend="onnxruntime", beam_size=1).caption(dev)
    # then every caption is the same text
    assert got == expected

"""The CUDA-graph decoder step, run on the CPU with an eager stand-in for the capture (the only part that needs a GPU).

Buckets, padding, the static buffers, reloading the memory when the search
drops rows, the eager fallbacks and the backend wiring are all exercised;
tests/gpu/test_torch_cuda.py runs the real capture where CUDA exists.
"""
from __future__ import annotations

import logging

import pytest
import torch

from streamcap.backends.cuda_graphs import GraphedStep, buckets, capture_eager
from streamcap.model.decoder import DecoderConfig, build_decoder

V, D, P = 50, 32, 9


@pytest.fixture(scope="module")
def decoder():
    torch.manual_seed(0)
    config = DecoderConfig(kind="attention", vocab_size=V, feature_dim=D, embed_dim=16, hidden_dim=24, attention_dim=12, dropout=0.0)
    return build_decoder(config).eval()


def _inputs(decoder, rows: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        memory, _ = decoder.prepare(torch.randn(rows, P, D, generator=generator))
    state = tuple(torch.randn(rows, 24, generator=generator) for _ in range(4))
    tokens = torch.randint(3, V, (rows,), generator=generator)
    return tokens, state, memory


def test_buckets_grow_by_halves_and_end_at_the_first_that_holds_every_row():
    assert buckets(1) == [8]
    assert buckets(24) == [8, 12, 16, 24]
    assert buckets(768) == [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768]
    assert buckets(100)[-1] == 128


@torch.no_grad()
@pytest.mark.parametrize("rows", [1, 5, 8, 13, 24])
def test_a_replayed_step_is_the_step(decoder, rows):
    graphed = GraphedStep(decoder.step, max_rows=24, capture=capture_eager)
    tokens, state, memory = _inputs(decoder, rows, seed=rows)
    expected_logprobs, expected_state = decoder.step(tokens, state, memory)
    logprobs, new_state = graphed(tokens, state, memory)
    # padded to its bucket, the rows that are real come back, and equal the plain step's
    assert logprobs.shape == (rows, V) and graphed.bucket(rows) in graphed.graphs
    torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-5, rtol=1e-5)
    for got, expected in zip(new_state, expected_state):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_bucket_is_captured_once_and_reloads_the_memory_when_the_search_changes_it(decoder):
    captures = []

    def counting_capture(fn, pool=None):
        captures.append(1)
        return capture_eager(fn, pool)

    graphed = GraphedStep(decoder.step, max_rows=24, capture=counting_capture)
    tokens, state, memory = _inputs(decoder, 10, seed=1)
    for _ in range(3):  # the same search stepping: one capture, the memory copied once
        graphed(tokens, state, memory)
    assert len(captures) == 1
    # when the search drops rows, it passes a new, smaller memory that still fits the same bucket
    tokens, state, memory = _inputs(decoder, 9, seed=2)
    logprobs, _ = graphed(tokens, state, memory)
    # then the new memory is what the replay read (a stale copy would give other numbers)
    torch.testing.assert_close(logprobs, decoder.step(tokens, state, memory)[0], atol=1e-5, rtol=1e-5)
    assert len(captures) == 1


@torch.no_grad()
def test_more_rows_than_the_largest_bucket_run_the_step_as_it_is(decoder):
    graphed = GraphedStep(decoder.step, max_rows=8, capture=capture_eager)
    tokens, state, memory = _inputs(decoder, 20, seed=3)
    logprobs, _ = graphed(tokens, state, memory)
    assert logprobs.shape == (20, V) and not graphed.graphs


@torch.no_grad()
def test_a_failed_capture_turns_graphs_off_with_one_warning(decoder, caplog):
    def failing(fn, pool=None):
        raise RuntimeError("operation not permitted when stream is capturing\nsecond line")

    graphed = GraphedStep(decoder.step, max_rows=24, capture=failing)
    tokens, state, memory = _inputs(decoder, 6, seed=4)
    with caplog.at_level(logging.WARNING):
        first = graphed(tokens, state, memory)[0]
        graphed(tokens, state, memory)
    assert not graphed.enabled
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["CUDA graphs off for the decoder step (capture at 8 rows failed: operation not permitted when stream is capturing)"]
    torch.testing.assert_close(first, decoder.step(tokens, state, memory)[0])


def test_the_torch_backend_steps_through_the_graphs(shared_data):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _backend_models import dev_frames

    from streamcap.backends.torch_backend import TorchCaptioner
    from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint
    from streamcap.model.decoding import DecodeOptions
    from streamcap.model.encoder import build_encoder

    spec, decoder, _ = load_checkpoint(DEFAULT_MODEL)
    encoder = build_encoder(spec.encoder)
    options = DecodeOptions.for_model(spec)
    plain = TorchCaptioner(spec, decoder, encoder, options, str(DEFAULT_MODEL), max_batch=8)
    graphed = TorchCaptioner(spec, decoder, encoder, options, str(DEFAULT_MODEL), max_batch=8, capture=capture_eager)
    assert plain.graphed is None and graphed.graphed.buckets[-1] == 24  # 8 images x beam 3
    frames = dev_frames(shared_data, 8)
    grid = plain.encode(frames)
    expected, got = plain.decode(grid)[0], graphed.decode(grid)[0]
    # rows are padded to buckets as the search drops finished images, and the captions come out the same
    assert len(graphed.graphed.graphs) >= 2
    assert [h.tokens for h in got] == [h.tokens for h in expected]

"""The decoder step replayed from CUDA graphs, one graph per bucket of rows.

One decoder step is a few dozen small kernels; launched one by one from
Python they cost more host time than the GPU spends running them, so a search
of a few hundred rows waits on the launcher. A CUDA graph launches the whole
step at once. A graph replays fixed shapes at fixed addresses, so each bucket
of rows (8, 12, 16, 24, ... up to the backend's most rows) has its own static
input and output tensors: a step copies its tokens and state into the
bucket's inputs (and the memory, when it changed), replays, and returns views
of the outputs, valid until the next step. Rows past the real ones are
padding: rows never mix in the decoder, so they only cost their share of
the arithmetic.

Graphs are captured lazily, the first time a bucket is needed, on a side
stream after warm-up runs, as torch's documentation prescribes. `capture` is
a parameter so the CPU tests run everything here but the capture itself
(`capture_eager` replays by running the step again); a capture that fails
turns graphs off for this backend with one warning, and the step runs as it is.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from streamcap.model.decoder import Memory, State

log = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, State, Memory], tuple[torch.Tensor, State]]
Capture = Callable[[Callable[[], tuple]], tuple[Callable[[], None], tuple]]
MIN_BUCKET = 8


def buckets(max_rows: int) -> list[int]:
    """8, 12, 16, 24, 32, 48, ...: powers of two and the points halfway, up to the first that holds max_rows."""
    sizes, size = [], MIN_BUCKET
    while True:
        for bucket in (size, size * 3 // 2):
            sizes.append(bucket)
            if bucket >= max_rows:
                return sizes
        size *= 2


def capture_cuda(fn: Callable[[], tuple], pool=None) -> tuple[Callable[[], None], tuple]:
    """Warm `fn` up on a side stream, then capture it into a CUDA graph: (replay, its outputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # cuBLAS workspaces and lazy initialisation happen outside the graph
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA work (a second backend, a test) must not break this capture.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        outputs = fn()
    return graph.replay, outputs


def capture_eager(fn: Callable[[], tuple], pool=None) -> tuple[Callable[[], None], tuple]:
    """Stand-in for `capture_cuda` where there is no GPU: replay runs `fn` again into the same output tensors."""
    outputs = fn()

    def replay() -> None:
        for static, fresh in zip(_flat(outputs), _flat(fn())):
            static.copy_(fresh)

    return replay, outputs


def _flat(outputs: tuple) -> list[torch.Tensor]:
    logprobs, state = outputs
    return [logprobs, *state]


class _BucketGraph:
    """Static inputs and outputs of one bucket, and the graph that reads and writes them."""

    def __init__(self, step: StepFn, rows: int, tokens: torch.Tensor, state: State, memory: Memory, capture: Capture, pool):
        def static_like(t: torch.Tensor) -> torch.Tensor:
            return torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)

        self.rows = rows
        self.tokens = static_like(tokens)  # (Rb,)
        self.state = tuple(static_like(s) for s in state)  # (Rb, ...) each
        self.memory = tuple(static_like(m) for m in memory)  # (Rb, ...) each
        self._memory_source: tuple | None = None
        self.load(tokens, state, memory)
        self.replay, (self.logprobs, self.new_state) = capture(lambda: step(self.tokens, self.state, self.memory), pool)

    def load(self, tokens: torch.Tensor, state: State, memory: Memory) -> None:
        R = tokens.shape[0]
        if self._memory_source is None or self._memory_source[0] is not memory or self._memory_source[1] != R:
            # The search passes the same memory tuple every step until it drops rows: copy it once per change.
            for static, m in zip(self.memory, memory):
                static[:R].copy_(m)
            self._memory_source = (memory, R)
        self.tokens[:R].copy_(tokens)
        for static, s in zip(self.state, state):
            static[:R].copy_(s)

    def __call__(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        R = tokens.shape[0]
        self.load(tokens, state, memory)
        self.replay()
        return self.logprobs[:R], tuple(s[:R] for s in self.new_state)


class GraphedStep:
    """`step` with the same contract, replayed from a CUDA graph of the smallest bucket that holds the rows."""

    def __init__(self, step: StepFn, max_rows: int, capture: Capture | None = None):
        self.step = step
        self.buckets = buckets(max_rows)
        self.capture = capture or capture_cuda
        self.enabled = True
        self.graphs: dict[int, _BucketGraph] = {}
        self._pool = None

    def bucket(self, rows: int) -> int | None:
        return next((b for b in self.buckets if b >= rows), None)

    def __call__(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        size = self.bucket(tokens.shape[0]) if self.enabled else None
        if size is None:  # more rows than the largest bucket, or graphs off
            return self.step(tokens, state, memory)
        graph = self.graphs.get(size)
        if graph is None:
            try:
                if self._pool is None and self.capture is capture_cuda:
                    self._pool = torch.cuda.graph_pool_handle()  # one memory pool shared by every bucket's graph
                graph = self.graphs[size] = _BucketGraph(self.step, size, tokens, state, memory, self.capture, self._pool)
            except Exception as exc:  # noqa: BLE001 - any capture failure: run the step as it is
                log.warning("CUDA graphs off for the decoder step (capture at %d rows failed: %s)", size,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.enabled = False
                return self.step(tokens, state, memory)
        return graph(tokens, state, memory)

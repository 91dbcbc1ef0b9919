"""Greedy and beam search over any decoder's `step`, batched over images.

`step_fn(tokens, state, memory) -> (logprobs, state)` is the only thing the
searches call, so the same search drives PyTorch, ONNX Runtime and TensorRT.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from streamcap.model.decoder import Memory, State

StepFn = Callable[[torch.Tensor, State, Memory], tuple[torch.Tensor, State]]


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # generated words, without startseq; ends with endseq if it finished
    logprob: float  # sum of token log-probabilities
    score: float  # logprob after the length penalty; what the beam ranks by


def _forbid_end_after(logprobs: torch.Tensor, previous: torch.Tensor, end: int, no_end_after: frozenset[int]) -> torch.Tensor:
    if not no_end_after:
        return logprobs
    blocked = torch.isin(previous, torch.tensor(sorted(no_end_after)))  # (B,)
    logprobs = logprobs.clone()
    logprobs[blocked, end] = float("-inf")
    return logprobs


def _select(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.index_select(0, index) for t in tensors)


def greedy_search(
    step_fn: StepFn, state: State, memory: Memory, start: int, end: int, max_len: int,
    no_end_after: frozenset[int] = frozenset(),
) -> list[Hypothesis]:
    batch = memory[0].shape[0]
    tokens = torch.full((batch,), start, dtype=torch.long)  # (B,)
    generated, total = [[] for _ in range(batch)], torch.zeros(batch)
    alive = torch.ones(batch, dtype=torch.bool)  # (B,)
    for _ in range(max_len):
        logprobs, state = step_fn(tokens, state, memory)  # (B, V)
        logprobs = _forbid_end_after(logprobs, tokens, end, no_end_after)
        best, tokens = logprobs.max(-1)  # (B,), (B,)
        total += torch.where(alive, best.float(), torch.zeros_like(total))
        for i in alive.nonzero()[:, 0].tolist():
            generated[i].append(int(tokens[i]))
        alive &= tokens != end
        if not bool(alive.any()):
            break
    return [Hypothesis(g, float(s), float(s)) for g, s in zip(generated, total)]


def beam_search(
    step_fn: StepFn,
    state: State,
    memory: Memory,
    start: int,
    end: int,
    max_len: int,
    beam_size: int = 3,
    length_penalty: float = 0.0,
    no_end_after: frozenset[int] = frozenset(),
) -> list[Hypothesis]:
    """Best hypothesis per image; scores are logprob / length**length_penalty.

    A candidate ending in endseq is kept as finished only if it is among the
    top `beam_size` candidates of its image (as in fairseq), so a beam of one
    makes exactly the greedy choices.
    """
    B, K = memory[0].shape[0], beam_size
    expand = torch.arange(B).repeat_interleave(K)  # (B*K,)
    memory, state = _select(memory, expand), _select(state, expand)
    tokens = torch.full((B * K,), start, dtype=torch.long)  # (B*K,)
    beam_logprob = torch.full((B, K), float("-inf"))
    beam_logprob[:, 0] = 0.0  # all beams start identical: expand only the first
    history = torch.zeros(B, K, 0, dtype=torch.long)  # (B, K, t)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]

    for t in range(max_len):
        logprobs, state = step_fn(tokens, state, memory)  # (B*K, V)
        logprobs = _forbid_end_after(logprobs, tokens, end, no_end_after)
        V = logprobs.shape[-1]
        candidates = beam_logprob[:, :, None] + logprobs.float().view(B, K, V)  # (B, K, V)
        top_logprob, top_flat = candidates.view(B, K * V).topk(2 * K, dim=1)  # (B, 2K)
        top_beam, top_token = top_flat // V, top_flat % V  # (B, 2K)
        is_end = top_token == end  # (B, 2K)

        for b, rank in (is_end[:, :K]).nonzero().tolist():
            if len(finished[b]) >= K or top_logprob[b, rank] == float("-inf"):
                continue
            words = history[b, top_beam[b, rank]].tolist() + [end]
            logprob = float(top_logprob[b, rank])
            finished[b].append(Hypothesis(words, logprob, logprob / len(words) ** length_penalty))

        # The first K candidates that do not end continue; at most K of 2K end.
        order = torch.arange(2 * K).expand(B, 2 * K) + is_end.long() * 2 * K  # (B, 2K)
        keep = order.topk(K, dim=1, largest=False).indices  # (B, K)
        beam_logprob = top_logprob.gather(1, keep)  # (B, K)
        parent = top_beam.gather(1, keep)  # (B, K)
        next_token = top_token.gather(1, keep)  # (B, K)
        history = torch.cat([history.gather(1, parent[:, :, None].expand(-1, -1, t)), next_token[:, :, None]], 2)

        if all(len(f) >= K for f in finished):
            break
        flat_parent = (parent + torch.arange(B)[:, None] * K).view(-1)  # (B*K,)
        state = _select(state, flat_parent)
        tokens = next_token.view(-1)  # (B*K,)

    results = []
    for b in range(B):
        pool = list(finished[b])
        if not pool:  # nothing ended within max_len: rank the unfinished beams
            for k in range(K):
                words, logprob = history[b, k].tolist(), float(beam_logprob[b, k])
                pool.append(Hypothesis(words, logprob, logprob / max(len(words), 1) ** length_penalty))
        results.append(max(pool, key=lambda h: h.score))
    return results

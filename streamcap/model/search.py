"""Greedy and beam search over any decoder's `step`, batched over images.

`step_fn(tokens, state, memory) -> (logprobs, state)` is the only thing the
searches call, so the same search drives PyTorch, ONNX Runtime and TensorRT.
Before each pick, `rules.apply` shapes the log-probs (word rules, repeated
trigrams, grounding in the concept head: see `streamcap.model.grounding`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from streamcap.model.decoder import Memory, State
from streamcap.model.grounding import StepRules

StepFn = Callable[[torch.Tensor, State, Memory], tuple[torch.Tensor, State]]


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # generated words, without startseq; ends with endseq if it finished
    logprob: float  # sum of token log-probabilities
    score: float  # logprob after the length penalty; what the beam ranks by


def _select(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.index_select(0, index) for t in tensors)


def _shape(rules: StepRules | None, logprobs: torch.Tensor, history: torch.Tensor, row_image: torch.Tensor) -> torch.Tensor:
    return logprobs if rules is None else rules.apply(logprobs, history, row_image)


def greedy_search(
    step_fn: StepFn, state: State, memory: Memory, start: int, end: int, max_len: int,
    rules: StepRules | None = None,
) -> list[Hypothesis]:
    batch = memory[0].shape[0]
    tokens = torch.full((batch,), start, dtype=torch.long)  # (B,)
    generated, total = [[] for _ in range(batch)], [0.0] * batch
    images = torch.arange(batch)  # which image each row still being decoded belongs to
    history = torch.zeros(batch, 0, dtype=torch.long)  # (n, t)
    for _ in range(max_len):
        logprobs, state = step_fn(tokens, state, memory)  # (n, V)
        logprobs = _shape(rules, logprobs, history, images)
        best, tokens = logprobs.max(-1)  # (n,), (n,)
        for image, token, logprob in zip(images.tolist(), tokens.tolist(), best.tolist()):
            generated[image].append(token)
            total[image] += logprob
        history = torch.cat([history, tokens[:, None]], 1)  # (n, t+1)
        alive = tokens != end  # (n,)
        if not bool(alive.any()):
            break
        if not bool(alive.all()):  # finished captions leave the batch: the step costs per row
            rows = alive.nonzero()[:, 0]
            images, tokens, history = images[rows], tokens[rows], history[rows]
            state, memory = _select(state, rows), _select(memory, rows)
    return [Hypothesis(g, s, s) for g, s in zip(generated, total)]


def beam_search(
    step_fn: StepFn,
    state: State,
    memory: Memory,
    start: int,
    end: int,
    max_len: int,
    beam_size: int = 3,
    length_penalty: float = 0.0,
    rules: StepRules | None = None,
    prune: bool = True,
) -> list[Hypothesis]:
    """Best hypothesis per image; scores are logprob / length**length_penalty.

    A candidate ending in endseq is kept as finished only if it is among the
    top `beam_size` candidates of its image (as in fairseq), so a beam of one
    makes exactly the greedy choices.

    With `prune`, an image leaves the batch as soon as none of its live beams
    can still beat its best finished caption, so it returns the same captions
    as the exhaustive search (`prune=False`) for fewer decoder steps.
    """
    B, K = memory[0].shape[0], beam_size
    expand = torch.arange(B).repeat_interleave(K)  # (B*K,)
    memory, state = _select(memory, expand), _select(state, expand)
    tokens = torch.full((B * K,), start, dtype=torch.long)  # (B*K,)
    beam_logprob = torch.full((B, K), float("-inf"))
    beam_logprob[:, 0] = 0.0  # all beams start identical: expand only the first
    history = torch.zeros(B, K, 0, dtype=torch.long)  # (B, K, t)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    images = list(range(B))  # which image each group of K rows belongs to
    # A live beam's log-prob only falls as words are added, and a negative
    # log-prob divided by a longer length rises at most to logprob / max_len**penalty.
    best_possible_divisor = float(max_len) ** length_penalty if length_penalty >= 0 else None

    for t in range(max_len):
        n = len(images)
        logprobs, state = step_fn(tokens, state, memory)  # (n*K, V)
        row_image = torch.tensor(images).repeat_interleave(K)  # (n*K,)
        logprobs = _shape(rules, logprobs, history.reshape(n * K, t), row_image)
        V = logprobs.shape[-1]
        candidates = beam_logprob[:, :, None] + logprobs.float().view(n, K, V)  # (n, K, V)
        top_logprob, top_flat = candidates.view(n, K * V).topk(2 * K, dim=1)  # (n, 2K)
        top_beam, top_token = top_flat // V, top_flat % V  # (n, 2K)
        is_end = top_token == end  # (n, 2K)

        for row, rank in (is_end[:, :K]).nonzero().tolist():
            pool = finished[images[row]]
            if len(pool) >= K or top_logprob[row, rank] == float("-inf"):
                continue
            words = history[row, top_beam[row, rank]].tolist() + [end]
            logprob = float(top_logprob[row, rank])
            pool.append(Hypothesis(words, logprob, logprob / len(words) ** length_penalty))

        # The first K candidates that do not end continue; at most K of 2K end.
        order = torch.arange(2 * K).expand(n, 2 * K) + is_end.long() * 2 * K  # (n, 2K)
        keep = order.topk(K, dim=1, largest=False).indices  # (n, K)
        beam_logprob = top_logprob.gather(1, keep)  # (n, K)
        parent = top_beam.gather(1, keep)  # (n, K)
        next_token = top_token.gather(1, keep)  # (n, K)
        history = torch.cat([history.gather(1, parent[:, :, None].expand(-1, -1, t)), next_token[:, :, None]], 2)

        if t == max_len - 1:
            break
        live_best = beam_logprob.max(1).values.tolist()  # (n,)
        done = [
            len(finished[b]) >= K
            or (prune and best_possible_divisor is not None and bool(finished[b])
                and max(h.score for h in finished[b]) >= live_best[row] / best_possible_divisor)
            for row, b in enumerate(images)
        ]
        if all(done):
            images = []
            break
        rows = torch.tensor([row for row, d in enumerate(done) if not d or not prune])  # (n',)
        flat_parent = (parent[rows] + rows[:, None] * K).view(-1)  # (n'*K,)
        state = _select(state, flat_parent)
        if len(rows) < n:
            memory = _select(memory, (rows[:, None] * K + torch.arange(K)).view(-1))
            images = [images[row] for row in rows.tolist()]
            beam_logprob, history = beam_logprob[rows], history[rows]
        tokens = next_token[rows].view(-1)  # (n'*K,)

    # Images still searching at max_len without a finished caption rank their live beams.
    unfinished: dict[int, list[Hypothesis]] = {}
    for row, b in enumerate(images):
        if not finished[b]:
            for k in range(K):
                words, logprob = history[row, k].tolist(), float(beam_logprob[row, k])
                unfinished.setdefault(b, []).append(Hypothesis(words, logprob, logprob / max(len(words), 1) ** length_penalty))
    return [max(finished[b] or unfinished[b], key=lambda h: h.score) for b in range(B)]

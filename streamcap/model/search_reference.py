"""The search as it was before the device search (issue 15), kept as a reference (word rules added since go in both).

`tests/unit/test_search_parity.py` holds the device search (`streamcap.model.search`)
to these captions token for token on real dev images, and `benchmarks/bench_gpu.py`
and `benchmarks/bench_captioner_speed.py` measure the two in the same run. It runs
on CPU tensors only (it indexes beams with CPU index tensors and reads results
back to the host every step), so a GPU backend's step must be wrapped to copy to
and from the device (`host_step`). Delete this module with those users once the
device search has been measured on a GPU box and nobody needs the comparison.
"""
from __future__ import annotations

from typing import Callable

import torch

from streamcap.model.decoder import Memory, State
from streamcap.model.grounding import ARTICLES, JOINERS, GroundingOptions
from streamcap.model.search import Hypothesis
from streamcap.model.vocab import PAD_INDEX, Vocabulary

NEG_INF = float("-inf")
StepFn = Callable[[torch.Tensor, State, Memory], tuple[torch.Tensor, State]]


def host_step(step_fn: StepFn, device: torch.device) -> StepFn:
    """A device step as the reference search needs it: CPU tensors in and out, memory uploaded once per search."""
    cache: dict = {}

    def step(tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        if cache.get("source") is not memory:
            cache["source"], cache["copy"] = memory, tuple(m.to(device) for m in memory)
        logprobs, new_state = step_fn(tokens.to(device), tuple(s.to(device) for s in state), cache["copy"])
        return logprobs.cpu(), tuple(s.cpu() for s in new_state)

    return step


class HostStepRules:
    """Today's `StepRules` as it was before issue 15 (host loops over rules and concepts), verbatim."""

    def __init__(self, vocab: Vocabulary, concepts: tuple[str, ...] = (), probs: torch.Tensor | None = None,
                 options: GroundingOptions = GroundingOptions()):
        self.end = vocab.end_index
        self.start = vocab.start_index
        self.never = torch.tensor([PAD_INDEX, vocab.start_index])
        self.after_rules = vocab.rule_tensors
        self.block_trigrams = options.block_repeated_trigrams
        self.block_repeats = options.block_repeated_words
        self.joiners = torch.tensor(sorted(vocab.indices(JOINERS)), dtype=torch.long)
        self.articles = torch.tensor(sorted(vocab.indices(ARTICLES)), dtype=torch.long)
        self.require_within = options.require_within
        self.boost_by_concept: torch.Tensor | None = None  # (C, V)
        self.ban_mask: torch.Tensor | None = None  # (B, V) bool
        self.required: torch.Tensor | None = None  # (B, C) bool
        self.concept_words: list[torch.Tensor] = []
        if probs is not None and concepts:
            self.concept_words = vocab.concept_words(tuple(concepts))
            ban_below, require_above = options.thresholds(tuple(concepts))  # (C,), (C,)
            ruled_out = probs < ban_below  # (B, C)
            if bool(ruled_out.any()):
                self.ban_mask = torch.zeros(probs.shape[0], len(vocab), dtype=torch.bool)  # (B, V)
                for c, indices in enumerate(self.concept_words):
                    rows = ruled_out[:, c].nonzero()[:, 0]
                    if len(rows) and len(indices):
                        self.ban_mask[rows[:, None], indices[None]] = True
            required = probs >= require_above  # (B, C)
            has_words = torch.tensor([len(w) > 0 for w in self.concept_words])
            required &= has_words[None]
            self.required = required if bool(required.any()) else None
            if self.required is not None and options.require_boost:
                self.boost_by_concept = torch.zeros(len(concepts), len(vocab))  # (C, V): what naming each concept gains
                for c, indices in enumerate(self.concept_words):
                    self.boost_by_concept[c, indices] = options.require_boost

    def apply(self, logprobs: torch.Tensor, history: torch.Tensor, row_image: torch.Tensor) -> torch.Tensor:
        """logprobs (R, V) of the next word, history (R, t) of words so far, row_image (R,) -> shaped (R, V)."""
        logprobs = logprobs.clone()
        logprobs[:, self.never] = NEG_INF
        t = history.shape[1]
        previous = history[:, -1] if t else torch.full((history.shape[0],), self.start, dtype=torch.long)  # (R,)
        for after, banned in self.after_rules:
            rows = torch.isin(previous, after).nonzero()[:, 0]  # (n,)
            if len(rows):
                logprobs[rows[:, None], banned[None]] = NEG_INF
        if self.block_repeats and t:
            logprobs.scatter_(1, previous[:, None], NEG_INF)
            if t >= 2:
                rows = torch.isin(previous, self.joiners).nonzero()[:, 0]
                logprobs[rows, history[rows, t - 2]] = NEG_INF
            if t >= 3:
                rows = (torch.isin(previous, self.articles) & torch.isin(history[:, t - 2], self.joiners)).nonzero()[:, 0]
                logprobs[rows, history[rows, t - 3]] = NEG_INF
        if self.block_trigrams and t >= 3:
            repeat = (history[:, : t - 2] == history[:, t - 2 : t - 1]) & (history[:, 1 : t - 1] == history[:, t - 1 :])  # (R, t-2)
            rows, positions = repeat.nonzero(as_tuple=True)
            if len(rows):
                logprobs[rows, history[rows, positions + 2]] = NEG_INF
        if self.ban_mask is not None:
            logprobs.masked_fill_(self.ban_mask.index_select(0, row_image), NEG_INF)
        if self.required is not None and t < self.require_within:
            required = self.required.index_select(0, row_image)  # (R, C)
            named = torch.stack([torch.isin(history, w).any(1) for w in self.concept_words], 1)  # (R, C)
            missing = required & ~named  # (R, C)
            logprobs[missing.any(1), self.end] = NEG_INF
            if self.boost_by_concept is not None:
                logprobs += missing.float() @ self.boost_by_concept  # (R, C) @ (C, V)
        return logprobs


def _select(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.index_select(0, index) for t in tensors)


def _shape(rules: HostStepRules | None, logprobs: torch.Tensor, history: torch.Tensor, row_image: torch.Tensor) -> torch.Tensor:
    return logprobs if rules is None else rules.apply(logprobs, history, row_image)


def greedy_search(
    step_fn: StepFn, state: State, memory: Memory, start: int, end: int, max_len: int,
    rules: HostStepRules | None = None,
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
    rules: HostStepRules | None = None,
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


@torch.no_grad()
def reference_decode(decoder, vocab: Vocabulary, grid: torch.Tensor, options, concept_names: tuple[str, ...] = ()):
    """`decode_grid` as it was: the search on the host, each step's tensors copied to the decoder's device and back."""
    memory, concepts = decoder.prepare(grid)
    device = memory[0].device
    state = tuple(s.cpu() for s in decoder.init_state(memory))
    memory = tuple(m.cpu() for m in memory)
    concepts = None if concepts is None else concepts.float().cpu()
    step = decoder.step if device.type == "cpu" else host_step(decoder.step, device)
    rules = HostStepRules(vocab, concept_names, concepts, options.grounding)
    if options.beam_size <= 1:
        hypotheses = greedy_search(step, state, memory, vocab.start_index, vocab.end_index, options.max_len, rules)
    else:
        hypotheses = beam_search(step, state, memory, vocab.start_index, vocab.end_index, options.max_len,
                                 beam_size=options.beam_size, length_penalty=options.length_penalty, rules=rules)
    return hypotheses, concepts

"""Greedy and beam search over any decoder's `step`, batched over images, on the decoder's device.

`step_fn(tokens, state, memory) -> (logprobs, state)` is the only thing the
searches call, so the same search drives PyTorch, ONNX Runtime and TensorRT.
Before each pick, `RowRules.shape` shapes the log-probs (word rules, repeated
trigrams, grounding in the concept head: see `streamcap.model.grounding`).

Everything a step does is tensor work on the device the memory lives on: the
rows (images x beams) are one batch, the beam is a top-k over each image's
beams x vocabulary, state follows its beam by `index_select`, and finished
captions are written into fixed (B, K, T) buffers. Nothing is read back to the
host inside the loop except what the `Schedule` allows; the tokens come back
in one copy at the end.

Rows of finished images are dropped ("compaction") only when the host knows
they are finished. On the CPU the host knows at once for free, so rows are
dropped as soon as an image finishes, exactly as the search always did: the
decoder then sees the same batches and gives the same captions to the last
bit. On a GPU, knowing costs a wait for the device, so the finished flags are
copied back asynchronously and read `lag` steps late; the loop stops when all
images are known finished, and drops rows only when at most half are alive
(a smaller CUDA-graph bucket), never stalling the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from streamcap.model.decoder import Memory, State
from streamcap.model.grounding import RowRules, StepRules

StepFn = Callable[[torch.Tensor, State, Memory], tuple[torch.Tensor, State]]
NEG_INF = float("-inf")


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # generated words, without startseq; ends with endseq if it finished
    logprob: float  # sum of token log-probabilities
    score: float  # logprob after the length penalty; what the beam ranks by


@dataclass(frozen=True)
class Schedule:
    """When the search learns which images are finished, and when it drops their rows."""

    lag: int = 0  # steps between an image finishing and the host reading it (0: at once, as on the CPU)
    compact_at: float = 1.0  # drop finished rows once the live share of rows is at most this (1.0: at once)
    host_reads_free: bool = True  # the tensors live in host memory: a branch on one costs nothing, so skip idle work

    @classmethod
    def for_device(cls, device: torch.device) -> "Schedule":
        # Two steps of lag keep the GPU's queue full while the host reads a flag it
        # has already finished writing; half the rows is the next CUDA-graph bucket down.
        return cls() if device.type == "cpu" else cls(lag=2, compact_at=0.5, host_reads_free=False)


class _Finished:
    """Which images the host knows are finished: device flags read back `lag` steps late, never waited on early."""

    def __init__(self, images: int, steps: int, schedule: Schedule, device: torch.device):
        self.lag = schedule.lag
        self.async_copy = device.type == "cuda"
        if self.async_copy:
            self.flags = torch.zeros(steps, images, dtype=torch.bool, pin_memory=True)  # (T, B) host copies
            self.events: list = [None] * steps
        else:
            self.flags = torch.zeros(steps, images, dtype=torch.bool)  # (T, B): on the CPU reading is free
        self.none = torch.zeros(images, dtype=torch.bool)  # (B,)

    def record(self, t: int, done: torch.Tensor) -> None:
        """`done` (B,) bool on the device: the images finished after step t."""
        if self.async_copy:
            self.flags[t].copy_(done, non_blocking=True)
            self.events[t] = torch.cuda.Event()
            self.events[t].record()
        else:
            self.flags[t] = done

    def known(self, t: int) -> torch.Tensor:
        """(B,) bool on the host: images known to be finished at step t (a subset of the truth)."""
        if t < self.lag:
            return self.none
        if self.async_copy:
            self.events[t - self.lag].synchronize()  # already complete unless the device is more than `lag` steps behind
        return self.flags[t - self.lag]


def _select(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.index_select(0, index) for t in tensors)


def _keep_rows(known_done: torch.Tensor, images: torch.Tensor, schedule: Schedule,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(host, device) row indices of the images not known to be finished, or None to keep every row."""
    live = ~known_done[images]  # (n,) host
    kept = int(live.sum())
    if kept == len(images) or kept > schedule.compact_at * len(images):
        return None
    rows = live.nonzero()[:, 0]
    return rows, (rows.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else rows)


def _to_host(*tensors: torch.Tensor) -> list[list]:
    """Each (B, ...) tensor as rows of Python numbers, in one copy from the device (exact: doubles hold them all)."""
    flat = [t.reshape(t.shape[0], -1).double() for t in tensors]
    packed = torch.cat(flat, 1).cpu()  # the search's one read-back
    out, start = [], 0
    for t, f in zip(tensors, flat):
        part = packed[:, start : start + f.shape[1]]
        part = part.long() if not t.is_floating_point() else part.float() if t.dtype == torch.float32 else part
        out.append(part.reshape(t.shape).tolist())
        start += f.shape[1]
    return out


def greedy_search(
    step_fn: StepFn, state: State, memory: Memory, start: int, end: int, max_len: int,
    rules: StepRules | None = None, schedule: Schedule | None = None,
) -> list[Hypothesis]:
    device = memory[0].device
    schedule = schedule or Schedule.for_device(device)
    B, L = memory[0].shape[0], max(max_len, 1)
    images_host = torch.arange(B)  # which image each row decodes (host copy, for compaction)
    images = torch.arange(B, device=device)  # (n,)
    tokens = torch.full((B,), start, dtype=torch.long, device=device)  # (n,)
    history = torch.zeros(B, L, dtype=torch.long, device=device)  # (n, T) words so far per row
    words = torch.zeros(B, L, dtype=torch.long, device=device)  # (B, T) per image
    total = torch.zeros(B, dtype=torch.float64, device=device)  # (B,) summed as the host did: in doubles
    length = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
    alive = torch.ones(B, dtype=torch.bool, device=device)  # (B,)
    row_rules = rules.rows(images) if rules is not None else None
    finished = _Finished(B, L, schedule, device)
    for t in range(max_len):
        logprobs, state = step_fn(tokens, state, memory)  # (n, V)
        if row_rules is not None:
            logprobs = row_rules.shape(logprobs, history[:, :t])
        best, tokens = logprobs.max(-1)  # (n,), (n,)
        live = alive.index_select(0, images)  # (n,)
        words[images, t] = tokens
        total.index_add_(0, images, torch.where(live, best.double(), 0.0))
        length.index_add_(0, images, live.long())
        history[:, t] = tokens
        if row_rules is not None:
            row_rules.advance(tokens)
        alive.index_copy_(0, images, live & (tokens != end))
        finished.record(t, ~alive)
        known = finished.known(t)
        if bool(known.all()):
            break
        kept = _keep_rows(known, images_host, schedule, device)
        if kept is not None:  # finished captions leave the batch: the step costs per row
            rows_host, rows = kept
            images_host = images_host[rows_host]
            images, tokens, history = images.index_select(0, rows), tokens.index_select(0, rows), history.index_select(0, rows)
            state, memory = _select(state, rows), _select(memory, rows)
            if row_rules is not None:
                row_rules.select(rows)
    words, total, length = _to_host(words, total, length)
    return [Hypothesis(w[:n], s, s) for w, s, n in zip(words, total, length)]


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
    schedule: Schedule | None = None,
) -> list[Hypothesis]:
    """Best hypothesis per image; scores are logprob / length**length_penalty.

    A candidate ending in endseq is kept as finished only if it is among the
    top `beam_size` candidates of its image (as in fairseq), so a beam of one
    makes exactly the greedy choices.

    With `prune`, an image is finished as soon as none of its live beams can
    still beat its best finished caption, so it returns the same captions as
    the exhaustive search (`prune=False`) for fewer decoder steps.
    """
    device = memory[0].device
    schedule = schedule or Schedule.for_device(device)
    B, K, L = memory[0].shape[0], beam_size, max(max_len, 1)
    expand = torch.div(torch.arange(B * K, device=device), K, rounding_mode="floor")  # (B*K,) image of each row
    memory, state = _select(memory, expand), _select(state, expand)
    images_host = torch.arange(B)  # which image each group of K rows belongs to (host copy)
    images = torch.arange(B, device=device)  # (n,)
    tokens = torch.full((B * K,), start, dtype=torch.long, device=device)  # (n*K,)
    beam_logprob = torch.full((B, K), NEG_INF, device=device)  # (n, K)
    beam_logprob[:, 0] = 0.0  # all beams start identical: expand only the first
    history = torch.zeros(B * K, L, dtype=torch.long, device=device)  # (n*K, T)
    # Finished captions, at most K per image, in the order they finished (ties go to the first).
    done_words = torch.zeros(B * K + 1, L, dtype=torch.long, device=device)  # (B*K + scratch row, T)
    done_logprob = torch.zeros(B * K + 1, device=device)  # (B*K+1,)
    done_score = torch.full((B * K + 1,), NEG_INF, dtype=torch.float64, device=device)  # (B*K+1,)
    done_length = torch.zeros(B * K + 1, dtype=torch.long, device=device)  # (B*K+1,)
    done_count = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
    alive = torch.ones(B, dtype=torch.bool, device=device)  # (B,)
    # Beams of the images still searching when max_len runs out, for those with nothing finished.
    last_words = torch.zeros(B, K, L, dtype=torch.long, device=device)  # (B, K, T)
    last_logprob = torch.full((B, K), NEG_INF, device=device)  # (B, K)
    row_rules = rules.rows(expand) if rules is not None else None
    finished = _Finished(B, L, schedule, device)
    slot_rank = torch.arange(K, device=device)  # (K,)
    # A live beam's log-prob only falls as words are added, and a negative
    # log-prob divided by a longer length rises at most to logprob / max_len**penalty.
    best_possible_divisor = float(max_len) ** length_penalty if length_penalty >= 0 else None

    for t in range(max_len):
        n = images.shape[0]
        logprobs, state = step_fn(tokens, state, memory)  # (n*K, V)
        if row_rules is not None:
            logprobs = row_rules.shape(logprobs, history[:, :t])
        V = logprobs.shape[-1]
        candidates = beam_logprob[:, :, None] + logprobs.float().view(n, K, V)  # (n, K, V)
        top_logprob, top_flat = candidates.view(n, K * V).topk(2 * K, dim=1)  # (n, 2K)
        top_beam, top_token = top_flat // V, top_flat % V  # (n, 2K)
        is_end = top_token == end  # (n, 2K)
        live = alive.index_select(0, images)  # (n,)

        # Endings among the first K candidates join their image's finished captions while it has room.
        ending = is_end[:, :K] & (top_logprob[:, :K] != NEG_INF) & live[:, None]  # (n, K)
        if not schedule.host_reads_free or bool(ending.any()):  # on the CPU, most steps have no ending to file
            slot = done_count.index_select(0, images)[:, None] + ending.long().cumsum(1) - 1  # (n, K)
            taken = ending & (slot < K)  # (n, K)
            target = torch.where(taken, images[:, None] * K + slot, B * K).view(-1)  # (n*K,) scratch row when not taken
            source = (torch.arange(n, device=device)[:, None] * K + top_beam[:, :K]).view(-1)  # (n*K,)
            ended = history.index_select(0, source)  # (n*K, T)
            ended[:, t] = end
            done_words.index_copy_(0, target, ended)
            done_logprob.index_copy_(0, target, top_logprob[:, :K].reshape(-1))
            done_score.index_copy_(0, target, top_logprob[:, :K].reshape(-1).double() / float(t + 1) ** length_penalty)
            done_length.index_copy_(0, target, torch.full_like(target, t + 1))
            done_count.index_add_(0, images, taken.long().sum(1))

        # The first K candidates that do not end continue; at most K of 2K end.
        order = torch.arange(2 * K, device=device).expand(n, 2 * K) + is_end.long() * 2 * K  # (n, 2K)
        keep = order.topk(K, dim=1, largest=False).indices  # (n, K)
        beam_logprob = top_logprob.gather(1, keep)  # (n, K)
        parent = top_beam.gather(1, keep)  # (n, K)
        next_token = top_token.gather(1, keep).view(-1)  # (n*K,)
        flat_parent = (parent + torch.arange(n, device=device)[:, None] * K).view(-1)  # (n*K,)
        history = history.index_select(0, flat_parent)
        history[:, t] = next_token
        if row_rules is not None:
            row_rules.select(flat_parent, same_images=True)  # a beam's parent is a beam of the same image
            row_rules.advance(next_token)

        if t == max_len - 1:
            last_words.index_copy_(0, images, history.view(n, K, L))
            last_logprob.index_copy_(0, images, beam_logprob)
            break
        count = done_count.index_select(0, images)  # (n,)
        done = count >= K  # (n,)
        if prune and best_possible_divisor is not None:
            scores = done_score[:-1].view(B, K).index_select(0, images).masked_fill(slot_rank >= count[:, None], NEG_INF)  # (n, K)
            live_best = beam_logprob.max(1).values.double()  # (n,)
            done |= (count > 0) & (scores.max(1).values >= live_best / best_possible_divisor)
        alive.index_copy_(0, images, live & ~done)
        finished.record(t, ~alive)
        known = finished.known(t)
        if bool(known.all()):
            break
        state = _select(state, flat_parent)
        tokens = next_token
        kept = _keep_rows(known, images_host, schedule, device) if prune else None
        if kept is not None:
            rows_host, rows = kept
            row_index = (rows[:, None] * K + torch.arange(K, device=device)).view(-1)  # (n'*K,)
            images_host = images_host[rows_host]
            images, beam_logprob = images.index_select(0, rows), beam_logprob.index_select(0, rows)
            history, tokens = history.index_select(0, row_index), tokens.index_select(0, row_index)
            state, memory = _select(state, row_index), _select(memory, row_index)
            if row_rules is not None:
                row_rules.select(row_index)
    return _best(done_words, done_logprob, done_score, done_length, done_count, last_words, last_logprob,
                 K, max_len, length_penalty)


def _best(done_words, done_logprob, done_score, done_length, done_count, last_words, last_logprob,
          K: int, max_len: int, length_penalty: float) -> list[Hypothesis]:
    """Each image's best finished caption, or its best live beam if none finished: one copy to the host."""
    B = done_count.shape[0]
    L = done_words.shape[1]
    filled = torch.arange(K, device=done_count.device)[None] < done_count[:, None]  # (B, K)
    pick = done_score[:-1].view(B, K).masked_fill(~filled, NEG_INF).argmax(1)  # (B,) first of equals
    rows = torch.arange(B, device=done_count.device) * K + pick  # (B,)
    words, logprob, score, length = (done_words.index_select(0, rows), done_logprob.index_select(0, rows),
                                     done_score.index_select(0, rows), done_length.index_select(0, rows))
    # Images still searching at max_len without a finished caption rank their live beams.
    last_score = last_logprob.double() / float(max(max_len, 1)) ** length_penalty  # (B, K)
    beam = last_score.argmax(1)  # (B,)
    none_done = done_count == 0  # (B,)
    words = torch.where(none_done[:, None], last_words[torch.arange(B, device=beam.device), beam], words)  # (B, T)
    logprob = torch.where(none_done, last_logprob.gather(1, beam[:, None])[:, 0], logprob)
    score = torch.where(none_done, last_score.gather(1, beam[:, None])[:, 0], score)
    length = torch.where(none_done, L if max_len else 0, length)
    words, logprob, score, length = _to_host(words, logprob, score, length)
    return [Hypothesis(w[:n], lp, s) for w, lp, s, n in zip(words, logprob, score, length)]

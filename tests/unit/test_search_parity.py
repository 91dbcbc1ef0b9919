"""The device search gives today's captions, token for token.

The reference is the search as it was (`streamcap.model.search_reference`,
kept verbatim). On the CPU the device search drops finished rows at the same
steps, so the decoder sees the same batches and the captions, log-probs and
scores must be identical to the bit, with every rule on: word rules,
repeated trigrams and words, bans, requires with their word budget and boost,
the fairseq finished-candidate rule, length penalty and max_len.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from _backend_models import dev_set_paths

from streamcap.backends.select import load_captioner
from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.decoding import DecodeOptions, decode_grid
from streamcap.model.grounding import GroundingOptions, StepRules
from streamcap.model.images import read_image
from streamcap.model.search import Schedule, beam_search, greedy_search
from streamcap.model.search_reference import HostStepRules, reference_decode
from streamcap.model.search_reference import beam_search as reference_beam
from streamcap.model.search_reference import greedy_search as reference_greedy
from streamcap.model.vocab import Vocabulary

WORDS = ["<pad>", "startseq", "endseq", "a", "man", "woman", "car", "truck", "on", "the", "road", "is", "wearing", "red",
         "helmet", "dog", "street", "walking", "parked", "empty", "in", "with", "an", "and", "cat", "fire", "smoke"]
VOCAB = Vocabulary(WORDS)
CONCEPTS = ("person", "vehicle", "animal", "fire")
P, D = 9, 32


def _as_tuples(hypotheses):
    return [(h.tokens, h.logprob, h.score) for h in hypotheses]


class _Habits:
    """A small real decoder with a taste for concept words, repeats and early ends: every rule has work to do."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        config = DecoderConfig(kind="attention", vocab_size=len(VOCAB), feature_dim=D, embed_dim=16, hidden_dim=24,
                               attention_dim=12, dropout=0.0)
        self.decoder = build_decoder(config).eval()
        self.bias = torch.randn(len(VOCAB)) * 2.0  # (V,)
        self.bias[[VOCAB.index[w] for w in ("man", "dog", "a", "the")]] += 2.5
        self.rows = 0

    def __call__(self, tokens, state, memory):
        self.rows += tokens.shape[0]
        logprobs, state = self.decoder.step(tokens, state, memory)
        logits = logprobs * 2.0 + self.bias
        logits[torch.arange(len(tokens)), tokens] += 3.0  # stutters, so the repeat rules bite
        return torch.log_softmax(logits, -1), state


class _EndsNear:
    """`_Habits` whose endseq grows likelier past a per-image target length (riding in memory and state)."""

    def __init__(self, habits, memory, targets):
        self.habits, self.memory = habits, (*memory, targets.float())

    def init_state(self):
        return (*self.habits.decoder.init_state(self.memory[:-1]), torch.zeros(self.memory[0].shape[0]))

    def __call__(self, tokens, state, memory):
        logprobs, new_state = self.habits(tokens, state[:-1], memory[:-1])
        length = state[-1] + 1  # (B,)
        logits = logprobs.clone()
        logits[:, VOCAB.end_index] += 1.5 * (length - memory[-1])
        return torch.log_softmax(logits, -1), (*new_state, length)


class _RowByRow:
    """The same step computed one row at a time: its numbers no longer depend on which rows share the batch."""

    def __init__(self, step):
        self.step = step

    def __call__(self, tokens, state, memory):
        outputs = [self.step(tokens[i : i + 1], tuple(s[i : i + 1] for s in state), tuple(m[i : i + 1] for m in memory))
                   for i in range(tokens.shape[0])]
        return torch.cat([o[0] for o in outputs]), tuple(torch.cat(parts) for parts in zip(*(o[1] for o in outputs)))


def _case(seed: int, images: int = 12):
    habits = _Habits(seed)
    generator = torch.Generator().manual_seed(seed)
    grid = torch.randn(images, P, D, generator=generator)
    probs = torch.rand(images, len(CONCEPTS), generator=generator)  # (B, C): some banned, some required, some neither
    with torch.no_grad():
        memory, _ = habits.decoder.prepare(grid)
    return habits, memory, probs


GROUNDINGS = {
    "word rules only": GroundingOptions(),
    "bans and requires": GroundingOptions(ban_below=0.3, require_above=0.7, require_within=6),
    "per concept with boost": GroundingOptions(ban_below=0.2, require_above=0.8, require_within=8, require_boost=2.0,
                                               per_concept=(("person", 0.5, 0.5), ("vehicle", 0.1, 0.4))),
    "no repeat rules": GroundingOptions(ban_below=0.3, require_above=0.6, block_repeated_trigrams=False, block_repeated_words=False),
}


@pytest.mark.parametrize("grounding", list(GROUNDINGS))
@pytest.mark.parametrize("beam_size, length_penalty, prune, max_len", [
    (1, 0.0, True, 12), (1, 0.0, True, 3), (2, 0.0, True, 12), (3, 0.0, True, 14), (3, 1.0, True, 14),
    (3, 0.0, False, 10), (5, 0.5, True, 9), (3, 0.0, True, 4),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_device_search_is_the_reference_on_the_cpu(grounding, beam_size, length_penalty, prune, max_len, seed):
    options = GROUNDINGS[grounding]
    habits, memory, probs = _case(seed)
    new_rules = StepRules(VOCAB, CONCEPTS, probs, options)
    old_rules = HostStepRules(VOCAB, CONCEPTS, probs, options)
    start, end = VOCAB.start_index, VOCAB.end_index
    state = habits.decoder.init_state(memory)
    with torch.no_grad():
        if beam_size == 1:
            old = reference_greedy(habits, state, memory, start, end, max_len, old_rules)
            new = greedy_search(habits, state, memory, start, end, max_len, new_rules)
        else:
            old = reference_beam(habits, state, memory, start, end, max_len, beam_size, length_penalty, old_rules, prune)
            new = beam_search(habits, state, memory, start, end, max_len, beam_size, length_penalty, new_rules, prune)
    assert _as_tuples(new) == _as_tuples(old)
    if max_len <= 4:
        assert any(h.tokens[-1] != end for h in old), "the case must include captions cut off by max_len"


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("schedule", [Schedule(lag=2, compact_at=0.5), Schedule(lag=1, compact_at=0.0), Schedule(lag=3, compact_at=1.0)])
def test_the_gpu_schedule_keeps_finished_rows_without_changing_a_caption(beam_size, schedule):
    # given a step whose numbers do not depend on the batch (row by row), so only the search logic can differ
    habits, memory, probs = _case(seed=3, images=10)
    ends = _EndsNear(habits, memory, torch.randint(2, 10, (10,), generator=torch.Generator().manual_seed(3)))
    options = GROUNDINGS["per concept with boost"]
    step, memory, state = _RowByRow(ends), ends.memory, ends.init_state()
    start, end = VOCAB.start_index, VOCAB.end_index
    with torch.no_grad():
        if beam_size == 1:
            old = reference_greedy(step, state, memory, start, end, 16, HostStepRules(VOCAB, CONCEPTS, probs, options))
            habits.rows = 0
            new = greedy_search(step, state, memory, start, end, 16, StepRules(VOCAB, CONCEPTS, probs, options), schedule)
        else:
            old = reference_beam(step, state, memory, start, end, 16, beam_size, 0.0, HostStepRules(VOCAB, CONCEPTS, probs, options))
            habits.rows = 0
            new = beam_search(step, state, memory, start, end, 16, beam_size, 0.0, StepRules(VOCAB, CONCEPTS, probs, options),
                              schedule=schedule)
    # when finished rows stay in the batch for a while (lagged flags, compaction only below a share)
    # then the captions, log-probs and scores are still today's
    assert _as_tuples(new) == _as_tuples(old)
    assert len({len(h.tokens) for h in old}) > 2, "the case needs captions of different lengths"
    assert habits.rows > 0


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small-batch decoding is several times faster on one thread on this shared 2-core box (idle workers spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dev_frames(shared_data):
    """40 images from each dev set: Flickr8k, the COCO subset, frames of the dev clips."""
    return [read_image(p) for p in dev_set_paths(shared_data, 40)]


@pytest.fixture(scope="module", params=["torch-cpu", "onnxruntime-cpu"])
def shipped(request, dev_frames):
    """The shipped model on a CPU backend, and its grids of the dev images in batches of 24."""
    captioner = load_captioner(backend=request.param)
    return captioner, [captioner.encode(dev_frames[i : i + 24]) for i in range(0, len(dev_frames), 24)]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_shipped_model_captions_dev_images_exactly_as_before(shipped, beam_size):
    captioner, grids = shipped
    spec = captioner.spec
    options = DecodeOptions.for_model(spec, beam_size)
    assert options.grounding.per_concept and options.grounding.require_boost, "the shipped model decodes with grounding"
    new, old = [], []
    for grid in grids:
        # when the same grids are decoded by the device search and by the reference
        hypotheses, concepts = decode_grid(captioner, spec.vocab, grid, options, spec.concept_names)
        reference, reference_concepts = reference_decode(captioner, spec.vocab, grid, options, spec.concept_names)
        new += hypotheses
        old += reference
        torch.testing.assert_close(concepts, reference_concepts, atol=0, rtol=0)
    # then every caption of the 120 images is the same tokens, log-prob and score
    assert len(old) == 120
    assert _as_tuples(new) == _as_tuples(old)
    assert len({tuple(h.tokens) for h in old}) > 60, "the dev images get varied captions"


def test_captioner_options_reach_the_device_search(shipped):
    captioner, grids = shipped
    captioner.options = dataclasses.replace(DecodeOptions.for_model(captioner.spec, 3), max_len=5)
    hypotheses, _ = captioner.decode(grids[0])
    assert max(len(h.tokens) for h in hypotheses) <= 5
    captioner.options = DecodeOptions.for_model(captioner.spec)

"""Grounded decoding: ruled-out concepts are never said, sure ones are named, no phrase repeats."""
from __future__ import annotations

import pytest
import torch

from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.grounding import GroundingOptions, StepRules
from streamcap.model.search import beam_search, greedy_search
from streamcap.model.vocab import Vocabulary

WORDS = ["<pad>", "startseq", "endseq", "a", "man", "woman", "car", "truck", "on", "the", "road", "is", "wearing", "red", "helmet",
         "dog", "street", "walking", "parked", "empty"]
VOCAB = Vocabulary(WORDS)
IDX = VOCAB.index
CONCEPTS = ("person", "vehicle", "animal", "fire")
P, D = 9, 32


def _decoder(seed=0):
    torch.manual_seed(seed)
    config = DecoderConfig(kind="attention", vocab_size=len(VOCAB), feature_dim=D, embed_dim=16, hidden_dim=24, attention_dim=12, dropout=0.0)
    return build_decoder(config).eval()


class _Wants:
    """A real decoder pushed towards some words and towards ending early: what grounding must overrule."""

    def __init__(self, decoder, favoured: dict[str, float], end_bonus: float = 0.0):
        self.decoder, self.favoured, self.end_bonus = decoder, favoured, end_bonus

    def __call__(self, tokens, state, memory):
        logprobs, state = self.decoder.step(tokens, state, memory)
        logits = logprobs.clone()
        for word, bonus in self.favoured.items():
            logits[:, IDX[word]] += bonus
        logits[tokens != VOCAB.start_index, VOCAB.end_index] += self.end_bonus
        return torch.log_softmax(logits, -1), state


class _Shaped:
    """A real decoder whose next-word logits `shape(tokens, logits)` edits in place: a habit the rules must break."""

    def __init__(self, decoder, shape):
        self.decoder, self.shape = decoder, shape

    def __call__(self, tokens, state, memory):
        logprobs, state = self.decoder.step(tokens, state, memory)
        logits = logprobs.clone()
        self.shape(tokens, logits)
        return torch.log_softmax(logits, -1), state


def _search(beam_size, step, decoder, grid, rules):
    memory, _ = decoder.prepare(grid)
    state = decoder.init_state(memory)
    if beam_size == 1:
        return greedy_search(step, state, memory, VOCAB.start_index, VOCAB.end_index, 20, rules)
    return beam_search(step, state, memory, VOCAB.start_index, VOCAB.end_index, 20, beam_size=beam_size, rules=rules)


def _words(hypothesis):
    return VOCAB.decode(hypothesis.tokens).split()


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_ruled_out_concept_is_never_said(beam_size):
    # given a decoder that loves to say "man" and "woman", and a head sure nobody is there on half the images
    decoder = _decoder(1)
    step = _Wants(decoder, {"man": 12.0, "woman": 11.0})
    grid = torch.randn(6, P, D)
    probs = torch.tensor([[0.02, 0.9, 0.0, 0.0]] * 3 + [[0.97, 0.9, 0.0, 0.0]] * 3)  # (B, C)
    options = GroundingOptions(ban_below=0.1)
    with torch.no_grad():
        free = _search(beam_size, step, decoder, grid, StepRules(VOCAB))
        grounded = _search(beam_size, step, decoder, grid, StepRules(VOCAB, CONCEPTS, probs, options))
    person = {"man", "woman"}
    assert all(person & set(_words(h)) for h in free), "the test needs a decoder that says person words"
    # then the images without a person never get a person word; the others still do
    assert all(not person & set(_words(h)) for h in grounded[:3])
    assert all(person & set(_words(h)) for h in grounded[3:])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_sure_concept_is_named_before_the_caption_ends(beam_size):
    # given a decoder that wants to stop at once and rarely says "car"
    decoder = _decoder(2)
    step = _Wants(decoder, {"car": 2.0, "road": 2.0}, end_bonus=8.0)
    grid = torch.randn(5, P, D)
    probs = torch.tensor([[0.5, 0.95, 0.0, 0.0]] * 5)
    with torch.no_grad():
        free = _search(beam_size, step, decoder, grid, StepRules(VOCAB))
        grounded = _search(beam_size, step, decoder, grid, StepRules(VOCAB, CONCEPTS, probs, GroundingOptions(require_above=0.9)))
    vehicle = {"car", "truck"}
    assert not all(vehicle & set(_words(h)) for h in free), "the test needs a decoder that leaves the car out"
    assert all(vehicle & set(_words(h)) for h in grounded)
    assert all(h.tokens[-1] == VOCAB.end_index for h in grounded)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_boost_reaches_for_a_required_word_the_decoder_would_talk_around(beam_size):
    # given a decoder that would rather say anything than "car" or "truck", and a head sure of a vehicle
    decoder = _decoder(4)
    step = _Wants(decoder, {"car": -6.0, "truck": -6.0, "road": 3.0, "street": 3.0})
    grid = torch.randn(4, P, D)
    probs = torch.tensor([[0.5, 0.95, 0.0, 0.0]] * 4)
    vehicle = {"car", "truck"}
    with torch.no_grad():
        plain = _search(beam_size, step, decoder, grid, StepRules(VOCAB, CONCEPTS, probs, GroundingOptions(require_above=0.9, require_within=6)))
        boosted = _search(beam_size, step, decoder, grid, StepRules(VOCAB, CONCEPTS, probs,
                                                                    GroundingOptions(require_above=0.9, require_within=6, require_boost=12.0)))
    # then without the boost the budget runs out first; with it every caption names the vehicle, once
    assert not all(vehicle & set(_words(h)) for h in plain), "the test needs a decoder that talks around the car"
    assert all(vehicle & set(_words(h)) for h in boosted), [" ".join(_words(h)) for h in boosted]
    assert all(sum(w in vehicle for w in _words(h)) <= 2 for h in boosted), "the boost stops once the concept is named"


def test_a_requirement_gives_up_after_its_word_budget():
    decoder = _decoder(3)
    # never says a vehicle word at all: "car" and "truck" are pushed far down
    step = _Wants(decoder, {"car": -50.0, "truck": -50.0}, end_bonus=8.0)
    probs = torch.tensor([[0.5, 0.99, 0.0, 0.0]])
    rules = StepRules(VOCAB, CONCEPTS, probs, GroundingOptions(require_above=0.9, require_within=6))
    with torch.no_grad():
        (hypothesis,) = _search(1, step, decoder, torch.randn(1, P, D), rules)
    # then the caption still ends, soon after the budget, instead of running to max_len (20)
    assert hypothesis.tokens[-1] == VOCAB.end_index and len(hypothesis.tokens) <= 10
    assert VOCAB.start_index not in hypothesis.tokens and 0 not in hypothesis.tokens


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_trigram_is_said_twice(beam_size):
    # given a decoder that would loop "is wearing a red helmet is wearing a red helmet ..."
    loop = ["is", "wearing", "a", "red", "helmet"]

    def loops(tokens, logits):
        for previous, following in zip(["startseq", *loop], loop + ["is"]):
            logits[tokens == IDX[previous], IDX[following]] += 20.0
        logits[:, VOCAB.end_index] -= 5.0

    decoder = _decoder(4)
    step = _Shaped(decoder, loops)
    with torch.no_grad():
        free = _search(beam_size, step, decoder, torch.randn(3, P, D), StepRules(VOCAB, options=GroundingOptions(block_repeated_trigrams=False)))
        blocked = _search(beam_size, step, decoder, torch.randn(3, P, D), StepRules(VOCAB))

    def trigrams(words):
        return [tuple(words[i : i + 3]) for i in range(len(words) - 2)]

    assert any(len(set(trigrams(_words(h)))) < len(trigrams(_words(h))) for h in free), "the test needs a looping decoder"
    for h in blocked:
        grams = trigrams(_words(h))
        assert len(set(grams)) == len(grams), _words(h)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_word_follows_itself(beam_size):
    # given a decoder that stutters: after "tabby"-like words it wants the same word again
    def stutters(tokens, logits):
        logits[torch.arange(len(tokens)), tokens] += 15.0
        logits[tokens == VOCAB.start_index, IDX["dog"]] += 15.0

    decoder = _decoder(5)
    step = _Shaped(decoder, stutters)
    grid = torch.randn(3, P, D)
    with torch.no_grad():
        free = _search(beam_size, step, decoder, grid, StepRules(VOCAB, options=GroundingOptions(block_repeated_words=False)))
        blocked = _search(beam_size, step, decoder, grid, StepRules(VOCAB))

    def doubled(words):
        return any(a == b for a, b in zip(words, words[1:]))

    assert all(doubled(_words(h)) for h in free), "the test needs a stuttering decoder"
    assert not any(doubled(_words(h)) for h in blocked), [_words(h) for h in blocked]


def _free_and_blocked(vocab, shape, seed, beam_size):
    """Captions of 3 images by a real decoder over `vocab` with the habit `shape`: without, then with the word rules."""
    torch.manual_seed(seed)
    config = DecoderConfig(kind="attention", vocab_size=len(vocab), feature_dim=D, embed_dim=16, hidden_dim=24, attention_dim=12, dropout=0.0)
    decoder = build_decoder(config).eval()
    step = _Shaped(decoder, shape)
    grid = torch.randn(3, P, D)

    def search(rules):
        memory, _ = decoder.prepare(grid)
        state = decoder.init_state(memory)
        if beam_size == 1:
            found = greedy_search(step, state, memory, vocab.start_index, vocab.end_index, 20, rules)
        else:
            found = beam_search(step, state, memory, vocab.start_index, vocab.end_index, 20, beam_size=beam_size, rules=rules)
        return [vocab.decode(h.tokens).split() for h in found]

    with torch.no_grad():
        return search(StepRules(vocab, options=GroundingOptions(block_repeated_words=False))), search(StepRules(vocab))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_word_on_both_sides_of_and(beam_size):
    # given a vocabulary with "and", and a decoder that lists the same thing twice: "a car and car", "red and red"
    vocab = Vocabulary([*WORDS, "and"])
    index = vocab.index

    def lists_twice(tokens, logits):
        logits[tokens == vocab.start_index, index["car"]] += 15.0
        logits[(tokens == index["car"]) | (tokens == index["red"]), index["and"]] += 15.0
        logits[tokens == index["and"], index["car"]] += 15.0
        logits[tokens == index["and"], index["red"]] += 14.0

    def around_and(words):
        return any(a == b for a, middle, b in zip(words, words[1:], words[2:]) if middle == "and")

    free, blocked = _free_and_blocked(vocab, lists_twice, 6, beam_size)
    assert all(around_and(words) for words in free), "the test needs a decoder that repeats around 'and'"
    # then no caption has the same word on both sides of "and", and the lists still happen
    assert not any(around_and(words) for words in blocked), blocked
    assert any("and" in words for words in blocked), blocked


@pytest.mark.parametrize("beam_size", [1, 3])
def test_no_noun_repeated_across_of_a(beam_size):
    # given a decoder that says "a car of a car" (the shipped model once said "a bowl of a bowl")
    vocab = Vocabulary([*WORDS, "and", "of"])
    index = vocab.index

    def repeats(tokens, logits):
        logits[tokens == vocab.start_index, index["a"]] += 15.0
        first = tokens == index["a"]
        logits[first, index["car"]] += 15.0
        logits[tokens == index["car"], index["of"]] += 15.0
        logits[tokens == index["of"], index["a"]] += 15.0

    def car_of_a_car(words):
        return any(w == ("car", "of", "a", "car") for w in zip(words, words[1:], words[2:], words[3:]))

    free, blocked = _free_and_blocked(vocab, repeats, 7, beam_size)
    assert all(car_of_a_car(words) for words in free), free
    # then no caption repeats the noun across "of a"; the rest of the habit stays
    assert not any(car_of_a_car(words) for words in blocked), blocked
    assert all(words[:2] == ["a", "car"] for words in blocked), blocked


def test_without_concepts_only_the_word_rules_apply():
    rules = StepRules(VOCAB, CONCEPTS, None, GroundingOptions(ban_below=0.5, require_above=0.5))
    assert rules.ban_mask is None and rules.required is None


def test_thresholds_can_differ_per_concept_and_survive_a_checkpoint_round_trip():
    import dataclasses

    options = GroundingOptions(ban_below=0.1, require_above=0.95, per_concept=[["person", 0.5, 0.8]])
    ban, require = options.thresholds(CONCEPTS)
    assert ban.tolist() == pytest.approx([0.5, 0.1, 0.1, 0.1]) and require.tolist() == pytest.approx([0.8, 0.95, 0.95, 0.95])
    assert GroundingOptions(**dataclasses.asdict(options)) == options
    probs = torch.tensor([[0.4, 0.4, 0.4, 0.4]])
    rules = StepRules(VOCAB, CONCEPTS, probs, options)
    banned = rules.ban_mask[0].nonzero()[:, 0].tolist()
    assert {VOCAB.words[i] for i in banned} == {"man", "woman"}, "only person is below its own threshold"

"""Stepwise decoding: incremental steps equal the full pass; a beam of one is greedy."""
import pytest
import torch

from streamcap.model.decoder import DecoderConfig, build_decoder
from streamcap.model.search import beam_search, greedy_search

V, D, P = 40, 32, 9
START, END = 1, 2


def _decoder(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    config = DecoderConfig(kind=kind, vocab_size=V, feature_dim=D, embed_dim=16, hidden_dim=24, attention_dim=12, dropout=0.5)
    return build_decoder(config).eval()


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_incremental_steps_equal_the_full_sequence_pass(kind):
    # given a decoder and a batch of captions
    decoder = _decoder(kind)
    grid = torch.randn(3, P, D)
    inputs = torch.randint(3, V, (3, 7))
    inputs[:, 0] = START
    with torch.no_grad():
        # when decoded in one teacher-forced pass and one step at a time, carrying the state
        full = decoder(grid, inputs)  # (B, T, V)
        memory, _ = decoder.prepare(grid)
        state = decoder.init_state(memory)
        stepped = []
        for t in range(inputs.shape[1]):
            logprobs, state = decoder.step(inputs[:, t], state, memory)
            stepped.append(logprobs)
    # then both give the same next-token distributions
    torch.testing.assert_close(torch.stack(stepped, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["merge", "attention"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_width_one_is_greedy(kind, seed):
    decoder = _decoder(kind, seed)
    grid = torch.randn(5, P, D)
    with torch.no_grad():
        memory, _ = decoder.prepare(grid)
        greedy = greedy_search(decoder.step, decoder.init_state(memory), memory, START, END, max_len=12)
        beam = beam_search(decoder.step, decoder.init_state(memory), memory, START, END, max_len=12, beam_size=1)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.logprob for h in beam] == pytest.approx([h.logprob for h in greedy], abs=1e-4)


def _sequence_logprob(decoder, grid_row, tokens):
    memory, _ = decoder.prepare(grid_row[None])
    state = decoder.init_state(memory)
    total, previous = 0.0, START
    for token in tokens:
        logprobs, state = decoder.step(torch.tensor([previous]), state, memory)
        total += float(logprobs[0, token])
        previous = token
    return total


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_beam_scores_are_the_true_log_probabilities_and_beat_greedy(kind):
    decoder = _decoder(kind, seed=3)
    grid = torch.randn(4, P, D)
    with torch.no_grad():
        memory, _ = decoder.prepare(grid)
        greedy = greedy_search(decoder.step, decoder.init_state(memory), memory, START, END, max_len=10)
        beam = beam_search(decoder.step, decoder.init_state(memory), memory, START, END, max_len=10, beam_size=4)
        for b in range(4):
            # the reported score is what the model assigns to that exact sequence
            assert beam[b].logprob == pytest.approx(_sequence_logprob(decoder, grid[b], beam[b].tokens), abs=1e-4)
            # and (without a length penalty) a wider beam never finds a less likely finished caption
            if greedy[b].tokens[-1] == END and beam[b].tokens[-1] == END:
                assert beam[b].logprob >= greedy[b].logprob - 1e-5


def test_length_penalty_favours_longer_captions():
    decoder = _decoder("attention", seed=4)
    grid = torch.randn(6, P, D)
    with torch.no_grad():
        memory, _ = decoder.prepare(grid)
        plain = beam_search(decoder.step, decoder.init_state(memory), memory, START, END, 20, beam_size=5, length_penalty=0.0)
        long = beam_search(decoder.step, decoder.init_state(memory), memory, START, END, 20, beam_size=5, length_penalty=2.0)
    assert sum(len(h.tokens) for h in long) >= sum(len(h.tokens) for h in plain)



class _EndsNearTarget:
    """A real decoder whose endseq grows likelier past a per-image target length.

    Random decoders rarely end, so pruning would have nothing to prune. The
    target rides in `memory` and the length in `state`, so a search that
    reorders or drops rows wrongly also gets the wrong target and ends elsewhere.
    """

    def __init__(self, decoder, grid, targets):
        self.decoder, self.rows = decoder, 0
        self.memory = (*decoder.prepare(grid)[0], targets.float())

    def init_state(self):
        return (*self.decoder.init_state(self.memory[:-1]), torch.zeros(self.memory[0].shape[0]))

    def __call__(self, tokens, state, memory):
        self.rows += tokens.shape[0]
        logprobs, new_state = self.decoder.step(tokens, state[:-1], memory[:-1])
        length = state[-1] + 1  # (B,)
        # Sharpened so beams differ; a gentle slope so a beam that finishes
        # first is not always the best one (what makes pruning non-trivial).
        logits = logprobs * 3.0
        logits[:, END] += 0.5 * (length - memory[-1])
        return torch.log_softmax(logits, -1), (*new_state, length)


def _varied_lengths_search(kind, seed, batch=24):
    decoder = _decoder(kind, seed)
    generator = torch.Generator().manual_seed(seed)
    grid = torch.randn(batch, P, D, generator=generator)
    targets = torch.randint(2, 12, (batch,), generator=generator)
    return decoder, grid, targets


@pytest.mark.parametrize("kind", ["merge", "attention"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("beam_size", [1, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_beam_search_finds_the_exhaustive_captions_with_fewer_steps(kind, length_penalty, beam_size, seed):
    # given a batch whose images finish at different lengths
    decoder, grid, targets = _varied_lengths_search(kind, seed)
    with torch.no_grad():
        exhaustive_step, pruned_step = _EndsNearTarget(decoder, grid, targets), _EndsNearTarget(decoder, grid, targets)
        # when searched exhaustively and with pruning
        exhaustive = beam_search(exhaustive_step, exhaustive_step.init_state(), exhaustive_step.memory, START, END, 15,
                                 beam_size=beam_size, length_penalty=length_penalty, prune=False)
        pruned = beam_search(pruned_step, pruned_step.init_state(), pruned_step.memory, START, END, 15,
                             beam_size=beam_size, length_penalty=length_penalty)
    assert len({len(h.tokens) for h in exhaustive}) > 2, "the test needs captions of different lengths"
    # then the captions and scores are the same, for less decoding work
    assert [h.tokens for h in pruned] == [h.tokens for h in exhaustive]
    assert [h.score for h in pruned] == pytest.approx([h.score for h in exhaustive], abs=1e-5)
    assert pruned_step.rows < exhaustive_step.rows


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_greedy_search_decodes_each_image_only_until_it_ends(kind):
    decoder, grid, targets = _varied_lengths_search(kind, seed=7)
    with torch.no_grad():
        greedy_step, beam_step = _EndsNearTarget(decoder, grid, targets), _EndsNearTarget(decoder, grid, targets)
        greedy = greedy_search(greedy_step, greedy_step.init_state(), greedy_step.memory, START, END, max_len=15)
        beam = beam_search(beam_step, beam_step.init_state(), beam_step.memory, START, END, 15, beam_size=1, prune=False)
    lengths = [len(h.tokens) for h in greedy]
    assert len(set(lengths)) > 2, "the test needs captions of different lengths"
    assert [h.tokens for h in greedy] == [h.tokens for h in beam]
    # each image is decoded once per word it produced (endseq included), not until the longest ends
    assert greedy_step.rows == sum(lengths) < len(lengths) * max(lengths)


def test_attention_lstm_with_precomputed_image_gates_is_the_lstm_cell_it_replaces():
    # The checkpoint stores a plain LSTMCell over [h_lang, mean image, word];
    # the step splits its input weights so the image part is computed once.
    decoder = _decoder("attention", seed=5)
    grid = torch.randn(3, P, D)
    h_lang, h_att, c_att = torch.randn(3, 24), torch.randn(3, 24), torch.randn(3, 24)
    with torch.no_grad():
        memory, _ = decoder.prepare(grid)
        words = decoder.embed(torch.tensor([4, 7, 9]))
        mean_image = decoder.feature_proj(grid).mean(1)
        expected = decoder.attention_lstm(torch.cat([h_lang, mean_image, words], 1), (h_att, c_att))
        got = decoder._attention_lstm(h_lang, words, memory[2], h_att, c_att)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


class _Favours:
    """A real decoder pushed to say "startseq determiner preposition endseq": what the rules must stop."""

    def __init__(self, decoder, determiner, preposition):
        self.decoder, self.determiner, self.preposition = decoder, determiner, preposition

    def __call__(self, tokens, state, memory):
        logprobs, state = self.decoder.step(tokens, state, memory)
        logits = logprobs.clone()
        logits[tokens == START, self.determiner] += 30.0
        logits[tokens == self.determiner, self.preposition] += 30.0
        logits[tokens != START, END] += 15.0
        return torch.log_softmax(logits, -1), state


def _pairs(hypotheses):
    return {(a, b) for h in hypotheses for a, b in zip([START, *h.tokens], h.tokens)}


def _vocab():
    from streamcap.model.vocab import Vocabulary

    # Index 5 is a determiner and 6 a preposition, so the vocabulary's own rules apply to them.
    return Vocabulary(["<pad>", "startseq", "endseq", "w3", "w4", "a", "in", *[f"w{i}" for i in range(7, V)]])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_banned_words_never_follow_their_trigger_in_any_search(beam_size):
    from streamcap.model.grounding import GroundingOptions, StepRules

    determiner, preposition = 5, 6
    rules = StepRules(_vocab(), options=GroundingOptions(block_repeated_trigrams=False))
    decoder = _decoder("attention", seed=11)
    step = _Favours(decoder, determiner, preposition)
    grid = torch.randn(16, P, D)
    with torch.no_grad():
        memory, _ = decoder.prepare(grid)
        search = (lambda **kw: greedy_search(step, decoder.init_state(memory), memory, START, END, 12, **kw)) if beam_size == 1 else \
            (lambda **kw: beam_search(step, decoder.init_state(memory), memory, START, END, 12, beam_size=beam_size, **kw))
        free, ruled = search(), search(rules=rules)
    # unruled, the decoder says "determiner preposition" and stops right there
    assert all(h.tokens == [determiner, preposition, END] for h in free)
    # with the rules it never puts a preposition after a determiner nor ends on either, and still finishes
    assert (determiner, preposition) not in _pairs(ruled)
    assert all(h.tokens[-1] == END and h.tokens[-2] not in (determiner, preposition) for h in ruled)


def test_vocabulary_rules_out_word_salad_after_determiners_and_cut_off_endings():
    from streamcap.model.vocab import Vocabulary

    vocab = Vocabulary(["<pad>", "startseq", "endseq", "a", "dog", "in", "the", "park"])
    (no_end_after, ends), (determiners, not_after_determiner) = vocab.banned_after
    index = vocab.index
    assert ends == {index["endseq"]} and {index["a"], index["in"], index["the"]} <= no_end_after
    assert determiners == {index["a"], index["the"]}
    assert {index["a"], index["in"], index["the"]} <= not_after_determiner
    assert index["dog"] not in not_after_determiner | no_end_after and index["park"] not in no_end_after

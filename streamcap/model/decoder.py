"""Caption decoders: `prepare` once per image, then `step` one token at a time.

Both decoders share one stepping contract, which greedy search, beam search,
teacher forcing, self-critical sampling and the exported ONNX step all use:

    memory, concepts = decoder.prepare(grid)   # per-image tensors, computed once
    state = decoder.init_state(memory)         # tuple of (B, ...) tensors
    logprobs, state = decoder.step(tokens, state, memory)

`memory` and `state` are tuples of tensors whose first axis is the batch, so a
beam search reorders them with `index_select(0, ...)`. `concepts` is the
concept head's calibrated probabilities (B, C), or None for a decoder without
a head. The attention decoder with a head is conditioned on them: they enter
the attention LSTM's gates (as the mean image does) and bias the output words,
so "no person here" reaches the words themselves, not only the search's bans.
Training passes `concepts` in (out-of-fold probabilities); at run time the
head computes them.

Shape letters: B batch, T steps, P grid regions, D encoder feature, E word
embedding, H hidden, A attention, V vocabulary, C concepts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from streamcap.model.concept_head import ConceptHead, ConceptHeadConfig

State = tuple[torch.Tensor, ...]
Memory = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class DecoderConfig:
    kind: str  # "merge" | "attention"
    vocab_size: int
    feature_dim: int
    embed_dim: int = 200
    hidden_dim: int = 256
    attention_dim: int = 256
    dropout: float = 0.5
    freeze_embeddings: bool = True
    concept_head: dict | None = None  # ConceptHeadConfig.to_dict(); None: no head (the models before it)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(self.concept_head["concepts"]) if self.concept_head else ()


class MergeDecoder(nn.Module):
    """The paper's "merge" model: the image never enters the LSTM.

    image 2048 -> dropout 0.5 -> Dense 256 ReLU; words -> Embedding 200 (GloVe,
    frozen) -> dropout 0.5 -> LSTM 256; add -> Dense 256 ReLU -> softmax.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        if config.concept_head:
            raise ValueError("the merge decoder has no concept head; use the attention decoder")
        self.config = config
        self.image_fc = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.feature_dim, config.hidden_dim), nn.ReLU()
        )
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(config.hidden_dim, config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, config.vocab_size)
        )

    def prepare(self, grid: torch.Tensor, concepts: torch.Tensor | None = None) -> tuple[Memory, None]:
        image = self.image_fc(grid.mean(1))  # (B, H)
        return (image,), None

    def init_state(self, memory: Memory) -> State:
        (image,) = memory
        zeros = image.new_zeros(image.shape[0], self.config.hidden_dim)  # (B, H)
        return (zeros, zeros)

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        (image,) = memory
        h, c = state
        words = self.embed_dropout(self.embed(tokens))  # (B, E)
        out, (h_new, c_new) = self.lstm(words[:, None], (h[None], c[None]))  # (B, 1, H)
        logits = self.head(image + out[:, 0])  # (B, V)
        return F.log_softmax(logits, -1), (h_new[0], c_new[0])

    def forward(self, grid: torch.Tensor, inputs: torch.Tensor, concepts: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing in one LSTM call: next-token log-probs (B, T, V)."""
        (image,), _ = self.prepare(grid)
        words = self.embed_dropout(self.embed(inputs))  # (B, T, E)
        out, _ = self.lstm(words)  # (B, T, H)
        return F.log_softmax(self.head(image[:, None] + out), -1)  # (B, T, V)


class AttentionDecoder(nn.Module):
    """Soft attention over the encoder grid with a two-layer "top-down" LSTM.

    Show, Attend and Tell's soft attention, arranged as in Anderson et al.'s
    Up-Down captioner: an attention LSTM sees the mean image, the previous word
    and the language LSTM's last output and decides where to look; a language
    LSTM reads the attended context and predicts the next word.
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        H, A, E = config.hidden_dim, config.attention_dim, config.embed_dim
        self.feature_proj = nn.Sequential(nn.Linear(config.feature_dim, H), nn.ReLU(), nn.Dropout(config.dropout))
        self.embed = nn.Embedding(config.vocab_size, E, padding_idx=0)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.attention_lstm = nn.LSTMCell(H + H + E, H)
        self.language_lstm = nn.LSTMCell(H + H, H)
        self.feature_key = nn.Linear(H, A)
        self.query = nn.Linear(H, A)
        self.score = nn.Linear(A, 1)
        self.out_dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, config.vocab_size)
        self.concept_head: ConceptHead | None = None
        if config.concept_head:
            head_config = ConceptHeadConfig.from_dict(config.concept_head)
            C = len(head_config.concepts)
            self.concept_head = ConceptHead(head_config)
            # Zero-initialised: a warm start from a model without a head decodes exactly as it did.
            self.concept_gates = nn.Linear(C, 4 * H, bias=False)
            self.concept_words = nn.Linear(C, config.vocab_size, bias=False)
            nn.init.zeros_(self.concept_gates.weight)
            nn.init.zeros_(self.concept_words.weight)

    def prepare(self, grid: torch.Tensor, concepts: torch.Tensor | None = None) -> tuple[Memory, torch.Tensor | None]:
        regions = self.feature_proj(grid)  # (B, P, H)
        keys = self.feature_key(regions)  # (B, P, A)
        # The mean image's share of the attention LSTM's gates is the same at
        # every step, so it is paid once per image instead of once per word and beam.
        H = self.config.hidden_dim
        lstm = self.attention_lstm
        image_gates = F.linear(regions.mean(1), lstm.weight_ih[:, H : 2 * H], lstm.bias_ih + lstm.bias_hh)  # (B, 4H)
        if self.concept_head is None:
            return (regions, keys, image_gates), None
        if concepts is None:
            concepts = self.concept_head(grid)  # (B, C)
        image_gates = image_gates + self.concept_gates(concepts)  # (B, 4H)
        word_bias = self.concept_words(concepts)  # (B, V)
        return (regions, keys, image_gates, word_bias), concepts

    def init_state(self, memory: Memory) -> State:
        regions = memory[0]
        zeros = regions.new_zeros(regions.shape[0], self.config.hidden_dim)  # (B, H)
        return (zeros, zeros, zeros, zeros)

    def _attention_lstm(self, h_lang, words, image_gates, h_att, c_att) -> tuple[torch.Tensor, torch.Tensor]:
        """`attention_lstm` on [h_lang, mean image, words], with the image's gates precomputed."""
        H = self.config.hidden_dim
        weight_ih = self.attention_lstm.weight_ih  # (4H, H + H + E)
        gates = (
            image_gates
            + F.linear(h_lang, weight_ih[:, :H])
            + F.linear(words, weight_ih[:, 2 * H :])
            + F.linear(h_att, self.attention_lstm.weight_hh)
        )  # (B, 4H), in LSTMCell's order: input, forget, cell, output
        # Slices, not chunk(): ONNX shape inference keeps static sizes through Slice but not through Split.
        i, f, g, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
        c_att = torch.sigmoid(f) * c_att + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_att), c_att

    def attend(self, query_h: torch.Tensor, regions: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        energy = self.score(torch.tanh(keys + self.query(query_h)[:, None]))  # (B, P, 1)
        weights = torch.softmax(energy, dim=1)  # (B, P, 1)
        return (weights * regions).sum(1), weights[..., 0]  # (B, H), (B, P)

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        regions, keys, image_gates = memory[:3]
        h_att, c_att, h_lang, c_lang = state
        words = self.embed_dropout(self.embed(tokens))  # (B, E)
        h_att, c_att = self._attention_lstm(h_lang, words, image_gates, h_att, c_att)  # (B, H)
        context, _ = self.attend(h_att, regions, keys)  # (B, H)
        h_lang, c_lang = self.language_lstm(torch.cat([context, h_att], 1), (h_lang, c_lang))  # (B, H)
        logits = self.head(self.out_dropout(h_lang))  # (B, V)
        if len(memory) > 3:
            logits = logits + memory[3]  # the concepts' word bias
        return F.log_softmax(logits, -1), (h_att, c_att, h_lang, c_lang)

    def forward(self, grid: torch.Tensor, inputs: torch.Tensor, concepts: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: next-token log-probs (B, T, V)."""
        memory, _ = self.prepare(grid, concepts)
        state = self.init_state(memory)
        steps = []
        # Rows past their caption's end are computed too (the loss masks them): batches are length-bucketed.
        for t in range(inputs.shape[1]):
            logprobs, state = self.step(inputs[:, t], state, memory)  # (B, V)
            steps.append(logprobs)
        return torch.stack(steps, 1)  # (B, T, V)


DECODERS = {"merge": MergeDecoder, "attention": AttentionDecoder}


def build_decoder(config: DecoderConfig) -> nn.Module:
    if config.kind not in DECODERS:
        raise ValueError(f"unknown decoder {config.kind!r}; choose one of {', '.join(DECODERS)}")
    return DECODERS[config.kind](config)


def load_glove(embed: nn.Embedding, vocab_words: list[str], glove_words: list[str], glove_vectors) -> int:
    """Copy GloVe rows into the embedding by word; returns how many words were found."""
    row_of = {w: i for i, w in enumerate(glove_words)}
    found = 0
    with torch.no_grad():
        for index, word in enumerate(vocab_words):
            row = row_of.get(word)
            if row is not None and index != 0:
                embed.weight[index] = torch.as_tensor(glove_vectors[row], dtype=embed.weight.dtype)
                found += 1
    return found


def transplant_weights(source: nn.Module, source_vocab, target: nn.Module, target_vocab) -> int:
    """Copy `source`'s weights into `target`, matching vocabulary rows by word and concept columns by name.

    Tensors indexed by vocabulary (embedding, output layer) get the rows of the
    words both vocabularies share; new words keep their fresh initialisation.
    Tensors indexed by concept (the decoder's concept inputs) get the columns
    of the concepts both heads have, so a model that gains object categories
    starts reading its groups exactly as before. Tensors the source lacks keep
    theirs, and so does a concept head of another shape (it is trained in its
    own stage). Every other tensor must have the same shape in both models.
    """
    row_of = {w: i for i, w in enumerate(source_vocab.words)}
    pairs = [(i, row_of[w]) for i, w in enumerate(target_vocab.words) if w in row_of]
    new_rows = torch.tensor([i for i, _ in pairs])
    old_rows = torch.tensor([j for _, j in pairs])
    same_vocab = source_vocab.words == target_vocab.words
    source_concepts = list(getattr(source.config, "concept_names", ()))
    target_concepts = list(getattr(target.config, "concept_names", ()))
    shared = [(i, source_concepts.index(c)) for i, c in enumerate(target_concepts) if c in source_concepts]
    new_cols = torch.tensor([i for i, _ in shared], dtype=torch.long)
    old_cols = torch.tensor([j for _, j in shared], dtype=torch.long)
    source_state, target_state = source.state_dict(), target.state_dict()
    copied = 0
    with torch.no_grad():
        for name, tensor in target_state.items():
            old = source_state.get(name)
            if old is None:
                continue
            if name.startswith("concept_head.") and old.shape != tensor.shape:
                continue
            if name in ("concept_gates.weight", "concept_words.weight") and old.shape != tensor.shape:
                if name == "concept_words.weight" and not same_vocab:
                    old = torch.zeros(len(target_vocab), old.shape[1]).index_copy_(0, new_rows, old[old_rows])
                tensor[:, new_cols] = old[:, old_cols]
            elif old.shape == tensor.shape and len(source_vocab) == len(target_vocab) and same_vocab:
                tensor.copy_(old)
            elif old.shape[:1] == (len(source_vocab),) and tensor.shape[:1] == (len(target_vocab),) and old.shape[1:] == tensor.shape[1:]:
                tensor[new_rows] = old[old_rows]
            elif old.shape == tensor.shape:
                tensor.copy_(old)
            else:
                raise ValueError(f"cannot warm-start {name}: shape {tuple(old.shape)} vs {tuple(tensor.shape)}")
            copied += 1
    return copied

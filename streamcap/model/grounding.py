"""What every search does to the next word's log-probabilities before it picks.

Greedy search, beam search and self-critical sampling all call
`StepRules.apply` on every step, so PyTorch, ONNX Runtime and TensorRT emit
the same captions under the same rules:

0. Padding and startseq are never words.
1. Word rules (`Vocabulary.banned_after`): a caption never ends on an article
   or preposition, and no function word follows a determiner ("on a in the").
2. No repeated trigram ("is wearing a red helmet is wearing a helmet"): the
   word that would repeat the last two words' earlier continuation is banned
   (Paulus et al. 2017); and no word twice in a row ("a tabby tabby cat").
3. Grounding, from the concept head's calibrated probabilities per image:
   - a concept below `ban_below` is ruled out: none of its words is emitted;
   - a concept at or above `require_above` must be named: the caption cannot
     end before one of its words, for its first `require_within` words
     (a decoder that cannot find the word gives up rather than ramble), and
     while it is not named its words gain `require_boost` nats, so the search
     reaches for "car" in a street scene instead of only talking longer.
   Both thresholds can differ per concept (`per_concept`); the shipped ones
   are chosen on the dev sets (benchmarks/bench_grounding.py).

How they run: every rule is a table built once per batch (per vocabulary and
device for the word rules), so one step is a few tensor operations on whatever
device the search runs on, with no loop over rows, rules or concepts and no
read-back to the host: the word rules are one (classes, V) mask picked by the
previous word; the trigram rule scatters the words that would repeat into the
step's (R, V) mask; bans and boosts touch only the W columns of concept words;
which required concepts a row has named is an (R, C) flag the search carries
along with the row (`RowRules`), so it never rescans the history.

Shapes: R rows being decoded (images x beams), t words so far, V vocabulary, C concepts, W concept words.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from streamcap.model.vocab import PAD_INDEX, Vocabulary

NEG_INF = float("-inf")
# A word may not stand on both sides of one of these, with or without an article after it:
# "cars and cars", "a black and black photo", "a bowl of a bowl".
JOINERS = ("and", "or", "of")
ARTICLES = ("a", "an", "the")


@dataclass(frozen=True)
class GroundingOptions:
    ban_below: float = 0.0  # 0: never ban
    require_above: float = 1.01  # above 1: never require
    require_within: int = 16
    require_boost: float = 0.0  # nats added to an unmet required concept's words at every step
    block_repeated_trigrams: bool = True
    block_repeated_words: bool = True
    # (concept, ban_below, require_above) for concepts whose head is more or less sure than the rest
    per_concept: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:  # from a checkpoint the overrides arrive as lists
        object.__setattr__(self, "per_concept", tuple((str(c), float(b), float(r)) for c, b, r in self.per_concept))

    def thresholds(self, concepts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ban_below, require_above) per concept, (C,) each."""
        overrides = {c: (b, r) for c, b, r in self.per_concept}
        pairs = [overrides.get(c, (self.ban_below, self.require_above)) for c in concepts]
        return torch.tensor([b for b, _ in pairs]), torch.tensor([r for _, r in pairs])


def parse_concept_thresholds(item: str) -> tuple[str, float, float]:
    """"person=0.6,0.6" -> ("person", 0.6, 0.6): one entry of `per_concept`; ValueError when malformed."""
    concept, _, values = item.partition("=")
    ban, require = (float(v) for v in values.split(","))
    return concept, ban, require


def _word_rule_tables(vocab: Vocabulary, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rules 0 and 1 as (word class (V,), banned next words per class (classes, V+1) bool).

    A word's class is the set of `banned_after` rules it triggers, as bits, so
    the mask for a whole step is one lookup by the previous word. The extra last
    column is a scratch slot for scatters (the trigram rule writes its misses there).
    """
    cache = vocab.__dict__.setdefault("_word_rule_tables", {})
    if device not in cache:
        V = len(vocab)
        rules = vocab.rule_tensors
        word_class = torch.zeros(V, dtype=torch.long)  # (V,)
        banned = torch.zeros(1 << len(rules), V + 1, dtype=torch.bool)  # (classes, V+1)
        banned[:, [PAD_INDEX, vocab.start_index]] = True  # rule 0, whatever came before
        for bit, (after, words) in enumerate(rules):
            word_class[after] |= 1 << bit
            for cls in range(banned.shape[0]):
                if cls >> bit & 1:
                    banned[cls, words] = True
        cache[device] = (word_class.to(device), banned.to(device))
    return cache[device]


def _joiner_tables(vocab: Vocabulary, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The vocabulary indices of JOINERS and ARTICLES, on the device once, not once per batch."""
    cache = vocab.__dict__.setdefault("_joiner_tables", {})
    if device not in cache:
        cache[device] = tuple(torch.tensor(sorted(vocab.indices(words)), dtype=torch.long, device=device)
                              for words in (JOINERS, ARTICLES))
    return cache[device]


def _concept_words_table(vocab: Vocabulary, concepts: tuple[str, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """((C, V) bool: which words name each concept, (W,): the indices of all those words), built once per device."""
    cache = vocab.__dict__.setdefault("_concept_words_table", {})
    key = (concepts, device)
    if key not in cache:
        table = torch.zeros(len(concepts), len(vocab), dtype=torch.bool)  # (C, V)
        for c, indices in enumerate(vocab.concept_words(concepts)):
            table[c, indices] = True
        cache[key] = (table.to(device), table.any(0).nonzero()[:, 0].to(device))
    return cache[key]


def _threshold_tables(options: GroundingOptions, concepts: tuple[str, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ban_below, require_above) per concept on the device, uploaded once per options rather than once per batch."""
    key = (options, concepts, device)
    if key not in _THRESHOLDS:
        ban_below, require_above = options.thresholds(concepts)  # (C,), (C,)
        _THRESHOLDS[key] = (ban_below.to(device), require_above.to(device))
    return _THRESHOLDS[key]


_THRESHOLDS: dict = {}


class StepRules:
    """The rules for one batch of images, as tensors on the device of `probs` (or `device`).

    The searches make a `RowRules` per search (`rows`) and carry it along with
    their rows; `apply` is the same shaping for a caller that keeps only the
    history (self-critical sampling).
    """

    def __init__(self, vocab: Vocabulary, concepts: tuple[str, ...] = (), probs: torch.Tensor | None = None,
                 options: GroundingOptions = GroundingOptions(), device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else probs.device if probs is not None else torch.device("cpu")
        self.vocab_size = len(vocab)
        self.end = vocab.end_index
        self.start = vocab.start_index
        self.word_class, self.banned_after_class = _word_rule_tables(vocab, self.device)  # (V,), (classes, V+1)
        self.block_trigrams = options.block_repeated_trigrams
        self.block_repeats = options.block_repeated_words
        self.joiners, self.articles = _joiner_tables(vocab, self.device)  # (J,), (A,)
        self.require_within = options.require_within
        self.ban_mask: torch.Tensor | None = None  # (B, V) bool
        self.concept_columns: torch.Tensor | None = None  # (W,): the vocabulary indices of every concept word
        self.required: torch.Tensor | None = None  # (B, C) bool
        self.word_concepts: torch.Tensor | None = None  # (V, C) bool
        self.boost_by_concept: torch.Tensor | None = None  # (C, W): what naming each concept gains, on its words' columns
        if probs is None or not concepts:
            return
        concepts = tuple(concepts)
        probs = probs.to(self.device, torch.float32)  # (B, C)
        words, concept_columns = _concept_words_table(vocab, concepts, self.device)  # (C, V), (W,)
        ban_below, require_above = _threshold_tables(options, concepts, self.device)  # (C,), (C,)
        ruled_out = probs < ban_below  # (B, C)
        self.ban_mask = (ruled_out.float() @ words.float()) > 0  # (B, V): any ruled-out concept names the word
        self.concept_columns = concept_columns
        if min((options.require_above, *(r for _, _, r in options.per_concept))) > 1.0:
            return  # probabilities never exceed 1: nothing can be required
        self.required = (probs >= require_above) & words.any(1)[None]  # (B, C)
        self.word_concepts = words.t().contiguous()  # (V, C)
        if options.require_boost:
            # Only concept words can gain: the add touches their W columns, not all V.
            named_by = words.index_select(1, concept_columns)  # (C, W)
            self.boost_by_concept = torch.zeros(named_by.shape, device=self.device).masked_fill_(named_by, options.require_boost)

    def rows(self, row_image: torch.Tensor) -> "RowRules":
        """The rules' per-row state for a search whose row r decodes image `row_image[r]`."""
        return RowRules(self, row_image)

    def apply(self, logprobs: torch.Tensor, history: torch.Tensor, row_image: torch.Tensor) -> torch.Tensor:
        """logprobs (R, V) of the next word, history (R, t) of words so far, row_image (R,) -> shaped (R, V)."""
        rows = self.rows(row_image)
        if rows.named is not None and history.shape[1]:
            rows.named = self.word_concepts[history].any(1)  # (R, C)
        return rows.shape(logprobs, history)


class RowRules:
    """What the rules know about each row being decoded: its image's masks and which concepts it has named.

    A search calls `shape` before it picks, `advance` with the words it
    picked, and `select` whenever it reorders or drops rows (beams, finished
    images), so the state follows its rows.
    """

    def __init__(self, rules: StepRules, row_image: torch.Tensor):
        self.rules = rules
        # Only concept words can be banned: the rows keep their W columns, not all V.
        self.ban = None if rules.ban_mask is None else rules.ban_mask.index_select(0, row_image).index_select(1, rules.concept_columns)  # (R, W)
        self.required = None if rules.required is None else rules.required.index_select(0, row_image)  # (R, C)
        self.named = None if self.required is None else torch.zeros_like(self.required)  # (R, C)

    def shape(self, logprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """logprobs (R, V), history (R, t) of this search's rows -> shaped (R, V), a new tensor."""
        rules = self.rules
        R, t = history.shape
        V = logprobs.shape[-1]
        previous = history[:, -1] if t else torch.full((R,), rules.start, dtype=torch.long, device=logprobs.device)  # (R,)
        banned = rules.banned_after_class.index_select(0, rules.word_class.index_select(0, previous))  # (R, V+1)
        if self.ban is not None:
            columns = rules.concept_columns
            banned.index_copy_(1, columns, banned.index_select(1, columns) | self.ban)
        if rules.block_repeats and t:
            banned.scatter_(1, previous[:, None], True)
            if t >= 2 and len(rules.joiners):
                after_joiner = torch.isin(previous, rules.joiners)  # (R,): "bowl of _"
                banned.scatter_(1, torch.where(after_joiner, history[:, t - 2], V)[:, None], True)
                if t >= 3:  # "bowl of a _"
                    after_article = torch.isin(previous, rules.articles) & torch.isin(history[:, t - 2], rules.joiners)
                    banned.scatter_(1, torch.where(after_article, history[:, t - 3], V)[:, None], True)
        if rules.block_trigrams and t >= 3:
            repeat = (history[:, : t - 2] == history[:, t - 2 : t - 1]) & (history[:, 1 : t - 1] == history[:, t - 1 :])  # (R, t-2)
            # Each position that repeats the last two words bans the word that followed it there;
            # the other positions write into the scratch column V.
            banned.scatter_(1, torch.where(repeat, history[:, 2:], V), True)
        requiring = self.required is not None and t < rules.require_within
        if requiring:
            missing = self.required & ~self.named  # (R, C)
            banned[:, rules.end] |= missing.any(1)
        logprobs = logprobs.masked_fill(banned[:, :V], NEG_INF)
        if requiring and rules.boost_by_concept is not None:
            logprobs.index_add_(1, rules.concept_columns, missing.float() @ rules.boost_by_concept)  # (R, C) @ (C, W)
        return logprobs

    def advance(self, tokens: torch.Tensor) -> None:
        """Each row said `tokens` (R,)."""
        if self.named is not None:
            self.named |= self.rules.word_concepts.index_select(0, tokens)  # (R, C)

    def select(self, index: torch.Tensor, same_images: bool = False) -> None:
        """Row r becomes old row `index[r]`: finished rows dropped, or (`same_images`) beams reordered within their image."""
        for name in ("named",) if same_images else ("ban", "required", "named"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, index))

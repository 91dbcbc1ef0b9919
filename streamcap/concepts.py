"""Visual concepts: the word groups rules match, and the facts the concept head predicts.

One definition serves four readers, so they can never disagree:
- rules: `@person`, `@vehicle`, `@animal`, `@fire` are these groups;
- training: an image's concept labels come from whether its captions name the group;
- decoding: a concept the head rules out has these words banned;
- benchmarks: a caption "names" a concept exactly when a rule with `any: ["@name"]` would fire.

Words match whole words with a simple plural ("bus" matches "buses"); irregular
plurals are listed. Caption vocabularies (Flickr8k, COCO) name people by role
far more often than as "person", so `person` is broad on purpose. A phrase in
`not_phrases` never counts for its concept ("a fire hydrant" is no fire, "a
teddy bear" no animal), for rules and labels alike, so the head never learns
that hydrants burn and `@fire` never pages anyone about one.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

_EDGE_BEFORE = r"(?<![\w])"
_EDGE_AFTER = r"(?![\w])"


def word_regex(words: Iterable[str], plural: bool = True) -> re.Pattern:
    """One regex matching any of `words` as whole words (multi-word entries allow any spacing)."""
    alternatives = []
    for word in sorted(set(words), key=len, reverse=True):
        body = r"\s+".join(re.escape(part) for part in word.split())
        alternatives.append(body + (r"(?:s|es)?" if plural and word[-1:].isalpha() else ""))
    return re.compile(f"{_EDGE_BEFORE}(?:{'|'.join(alternatives)}){_EDGE_AFTER}")


@dataclass(frozen=True)
class Concept:
    name: str
    words: tuple[str, ...]
    not_phrases: tuple[str, ...] = ()

    @cached_property
    def regex(self) -> re.Pattern:
        return word_regex(self.words)

    @cached_property
    def _not_regex(self) -> re.Pattern | None:
        return word_regex(self.not_phrases, plural=True) if self.not_phrases else None

    def named_in(self, text: str) -> bool:
        """Does `text` (lower case) name this concept, not counting `not_phrases`?"""
        if self._not_regex is not None:
            text = self._not_regex.sub(" ", text)
        return self.regex.search(text) is not None


CONCEPTS: tuple[Concept, ...] = (
    Concept("person", (
        "person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid",
        "lady", "ladies", "guy", "gentleman", "gentlemen", "adult", "teenager", "teen", "toddler", "baby", "babies",
        "pedestrian", "worker", "someone", "somebody", "individual", "crowd", "cyclist", "biker", "rider",
        "runner", "jogger", "hiker", "officer", "policeman", "policemen", "soldier", "player", "skateboarder", "couple",
        "surfer", "skier", "snowboarder", "skater", "climber", "swimmer", "dancer", "bicyclist", "motorcyclist",
        "athlete", "spectator", "audience", "tourist", "shopper", "vendor", "driver", "student", "chef",
        "umpire", "catcher", "family", "bride", "groom", "mother", "father", "visitor", "intruder",
    )),
    Concept("vehicle", (
        "vehicle", "car", "truck", "van", "bus", "motorcycle", "motorbike", "bike", "bicycle", "scooter",
        "taxi", "cab", "jeep", "suv", "pickup", "lorry", "tractor", "trailer", "ambulance", "minivan",
        "sedan", "hatchback", "automobile", "limousine", "moped", "forklift", "camper", "bulldozer", "firetruck",
    )),
    Concept("animal", (
        "animal", "dog", "puppy", "puppies", "cat", "kitten", "kitty", "horse", "pony", "cow", "cattle", "calf",
        "calves", "bull", "sheep", "lamb", "goat", "pig", "bird", "pigeon", "seagull", "duck", "goose", "geese",
        "chicken", "owl", "deer", "fox", "foxes", "bear", "rabbit", "squirrel", "raccoon", "coyote", "wolf",
        "wolves", "mouse", "mice", "rat", "hedgehog", "badger", "skunk", "possum", "opossum", "boar",
        "elephant", "giraffe", "zebra", "monkey", "lion", "tiger",
    ), not_phrases=("teddy bear", "hot dog", "stuffed animal")),
    # "smoking" is left out: a man smoking a cigarette is not a fire.
    Concept("fire", ("fire", "smoke", "flame", "burning", "blaze", "smoky", "embers"),
            not_phrases=("fire hydrant", "fire truck", "fire engine", "fire station", "fire escape",
                         "fire department", "fire pit", "fireplace", "firework", "fire extinguisher")),
)
CONCEPT_NAMES: tuple[str, ...] = tuple(c.name for c in CONCEPTS)
BY_NAME: dict[str, Concept] = {c.name: c for c in CONCEPTS}

# The groups as plain word lists, for rules that build their own groups from them.
BUILTIN_GROUPS: dict[str, list[str]] = {c.name: list(c.words) for c in CONCEPTS}


def named_concepts(text: str, concepts: Sequence[Concept] = CONCEPTS) -> frozenset[str]:
    """The concepts a caption names."""
    text = " ".join(text.lower().split())
    return frozenset(c.name for c in concepts if c.named_in(text))


def label_from_captions(captions: Sequence[str], min_present: int, concepts: Sequence[Concept] = CONCEPTS) -> dict[str, int | None]:
    """1 when at least `min_present` captions name a concept, 0 when none do, None in between (unsure)."""
    named = [named_concepts(c, concepts) for c in captions]
    labels: dict[str, int | None] = {}
    for concept in concepts:
        count = sum(concept.name in n for n in named)
        labels[concept.name] = 1 if count >= min_present else 0 if count == 0 else None
    return labels


def banned_words(concept: Concept, vocab_words: Sequence[str]) -> frozenset[int]:
    """Vocabulary indices of the words that name `concept` (what decoding bans when the head rules it out)."""
    return frozenset(i for i, w in enumerate(vocab_words) if concept.regex.fullmatch(w))

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
    group: str = ""  # the group a category belongs to ("vehicle" for "truck"); "" for a group and an ungrouped category
    # Words decoding bans together with the concept but that do not name it: a runway with no
    # aeroplane in view is rare, and "a train on a runway" is what a motorway seen from above became.
    related: tuple[str, ...] = ()

    @cached_property
    def regex(self) -> re.Pattern:
        return word_regex(self.words)

    @cached_property
    def _not_regex(self) -> re.Pattern | None:
        return word_regex(self.not_phrases, plural=True) if self.not_phrases else None

    @cached_property
    def ban_regex(self) -> re.Pattern:
        return word_regex(self.words + self.related)

    def named_in(self, text: str) -> bool:
        """Does `text` (lower case) name this concept, not counting `not_phrases`?"""
        if self._not_regex is not None:
            text = self._not_regex.sub(" ", text)
        return self.regex.search(text) is not None


# Object categories (names are rule and payload keys: lower case, `_` for a space): COCO's 80 where captions name them with words a caption model says, merged or left
# out where a word is ambiguous ("orange" is mostly a colour, "mouse" an animal, "glass" a door), plus
# the scenes our captions get wrong most ("snow" on an infrared yard, "water" on a car park).
# Each is labelled from caption words, predicted by the concept head and banned in decoding when
# the head rules it out, so "a train on a runway" cannot be said of a motorway.
CATEGORIES: tuple[Concept, ...] = (
    Concept("car", ("car", "automobile", "sedan", "hatchback", "suv", "jeep", "taxi", "cab", "minivan", "van",
                    "limousine", "convertible", "coupe"), group="vehicle"),
    Concept("bus", ("bus", "busses", "minibus", "trolleybus", "double decker"), group="vehicle"),
    Concept("truck", ("truck", "lorry", "lorries", "pickup", "firetruck", "tanker", "dump truck"), group="vehicle"),
    Concept("motorcycle", ("motorcycle", "motorbike", "moped", "scooter", "dirt bike"), group="vehicle"),
    Concept("bicycle", ("bicycle", "bike", "tricycle"), group="vehicle"),
    Concept("train", ("train", "locomotive", "tram", "streetcar", "subway"), not_phrases=("train track", "train tracks")),
    Concept("airplane", ("airplane", "aeroplane", "plane", "jet", "jetliner", "airliner", "aircraft", "biplane"),
            related=("runway", "airport", "airfield", "tarmac")),
    Concept("boat", ("boat", "ship", "yacht", "sailboat", "canoe", "kayak", "ferry", "raft", "barge")),
    Concept("dog", ("dog", "puppy", "puppies", "terrier", "poodle", "labrador", "retriever", "dachshund", "collie",
                    "greyhound", "shepherd", "husky", "pug", "beagle"),
            not_phrases=("hot dog",), group="animal"),
    Concept("cat", ("cat", "kitten", "kitty", "tabby"), group="animal"),
    Concept("bird", ("bird", "pigeon", "seagull", "gull", "duck", "goose", "geese", "owl", "parrot", "swan",
                     "crow", "sparrow", "chicken", "hen", "rooster", "eagle", "hawk", "pelican", "flamingo"), group="animal"),
    Concept("horse", ("horse", "pony", "ponies", "foal", "stallion", "mare"), group="animal"),
    Concept("sheep", ("sheep", "lamb"), not_phrases=("sheep dog",), group="animal"),
    Concept("cow", ("cow", "cattle", "calf", "calves", "bull", "ox", "oxen"), group="animal"),
    Concept("elephant", ("elephant",), group="animal"),
    Concept("bear", ("bear",), not_phrases=("teddy bear",), group="animal"),
    Concept("zebra", ("zebra",), group="animal"),
    Concept("giraffe", ("giraffe",), group="animal"),
    Concept("traffic_light", ("traffic light", "traffic signal", "stoplight", "stop light")),
    Concept("fire_hydrant", ("fire hydrant", "hydrant")),
    Concept("stop_sign", ("stop sign",)),
    Concept("parking_meter", ("parking meter", "meter")),
    Concept("bench", ("bench",)),
    Concept("backpack", ("backpack", "rucksack")),
    Concept("umbrella", ("umbrella", "parasol")),
    Concept("handbag", ("handbag", "purse")),
    Concept("tie", ("tie", "necktie")),
    Concept("suitcase", ("suitcase", "luggage", "baggage")),
    Concept("frisbee", ("frisbee",)),
    Concept("skis", ("skis",)),
    Concept("snowboard", ("snowboard",)),
    Concept("ball", ("ball", "soccer ball", "tennis ball", "beach ball")),
    Concept("kite", ("kite",)),
    Concept("baseball_bat", ("bat", "baseball bat")),
    Concept("glove", ("glove", "mitt")),
    Concept("skateboard", ("skateboard",)),
    Concept("surfboard", ("surfboard", "surf board")),
    Concept("tennis_racket", ("racket", "racquet", "tennis racket")),
    Concept("bottle", ("bottle",)),
    Concept("wine_glass", ("wine glass", "wineglass")),
    Concept("cup", ("cup", "mug")),
    Concept("fork", ("fork",)),
    Concept("knife", ("knife", "knives")),
    Concept("spoon", ("spoon",)),
    Concept("bowl", ("bowl",)),
    Concept("fruit", ("fruit", "banana", "apple", "oranges", "lemon", "grapes", "vegetable", "broccoli", "carrot",
                      "tomato", "potato")),
    Concept("sandwich", ("sandwich", "burger", "hamburger")),
    Concept("hot_dog", ("hot dog", "hotdog")),
    Concept("pizza", ("pizza",)),
    Concept("donut", ("donut", "doughnut")),
    Concept("cake", ("cake", "cupcake")),
    Concept("chair", ("chair", "stool", "armchair")),
    Concept("couch", ("couch", "sofa")),
    Concept("potted_plant", ("potted plant", "houseplant", "flower pot", "flowerpot")),
    Concept("bed", ("bed",)),
    Concept("table", ("table", "desk")),
    Concept("toilet", ("toilet", "urinal")),
    Concept("tv", ("tv", "television")),
    Concept("laptop", ("laptop", "computer")),
    Concept("remote", ("remote control",)),
    Concept("keyboard", ("keyboard",)),
    Concept("phone", ("phone", "cellphone", "smartphone", "telephone")),
    Concept("microwave", ("microwave",)),
    Concept("oven", ("oven", "stove")),
    Concept("sink", ("sink",)),
    Concept("refrigerator", ("refrigerator", "fridge")),
    Concept("book", ("book",)),
    Concept("clock", ("clock",)),
    Concept("vase", ("vase",)),
    Concept("scissors", ("scissors",)),
    Concept("teddy_bear", ("teddy bear", "stuffed animal", "teddy")),
    Concept("toothbrush", ("toothbrush",)),
    # Scenes, not objects: CHAIR does not count them (SCENE_NAMES).
    Concept("snow", ("snow", "snowy", "snowfield", "ski slope")),
    Concept("water", ("water", "river", "lake", "ocean", "sea", "pond", "pool", "waves", "surf", "stream")),
)


def _group(name: str, words: tuple[str, ...], not_phrases: tuple[str, ...] = ()) -> Concept:
    """A group names itself with its own words and every word of its categories (one list for rules and labels).

    Its `not_phrases` are its own: a category's ("sheep dog" is no sheep) may still name the group.
    """
    member_words = tuple(w for c in CATEGORIES if c.group == name for w in c.words if w not in words)
    return Concept(name, words + member_words, not_phrases)


GROUPS: tuple[Concept, ...] = (
    _group("person", (
        "person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid",
        "lady", "ladies", "guy", "gentleman", "gentlemen", "adult", "teenager", "teen", "toddler", "baby", "babies",
        "pedestrian", "worker", "someone", "somebody", "individual", "crowd", "cyclist", "biker", "rider",
        "runner", "jogger", "hiker", "officer", "policeman", "policemen", "soldier", "player", "skateboarder", "couple",
        "surfer", "skier", "snowboarder", "skater", "climber", "swimmer", "dancer", "bicyclist", "motorcyclist",
        "athlete", "spectator", "audience", "tourist", "shopper", "vendor", "driver", "student", "chef",
        "umpire", "catcher", "family", "bride", "groom", "mother", "father", "visitor", "intruder",
    )),
    _group("vehicle", (
        "vehicle", "tractor", "trailer", "ambulance", "forklift", "camper", "bulldozer",
    )),
    _group("animal", (
        "animal", "pig", "goat", "deer", "fox", "foxes", "rabbit", "squirrel", "raccoon", "coyote", "wolf",
        "wolves", "mouse", "mice", "rat", "hedgehog", "badger", "skunk", "possum", "opossum", "boar",
        "monkey", "lion", "tiger",
    ), not_phrases=("teddy bear", "hot dog", "stuffed animal")),
    # "smoking" is left out: a man smoking a cigarette is not a fire.
    Concept("fire", ("fire", "smoke", "flame", "burning", "blaze", "smoky", "embers"),
            not_phrases=("fire hydrant", "fire truck", "fire engine", "fire station", "fire escape",
                         "fire department", "fire pit", "fireplace", "firework", "fire extinguisher")),
)
GROUP_NAMES: tuple[str, ...] = tuple(c.name for c in GROUPS)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
_CATEGORY_SET = frozenset(CATEGORY_NAMES)
SCENE_NAMES: tuple[str, ...] = ("snow", "water")
# Every concept the head may predict: the groups first (what payloads and most rules read), then the categories.
CONCEPTS: tuple[Concept, ...] = GROUPS + CATEGORIES
CONCEPT_NAMES: tuple[str, ...] = tuple(c.name for c in CONCEPTS)
BY_NAME: dict[str, Concept] = {c.name: c for c in CONCEPTS}

# The concepts as plain word lists, for rules that build their own groups from them (`@vehicle`, `@truck`).
BUILTIN_GROUPS: dict[str, list[str]] = {c.name: list(c.words) for c in CONCEPTS}


# A payload carries every group and only the categories the head gives a real chance: a frame shows
# a handful of the ~70 categories, and the rest would be a long list of zeros in every message.
REPORT_CATEGORY_ABOVE = 0.1


def reported(concepts: dict[str, float], above: float = REPORT_CATEGORY_ABOVE) -> dict[str, float]:
    """The concepts a payload or a log line shows: groups always, categories at or above `above`."""
    return {c: p for c, p in concepts.items() if c not in _CATEGORY_SET or p >= above}


def members_of(group: str) -> tuple[str, ...]:
    """The categories of a group (`vehicle` -> car, bus, truck, motorcycle, bicycle)."""
    return tuple(c.name for c in CATEGORIES if c.group == group)


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
    """Vocabulary indices of the words that name `concept` or go with it (what decoding bans when the head rules it out)."""
    return frozenset(i for i, w in enumerate(vocab_words) if concept.ban_regex.fullmatch(w))

"""Concept truth: does a caption name what the image shows, and only that?

Two measures. Concept truth, for each group (person, vehicle, animal, fire),
over images whose label is known:
- recall: share of images where the concept is present and the caption names it;
- false mention: share of images where it is absent and the caption names it anyway.

Labels come from people: hand labels where a corpus has them (clip frames),
otherwise the image's reference captions: with five references (Flickr8k) the
concept is present when at least two name it and absent when none does (one
of five is too unsure to count); with two written to name everything in view
(the COCO subset) present when either names it. "Names" is decided by
`streamcap.concepts`, the same test a rule `any: ["@person"]` makes.

Object hallucination (CHAIR, Rohrbach et al. 2018), per set: the share of
captions that name an object category (a person, a car, a suitcase...) that
none of the image's references names (CHAIRs), and the share of named objects
that are hallucinated (CHAIRi). A human caption scored the same way against
the other references is the reference point.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamcap.concepts import BY_NAME, CATEGORIES, CONCEPTS, GROUP_NAMES, SCENE_NAMES, label_from_captions, members_of, named_concepts
from streamcap.train.data import CaptionCorpus

LabelSet = dict[str, int | None]


def reference_labels(references: Sequence[str]) -> LabelSet:
    return label_from_captions(references, min_present=2 if len(references) >= 4 else 1)


def image_labels(corpus: CaptionCorpus, image_id: str) -> LabelSet:
    """Hand labels where there are any (concepts they do not cover: from the references), else from the references.

    A group's label bounds its categories': no vehicle means no car, an unsure
    vehicle an unsure car, and a vehicle that no reference names more closely
    ("a small vehicle") leaves which one it is unknown rather than "not a car".
    """
    labels = reference_labels(corpus.captions[image_id])
    labels.update(corpus.labels.get(image_id, {}))
    for group in GROUP_NAMES:
        members = members_of(group)
        if not members:
            continue
        value = labels.get(group)
        if value == 1 and any(labels.get(m) == 1 for m in members):
            continue
        for member in members:
            labels[member] = 0 if value == 0 else None
    return labels


@dataclass(frozen=True)
class ConceptTruth:
    concept: str
    present: int  # images where the concept is present
    named_when_present: int
    absent: int
    named_when_absent: int

    @property
    def recall(self) -> float | None:
        return self.named_when_present / self.present if self.present else None

    @property
    def false_mention(self) -> float | None:
        return self.named_when_absent / self.absent if self.absent else None


def concept_truth(labels: Sequence[LabelSet], captions: Sequence[str], concepts: Sequence[str] = GROUP_NAMES) -> dict[str, ConceptTruth]:
    """Recall and false mention per concept; images whose label is unknown (None) are left out."""
    if len(labels) != len(captions):
        raise ValueError(f"{len(labels)} label sets for {len(captions)} captions")
    named = [named_concepts(c, CONCEPTS) for c in captions]
    truth = {}
    for concept in concepts:
        present = named_present = absent = named_absent = 0
        for label, names in zip(labels, named):
            value = label.get(concept)
            if value == 1:
                present += 1
                named_present += concept in names
            elif value == 0:
                absent += 1
                named_absent += concept in names
        truth[concept] = ConceptTruth(concept, present, named_present, absent, named_absent)
    return truth


def format_rate(value: float | None, count: int) -> str:
    return "-" if value is None else f"{value:.2f} ({count})"


# CHAIR's objects (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"): the object
# categories, and a person, which COCO counts as one of its 80.
OBJECT_NAMES: tuple[str, ...] = ("person",) + tuple(c.name for c in CATEGORIES if c.name not in SCENE_NAMES)


@dataclass(frozen=True)
class Hallucination:
    """CHAIR over a set of captions: objects a caption names that none of its references names."""

    captions: int
    with_hallucination: int  # captions naming at least one object no reference names
    objects_named: int  # (caption, object) pairs
    objects_hallucinated: int
    by_object: dict[str, int]  # object -> captions that hallucinated it

    @property
    def chair_s(self) -> float | None:
        return self.with_hallucination / self.captions if self.captions else None

    @property
    def chair_i(self) -> float | None:
        return self.objects_hallucinated / self.objects_named if self.objects_named else None

    def worst(self, n: int = 6) -> list[tuple[str, int]]:
        return sorted(self.by_object.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def hallucination(captions: Sequence[str], references: Sequence[Sequence[str]]) -> Hallucination:
    """CHAIRs and CHAIRi of `captions[k]` against `references[k]` (the ground truth is what any reference names)."""
    if len(captions) != len(references):
        raise ValueError(f"{len(references)} reference sets for {len(captions)} captions")
    objects = tuple(BY_NAME[name] for name in OBJECT_NAMES)
    with_hallucination = named_total = hallucinated_total = 0
    by_object: dict[str, int] = {}
    for caption, refs in zip(captions, references):
        truth = set().union(*(named_concepts(r, objects) for r in refs)) if refs else set()
        named = named_concepts(caption, objects)
        false = named - truth
        named_total += len(named)
        hallucinated_total += len(false)
        with_hallucination += bool(false)
        for name in false:
            by_object[name] = by_object.get(name, 0) + 1
    return Hallucination(len(captions), with_hallucination, named_total, hallucinated_total, by_object)


def human_hallucination(references: Sequence[Sequence[str]]) -> Hallucination:
    """The reference point: every reference scored against the image's others (leave one out), pooled.

    With two references (the COCO subset, the clips) the short caption names
    less than the full one, so both directions count, not only the first.
    """
    usable = [refs for refs in references if len(refs) >= 2]
    captions = [refs[k] for refs in usable for k in range(len(refs))]
    others = [[r for j, r in enumerate(refs) if j != k] for refs in usable for k in range(len(refs))]
    return hallucination(captions, others)

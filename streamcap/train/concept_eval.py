"""Concept truth: does a caption name what the image shows, and only that?

For each concept (person, vehicle, animal, fire), over images whose label is
known:
- recall: share of images where the concept is present and the caption names it;
- false mention: share of images where it is absent and the caption names it anyway.

Labels come from people: hand labels where a corpus has them (clip frames),
otherwise the image's reference captions: with five references (Flickr8k) the
concept is present when at least two name it and absent when none does (one
of five is too unsure to count); with two written to name everything in view
(the COCO subset) present when either names it. "Names" is decided by
`streamcap.concepts`, the same test a rule `any: ["@person"]` makes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamcap.concepts import CONCEPT_NAMES, CONCEPTS, label_from_captions, named_concepts
from streamcap.train.data import CaptionCorpus

LabelSet = dict[str, int | None]


def reference_labels(references: Sequence[str]) -> LabelSet:
    return label_from_captions(references, min_present=2 if len(references) >= 4 else 1)


def image_labels(corpus: CaptionCorpus, image_id: str) -> LabelSet:
    """Hand labels where there are any (concepts they do not cover: from the references), else from the references."""
    labels = reference_labels(corpus.captions[image_id])
    labels.update(corpus.labels.get(image_id, {}))
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


def concept_truth(labels: Sequence[LabelSet], captions: Sequence[str], concepts: Sequence[str] = CONCEPT_NAMES) -> dict[str, ConceptTruth]:
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

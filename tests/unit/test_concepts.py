"""Concepts: one word list for rules, labels, decoding bans and the truth benchmark."""
from __future__ import annotations

import pytest

from streamcap.concepts import BY_NAME, banned_words, label_from_captions, named_concepts
from streamcap.rules.matchers import CaptionMatcher
from streamcap.rules.schema import CaptionTrigger
from streamcap.train.concept_eval import concept_truth, image_labels, reference_labels
from streamcap.train.data import CaptionCorpus


@pytest.mark.parametrize("caption,expected", [
    ("a man walks past two parked cars", {"person", "vehicle"}),
    ("buses lined up at a depot", {"vehicle"}),
    ("a red fire hydrant on the sidewalk", set()),
    ("a fire truck next to a burning house", {"vehicle", "fire"}),
    ("a teddy bear on a bed", set()),
    ("a brown bear in the woods", {"animal"}),
    ("a woman eating a hot dog", {"person"}),
    ("an empty parking lot at night", set()),
    ("A Skier going down a slope", {"person"}),
])
def test_named_concepts(caption, expected):
    assert named_concepts(caption) == expected


@pytest.mark.parametrize("caption,fires", [
    ("a red fire hydrant on the sidewalk", False),
    ("smoke rises from a building", True),
    ("a teddy bear on a bed", False),
])
def test_rules_see_the_same_concepts_as_labels(caption, fires):
    group = "@fire" if "fire" in caption or "smoke" in caption else "@animal"
    matcher = CaptionMatcher(CaptionTrigger(trigger="caption", any=[group]))
    assert matcher.matches(caption) is fires
    assert (group[1:] in named_concepts(caption)) is fires


def test_a_rule_that_redefines_a_group_uses_its_own_words():
    groups = {"fire": ["hydrant"]}
    assert CaptionMatcher(CaptionTrigger(trigger="caption", any=["@fire"]), groups).matches("a red fire hydrant")


def test_labels_from_five_references_need_two_to_be_present():
    refs = ["a man and a dog", "a dog runs", "a dog on grass", "a brown dog", "a man throws a stick"]
    labels = reference_labels(refs)
    assert labels["animal"] == 1 and labels["person"] == 1 and labels["vehicle"] == 0
    one_of_five = reference_labels(["a man", "a dog", "a dog", "a dog", "a dog"])
    assert one_of_five["person"] is None  # one mention in five is unsure, not a label


def test_labels_from_two_references_need_one():
    assert reference_labels(["an empty street", "a bus on a street"])["vehicle"] == 1
    assert label_from_captions(["an empty street", "a quiet road"], min_present=1)["person"] == 0


def test_hand_labels_win_over_references():
    corpus = CaptionCorpus({}, {"f.jpg": ["an empty yard at night", "a dark yard"]}, {}, {"f.jpg": {"person": 1, "vehicle": 0, "animal": None}})
    labels = image_labels(corpus, "f.jpg")
    assert labels["person"] == 1 and labels["vehicle"] == 0 and labels["animal"] is None and labels["fire"] == 0


def test_concept_truth_counts_recall_and_false_mentions():
    # given four images, hand-made labels and captions
    labels = [
        {"person": 1, "vehicle": 1},   # both present
        {"person": 0, "vehicle": 1},   # a road with cars, nobody on foot
        {"person": 0, "vehicle": 0},   # an empty room
        {"person": None, "vehicle": 0},  # cannot tell about people
    ]
    captions = ["a man next to a car", "people walking on a bridge", "an empty room", "a woman in a dark room"]
    # when
    truth = concept_truth(labels, captions)
    # then person: present 1 (named 1); absent 2 (named 1: "people"); the unsure image is left out
    assert (truth["person"].present, truth["person"].named_when_present) == (1, 1)
    assert (truth["person"].absent, truth["person"].named_when_absent) == (2, 1)
    assert truth["person"].false_mention == 0.5
    # vehicle: present 2, named once ("car"); absent 2, never named
    assert truth["vehicle"].recall == 0.5 and truth["vehicle"].false_mention == 0.0
    assert truth["animal"].recall is None and truth["animal"].present == 0


def test_banned_words_are_the_vocabulary_rows_of_the_group():
    vocab = ["<pad>", "a", "man", "men", "woman", "manhole", "cars", "car", "dog"]
    assert banned_words(BY_NAME["person"], vocab) == {2, 3, 4}
    assert banned_words(BY_NAME["vehicle"], vocab) == {6, 7}

"""Concepts: one word list for rules, labels, decoding bans and the truth benchmark."""
from __future__ import annotations

import pytest

from streamcap.concepts import BY_NAME, banned_words, label_from_captions, named_concepts
from streamcap.rules.matchers import CaptionMatcher
from streamcap.rules.schema import CaptionTrigger
from streamcap.train.concept_eval import concept_truth, image_labels, reference_labels
from streamcap.train.data import CaptionCorpus


@pytest.mark.parametrize("caption,expected", [
    ("a man walks past two parked cars", {"person", "vehicle", "car"}),
    ("buses lined up at a depot", {"vehicle", "bus"}),
    ("a red fire hydrant on the sidewalk", {"fire_hydrant"}),
    ("a fire truck next to a burning house", {"vehicle", "truck", "fire"}),
    ("a teddy bear on a bed", {"teddy_bear", "bed"}),
    ("a brown bear in the woods", {"animal", "bear"}),
    ("a woman eating a hot dog", {"person", "hot_dog"}),
    ("an empty parking lot at night", set()),
    ("A Skier going down a slope", {"person"}),
    ("a passenger train on a runway", {"train"}),  # "runway" is banned with aeroplanes but does not name one
    ("cars driving past the train tracks", {"vehicle", "car"}),
    ("a sheep dog herds the flock", {"animal", "dog"}),
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


@pytest.mark.parametrize("caption,category", [
    ("a passenger train pulls into the station", "train"),
    ("two lorries on a motorway", "truck"),
    ("buses at a depot", "bus"),
    ("a man pushing his bike", "bicycle"),
    ("a few pickups parked by a shed", "truck"),
    ("a black suitcase on a platform", "suitcase"),
    ("three doughnuts in a box", "donut"),
    ("a jet parked at the gate", "airplane"),
    ("a motorbike leans on a wall", "motorcycle"),
    ("knives and forks on a table", "knife"),
])
def test_categories_are_labelled_from_caption_words(caption, category):
    assert category in named_concepts(caption)
    assert label_from_captions([caption, "a view"], min_present=1)[category] == 1


def test_a_group_is_named_by_its_categories_words_and_bans_them():
    from streamcap.concepts import members_of

    assert set(members_of("vehicle")) == {"car", "bus", "truck", "motorcycle", "bicycle"}
    assert "train" not in members_of("vehicle")  # a rail vehicle is not what a vehicle rule at a gate means
    vocab = ["<pad>", "a", "lorry", "car", "runway", "plane", "train", "road"]
    assert banned_words(BY_NAME["vehicle"], vocab) == {2, 3}
    assert banned_words(BY_NAME["airplane"], vocab) == {4, 5}  # the runway goes with the aeroplane
    assert banned_words(BY_NAME["train"], vocab) == {6}


def test_category_labels_are_bounded_by_their_group():
    hand = {"f.jpg": {"person": 0, "vehicle": None, "animal": 0}, "g.jpg": {"person": 0, "vehicle": 1, "animal": 0}}
    captions = {"f.jpg": ["a car park", "cars in a car park"], "g.jpg": ["a small vehicle on a road", "a road"]}
    corpus = CaptionCorpus({}, captions, {}, hand)
    unsure, unnamed = image_labels(corpus, "f.jpg"), image_labels(corpus, "g.jpg")
    assert unsure["car"] is None  # the annotator could not tell whether a vehicle is there
    assert unnamed["vehicle"] == 1 and unnamed["car"] is None and unnamed["truck"] is None  # some vehicle, which one unknown
    assert reference_labels(["an empty road", "a quiet street"])["car"] == 0


def test_hallucination_counts_objects_no_reference_names():
    from streamcap.train.concept_eval import hallucination, human_hallucination

    captions = ["a train on a runway", "a car on a road", "two cars and a dog", "an empty road"]
    references = [["cars on a motorway"], ["a car on a road", "a red car"], ["two cars parked"], ["a road"]]
    result = hallucination(captions, references)
    assert result.captions == 4 and result.with_hallucination == 2 and result.chair_s == 0.5
    assert result.objects_named == 4 and result.objects_hallucinated == 2  # train; dog (the cars were there)
    assert result.by_object == {"train": 1, "dog": 1}
    human = human_hallucination([["a man and a dog", "a man"], ["a bus", "a red bus"]])
    assert human.captions == 4 and human.by_object == {"dog": 1}

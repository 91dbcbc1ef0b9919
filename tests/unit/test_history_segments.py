"""Segmenting: captions of one camera that say the same thing are one segment; a new object, a concept or a new wording ends it."""
from __future__ import annotations

import pytest

from streamcap.history.segments import MAX_VARIANTS, Segmenter

STREET = "a street at night with parked motorcycles"


def feed(segmenter: Segmenter, captions, camera="gate", start=1000.0):
    placed = []
    for i, item in enumerate(captions):
        text, concepts = item if isinstance(item, tuple) else (item, {})
        placed.append(segmenter.add(camera, start + i, text, concepts, frame_id=i, model="m"))
    return placed


@pytest.mark.parametrize("first, then, same", [
    (STREET, STREET, True),
    (STREET, "a dark street at night with motorcycles parked", True),  # one new word in five
    (STREET, "a street at night with parked motorcycle", True),  # a plural is the same object
    (STREET, "a man walking down a street at night with parked motorcycles", False),  # a new object
    (STREET, "a dog sleeping on a street at night with parked motorcycles", False),  # a new animal
    ("a white van parked on the street", "a white truck parked on the street", False),  # a new vehicle word
    ("a white van parked on the street", "a blue boat floating in the harbour", False),  # different words
    ("a kitchen with a table", "the kitchen with the table", True),  # only function words differ
])
def test_a_caption_joins_the_segment_when_it_says_the_same_thing(first, then, same):
    # given a segment begun by `first`
    segmenter = Segmenter()
    feed(segmenter, [first])
    # when the next caption of the camera comes
    placed = segmenter.add("gate", 1001.0, then, {})
    # then
    assert placed.began is (not same), f"{first!r} then {then!r}"


def test_same_caption_merges_into_one_segment_with_start_end_count_and_best_caption():
    # given a still scene captioned 10 times, in two wordings, the second said more often
    captions = [STREET] * 3 + ["a dark street at night with motorcycles parked"] * 7
    # when
    placed = feed(Segmenter(), captions, start=500.0)
    # then
    segment = placed[-1].segment
    assert [p.began for p in placed] == [True] + [False] * 9
    assert (segment.start, segment.end, segment.count) == (500.0, 509.0, 10)
    assert segment.caption == "a dark street at night with motorcycles parked", "the caption said most often"
    assert segment.variants == [STREET, "a dark street at night with motorcycles parked"]
    assert {"street", "night", "motorcycles", "dark"} <= set(segment.words)


def test_a_new_object_ends_the_segment_and_the_next_caption_starts_one():
    # given
    segmenter = Segmenter()
    first = feed(segmenter, [STREET] * 5)
    # when a person appears
    placed = segmenter.add("gate", 2000.0, "a man riding a motorcycle down a street at night", {})
    # then the street segment ended with its five captions and the new one began
    assert placed.began and placed.ended is first[0].segment
    assert placed.ended.count == 5 and placed.segment.count == 1


@pytest.mark.parametrize("before, after, same", [
    ({"person": 0.9}, {"person": 0.85}, True),
    ({"person": 0.9}, {"person": 0.45}, True),  # within the hysteresis below 0.5
    ({"person": 0.9}, {"person": 0.2}, False),  # the person left
    ({"vehicle": 0.1}, {"vehicle": 0.55}, True),  # within the hysteresis above 0.5
    ({"vehicle": 0.1}, {"vehicle": 0.8}, False),  # a vehicle arrived, even if the words did not say so
])
def test_the_same_concepts_above_threshold_or_a_new_segment(before, after, same):
    segmenter = Segmenter(threshold=0.5, hysteresis=0.1)
    segmenter.add("gate", 0.0, STREET, before)
    assert segmenter.add("gate", 1.0, STREET, after).began is (not same)


def test_cameras_are_segmented_apart():
    segmenter = Segmenter()
    a = segmenter.add("gate", 0.0, STREET, {})
    b = segmenter.add("yard", 0.5, STREET, {})
    c = segmenter.add("gate", 1.0, STREET, {})
    assert a.began and b.began and not c.began
    assert c.segment is a.segment and b.segment is not a.segment


def test_a_segment_lasting_longer_than_the_maximum_is_closed():
    segmenter = Segmenter(max_duration_s=60)
    placed = [segmenter.add("gate", float(t), STREET, {}) for t in range(0, 130, 10)]
    assert [p.began for p in placed].count(True) == 3, "0-59 s, 60-119 s, 120 s"


def test_the_highest_probability_of_each_concept_is_kept():
    segmenter = Segmenter()
    for p in (0.6, 0.9, 0.7):
        placed = segmenter.add("gate", p, "a man standing at a gate", {"person": p, "vehicle": 0.1})
    assert placed.segment.concepts_max == {"person": 0.9, "vehicle": 0.1}


def test_variants_are_bounded_and_later_ones_are_not_indexed():
    # given a segment that hears more distinct wordings than it keeps
    segmenter = Segmenter(max_new_words=1.0)
    placed = [segmenter.add("gate", float(i), f"a street at night number{i}", {}) for i in range(MAX_VARIANTS + 5)]
    # then each caption is in the segment, the first MAX_VARIANTS are variants, the rest carry their own text
    assert not any(p.began for p in placed[1:])
    assert [p.variant for p in placed[:MAX_VARIANTS]] == list(range(MAX_VARIANTS))
    assert all(p.variant is None for p in placed[MAX_VARIANTS:])
    assert placed[-1].segment.count == MAX_VARIANTS + 5


def test_forget_starts_every_camera_afresh():
    segmenter = Segmenter()
    segmenter.add("gate", 0.0, STREET, {})
    segmenter.forget()
    assert segmenter.add("gate", 1.0, STREET, {}).began

"""Segmenting: captions of one camera that say the same thing are one segment; a new object, a concept or new
wording seen twice in a row ends it; a change seen once is a passing moment of the segment."""
from __future__ import annotations

import pytest

from streamcap.history.segments import MAX_VARIANTS, Segmenter

STREET = "a street at night with parked motorcycles"


def segments_of(captions, segmenter: Segmenter | None = None, camera="gate", start=1000.0):
    """Feed (text, concepts) or text at one a second, then flush; the segments in the order they began."""
    segmenter = segmenter or Segmenter()
    placed = []
    for i, item in enumerate(captions):
        text, concepts = item if isinstance(item, tuple) else (item, {})
        placed += segmenter.add(camera, start + i, text, concepts, frame_id=i, model="m")
    placed += segmenter.flush()
    assert len(placed) == len(captions), "every caption is placed exactly once"
    return [p.segment for p in placed if p.began]


@pytest.mark.parametrize("first, then, same", [
    (STREET, STREET, True),
    (STREET, "a dark street at night with motorcycles parked", True),  # one new word in five
    (STREET, "a street at night with parked motorcycle", True),
    (STREET, "a man walking down a street at night with parked motorcycles", False),  # a new object: a person
    (STREET, "a dog sleeping on a street at night with parked motorcycles", False),  # a new object: an animal
    ("a white van parked on the street", "a white truck parked on the street", True),  # the same object group, one word in four
    ("a white van parked on the street", "a blue boat floating in the harbour", False),  # different words
    ("a group of children playing in the snow", "a group of people playing in the snow", True),  # people are people
    ("a kitchen with a table", "the kitchen with the table", True),  # only function words differ
])
def test_a_caption_joins_the_segment_when_it_says_the_same_thing(first, then, same):
    # given a segment begun by `first`, when the camera then says `then` (twice: a change must be seen twice)
    segments = segments_of([first, first, then, then])
    # then
    assert len(segments) == (1 if same else 2), f"{first!r} then {then!r}"


def test_same_caption_merges_into_one_segment_with_start_end_count_and_best_caption():
    # given a still scene captioned 10 times, in two wordings, the second said more often
    captions = [STREET] * 3 + ["a dark street at night with motorcycles parked"] * 7
    # when
    (segment,) = segments_of(captions, start=500.0)
    # then
    assert (segment.start, segment.end, segment.count) == (500.0, 509.0, 10)
    assert segment.caption == "a dark street at night with motorcycles parked", "the caption said most often"
    assert segment.variants == [STREET, "a dark street at night with motorcycles parked"]
    assert {"street", "night", "motorcycles", "dark"} <= set(segment.words)


def test_a_new_object_seen_again_ends_the_segment_and_the_new_one_begins_where_it_first_appeared():
    # given a still street, when a man comes and stays
    segments = segments_of([STREET] * 5 + ["a man riding a motorcycle down a street at night"] * 3, start=0.0)
    # then the street segment has its five captions and the man's begins at his first caption
    street, man = segments
    assert (street.count, street.start, street.end) == (5, 0.0, 4.0)
    assert (man.count, man.start, man.frame_id) == (3, 5.0, 5)
    assert man.caption == "a man riding a motorcycle down a street at night"


def test_a_change_seen_once_is_a_passing_moment_of_the_segment_and_can_be_searched_for():
    # given a still street where, for one caption, the model saw a man
    (segment,) = segments_of([STREET] * 5 + ["a man walking past parked motorcycles at night"] + [STREET] * 5)
    # then it is one segment of 11 captions; the man's words are indexed, but do not widen what it accepts
    assert segment.count == 11 and segment.variants == [STREET]
    assert "man" in segment.indexed_words.split() and "man" not in segment.words
    assert segments_of([STREET, STREET, "a man at night", STREET, "a man at night", "a man at night"])[1].count == 2


@pytest.mark.parametrize("before, after, same", [
    ({"person": 0.9}, {"person": 0.85}, True),
    ({"person": 0.9}, {"person": 0.45}, True),  # within the hysteresis below 0.5
    ({"person": 0.9}, {"person": 0.2}, False),  # the person left
    ({"vehicle": 0.1}, {"vehicle": 0.55}, True),  # within the hysteresis above 0.5
    ({"vehicle": 0.1}, {"vehicle": 0.8}, False),  # a vehicle arrived, even if the words did not say so
])
def test_the_same_concepts_above_threshold_or_a_new_segment(before, after, same):
    segments = segments_of([(STREET, before)] * 2 + [(STREET, after)] * 2, Segmenter(threshold=0.5, hysteresis=0.1))
    assert len(segments) == (1 if same else 2)


def test_cameras_are_segmented_apart():
    segmenter = Segmenter()
    (a,) = segmenter.add("gate", 0.0, STREET, {})
    (b,) = segmenter.add("yard", 0.5, STREET, {})
    (c,) = segmenter.add("gate", 1.0, STREET, {})
    assert a.began and b.began and not c.began
    assert c.segment is a.segment and b.segment is not a.segment


def test_a_segment_lasting_longer_than_the_maximum_is_closed_at_once():
    segmenter = Segmenter(max_duration_s=60)
    placed = [p for t in range(0, 130, 10) for p in segmenter.add("gate", float(t), STREET, {})]
    assert [p.caption.at for p in placed if p.began] == [0.0, 60.0, 120.0]


def test_a_held_caption_is_placed_when_the_camera_goes_quiet():
    segmenter = Segmenter()
    segmenter.add("gate", 0.0, STREET, {})
    assert segmenter.add("gate", 1.0, "a dog on a street", {}) == [], "held: a change seen once"
    assert segmenter.flush(before=1.0) == [], "not yet stale"
    (placed,) = segmenter.flush(before=31.0)
    assert placed.began and placed.segment.caption == "a dog on a street"


def test_the_highest_probability_of_each_concept_is_kept():
    (segment,) = segments_of([("a man standing at a gate", {"person": p, "vehicle": 0.1}) for p in (0.6, 0.9, 0.7)])
    assert segment.concepts_max == {"person": 0.9, "vehicle": 0.1}


def test_variants_are_bounded_and_later_ones_are_stored_with_their_row():
    # given a segment that hears more distinct wordings than it keeps
    segmenter = Segmenter(max_new_words=1.0)
    placed = [p for i in range(MAX_VARIANTS + 5) for p in segmenter.add("gate", float(i), f"a street at night number{i}", {})]
    # then each caption is in the segment, the first MAX_VARIANTS are variants, the rest carry their own text
    assert not any(p.began for p in placed[1:])
    assert [p.variant for p in placed[:MAX_VARIANTS]] == list(range(MAX_VARIANTS))
    assert all(p.variant is None for p in placed[MAX_VARIANTS:])
    assert placed[-1].segment.count == MAX_VARIANTS + 5


def test_forget_starts_every_camera_afresh_and_says_how_many_captions_it_held():
    segmenter = Segmenter()
    segmenter.add("gate", 0.0, STREET, {})
    segmenter.add("gate", 1.0, "a dog on a street", {})
    assert segmenter.forget() == 1
    (placed,) = segmenter.add("gate", 2.0, STREET, {})
    assert placed.began

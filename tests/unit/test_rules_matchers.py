"""Caption matching: whole words, synonym groups, any/all/none, phrases, regexes."""
from __future__ import annotations

import pytest

from streamcap.rules.matchers import BUILTIN_GROUPS, CaptionMatcher, expand
from streamcap.rules.schema import CaptionTrigger


def matcher(groups=None, **trigger) -> CaptionMatcher:
    return CaptionMatcher(CaptionTrigger(trigger="caption", **trigger), groups)


@pytest.mark.parametrize(
    "trigger,caption,expected",
    [
        # whole words only
        ({"any": ["cat"]}, "a cat sits on a wall", True),
        ({"any": ["cat"]}, "a boy tries to catch a ball", False),
        ({"any": ["cat"]}, "a dog and a bobcat", False),
        ({"any": ["man"]}, "a woman walks her dog", False),
        ({"any": ["man"]}, "A MAN walks his dog", True),
        ({"any": ["man"]}, "a man's bag on the ground", True),
        # simple plurals come for free, irregular ones through groups
        ({"any": ["dog"]}, "two dogs run on the grass", True),
        ({"any": ["bus"]}, "buses parked in a row", True),
        ({"any": ["@person"]}, "two women stand by the gate", True),
        ({"any": ["@person"]}, "a woman walks her dog", True),
        ({"any": ["@person"]}, "children play in the snow", True),
        ({"any": ["@person"]}, "a dog runs through the grass", False),
        ({"any": ["@vehicle"]}, "a white van parked on the street", True),
        ({"any": ["@vehicle"]}, "a man rides a bicycle", True),
        ({"any": ["@animal"]}, "a fox crosses the yard", True),
        ({"any": ["@fire"]}, "smoke rises from a building", True),
        ({"any": ["@fire"]}, "a man smoking a cigarette", False),
        ({"any": ["@fire"]}, "a firefighter in a helmet", False),
        # multi-word entries tolerate spacing
        ({"any": ["fire truck"]}, "a red fire   truck on the road", True),
        # all / none
        ({"all": ["@person", "fence"]}, "a man climbs over a fence", True),
        ({"all": ["@person", "fence"]}, "a man stands near a gate", False),
        ({"any": ["@person"], "none": ["walking", "running"]}, "a man walking down the street", False),
        ({"any": ["@person"], "none": ["walking", "running"]}, "a man standing by a car", True),
        ({"any": ["@fire"], "none": ["fire truck"]}, "a fire truck parked outside", False),
        # phrases are exact word sequences, no plural
        ({"phrase": "climbs over"}, "a man climbs over the fence", True),
        ({"phrase": "climbs over"}, "a man climbs onto the fence", False),
        ({"phrase": ["over the fence", "on the roof"]}, "a cat on the roof", True),
        # regexes are case-insensitive searches
        ({"regex": r"\bclimb(s|ing)?\b.*\bfence"}, "A man CLIMBING a tall fence", True),
        ({"regex": r"^a dog"}, "two dogs", False),
        # every part given must hold
        ({"any": ["@person"], "regex": "gate"}, "a man at the door", False),
    ],
)
def test_match_table(trigger, caption, expected):
    assert matcher(**trigger).matches(caption) is expected, f"{trigger} on {caption!r}"


def test_reasons_name_the_word_and_its_group():
    # given
    m = matcher(any=["@person", "dog"], all=["fence"])
    # when
    result = m.check("a woman climbs a fence")
    # then
    assert result.matched
    assert result.reasons == ["any: 'woman' (@person)", "all: 'fence'"]


@pytest.mark.parametrize(
    "trigger,caption,reason",
    [
        ({"any": ["@person", "dog"]}, "a cat", "any: none of [@person, dog] in the caption"),
        ({"all": ["man", "fence"]}, "a man on a wall", "all: 'fence' is not in the caption"),
        ({"any": ["man"], "none": ["@animal"]}, "a man and his dog", "none: 'dog' (@animal) is in the caption"),
    ],
)
def test_reasons_for_no_match(trigger, caption, reason):
    result = matcher(**trigger).check(caption)
    assert not result.matched and result.reasons == [reason]


def test_custom_groups_extend_and_nest():
    # given a custom group that includes a built-in one
    groups = {**BUILTIN_GROUPS, "intruder": ["@person", "burglar"], "barrier": ["fence", "gate", "wall"]}
    m = matcher(groups, all=["@intruder", "@barrier"])
    # then
    assert m.matches("a burglar near the wall")
    assert m.matches("two men by the gates")
    assert not m.matches("a burglar in the kitchen")


def test_unknown_group_is_an_error():
    with pytest.raises(ValueError, match="unknown synonym group @pets"):
        matcher(any=["@pets"])


def test_self_referencing_group_is_an_error():
    with pytest.raises(ValueError, match="refers to itself"):
        expand("@a", {"a": ["@b"], "b": ["@a"]})

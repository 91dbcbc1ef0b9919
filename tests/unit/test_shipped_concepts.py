"""The shipped model on real CCTV frames: it names the vehicles and people seen from above and invents none.

Frames and hand labels come from `clip_frames/` and `cctv_clips/` in the
shared data (see their READMEs). car-detection, motorway-elevated and
plaza-crowd-topdown are dev clips (never trained on); bottle-detection is a
training clip: a still table with bottles, where an earlier model saw "a
group of children playing". The model before this one called the motorway
"a passenger train on a road".
"""
from __future__ import annotations

import csv

import pytest

from streamcap.backends.select import load_captioner
from streamcap.concepts import named_concepts
from streamcap.model.images import read_image


def labelled_frames(shared_data, clip: str, concept: str, value: str, folder: str = "clip_frames") -> list:
    root = shared_data / folder
    with open(root / "labels.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["frame"].startswith(clip + "_") and r[concept] == value]
    return [(r["frame"], read_image(root / "Frames" / r["frame"])) for r in rows]


@pytest.fixture(scope="module")
def shipped():
    return load_captioner(backend="torch")


def test_shipped_model_names_a_vehicle_in_the_car_park(shipped, shared_data):
    # given the dev frames of the top-down car park that have a car in view (hand labels)
    frames = labelled_frames(shared_data, "car-detection", "vehicle", "1")
    assert len(frames) >= 5
    # when the shipped model describes them
    descriptions = shipped.describe([image for _, image in frames])
    # then at least one names it (the car seen whole, top-down cars are still hard: see the model card), and none names a person
    named = [d.text for d in descriptions if "vehicle" in named_concepts(d.text)]
    assert named, [d.text for d in descriptions]
    assert all("person" not in named_concepts(d.text) for d in descriptions), [d.text for d in descriptions]


def test_shipped_model_invents_no_person_at_the_still_table(shipped, shared_data):
    # given the frames of the bottle table where nobody is in view
    frames = labelled_frames(shared_data, "bottle-detection", "person", "0")
    assert len(frames) >= 10
    descriptions = shipped.describe([image for _, image in frames])
    # then no caption names a person, and the head is not sure of one either
    assert not [d.text for d in descriptions if "person" in named_concepts(d.text)], [d.text for d in descriptions]
    assert max(d.concepts["person"] for d in descriptions) < 0.5


def test_shipped_model_names_the_cars_on_the_elevated_motorway_and_no_train_or_plane(shipped, shared_data):
    # given the dev clip of a six-lane motorway seen from a high camera (every frame has vehicles)
    frames = labelled_frames(shared_data, "motorway-elevated", "vehicle", "1", folder="cctv_clips")
    assert len(frames) == 12
    descriptions = shipped.describe([image for _, image in frames])
    texts = [d.text for d in descriptions]
    # then it names a vehicle in every frame, never a train, an aeroplane or a runway, and nobody on foot
    assert all("vehicle" in named_concepts(t) for t in texts), texts
    assert not [t for t in texts if {"train", "airplane"} & named_concepts(t) or "runway" in t], texts
    assert not [t for t in texts if "person" in named_concepts(t)], texts
    assert min(d.concepts["vehicle"] for d in descriptions) >= 0.5  # a @vehicle concept rule would fire on each


def test_shipped_model_names_the_people_in_the_plaza_seen_from_straight_above(shipped, shared_data):
    # given the dev clip of a pale plaza seen from above, small people walking across it
    frames = labelled_frames(shared_data, "plaza-crowd-topdown", "person", "1", folder="cctv_clips")
    assert len(frames) == 12
    texts = [d.text for d in shipped.describe([image for _, image in frames])]
    # then every caption names them
    assert all("person" in named_concepts(t) for t in texts), texts

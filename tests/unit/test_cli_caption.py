"""`streamcap caption` on the shipped model, with real dev images."""
import json
import re

import pytest

from streamcap.__main__ import main
from streamcap.model.checkpoint import DEFAULT_MODEL


def _dev_images_where_every_reference_says(flickr8k, pattern, count):
    word = re.compile(pattern)
    chosen = [i for i in flickr8k.split("dev") if all(word.search(c.lower()) for c in flickr8k.captions[i])]
    return [flickr8k.image_paths[i] for i in chosen[:count]]


@pytest.mark.parametrize(
    "pattern",
    [r"\bdogs?\b", r"\b(man|men|woman|women|boy|boys|girl|girls|child|children|people|person|player|players)\b"],
    ids=["dog", "person"],
)
def test_shipped_model_names_what_is_plainly_in_real_photos(flickr8k, capsys, pattern):
    # given dev images (never trained on) whose five human captions all name the same thing
    images = _dev_images_where_every_reference_says(flickr8k, pattern, 8)
    # when captioned by the CLI with the shipped model
    status = main(["caption", "--json", *map(str, images)])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # then most captions name it too
    assert status == 0 and len(records) == len(images)
    hits = [r["caption"] for r in records if re.search(pattern, r["caption"])]
    assert len(hits) >= 6, f"captions: {[r['caption'] for r in records]}"
    # and each carries the concept probabilities, as every other output does
    concept = "animal" if "dog" in pattern else "person"
    assert all({"person", "vehicle", "animal", "fire"} <= set(r["concepts"]) for r in records), records[0]
    assert sum(r["concepts"][concept] >= 0.5 for r in records) >= 6, [r["concepts"] for r in records]


def test_a_corrupt_image_is_named_and_the_rest_still_get_captions(flickr8k, tmp_path, capsys):
    good = [flickr8k.image_paths[i] for i in flickr8k.split("dev")[:2]]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    missing = tmp_path / "missing.jpg"
    status = main(["caption", "--json", str(good[0]), str(corrupt), str(missing), str(good[1])])
    out = capsys.readouterr()
    records = [json.loads(line) for line in out.out.splitlines()]
    assert status == 1
    assert [r["file"] for r in records if "caption" in r and r["caption"]] == [str(good[0]), str(good[1])]
    assert f"{corrupt}: not a decodable image" in out.err
    assert f"{missing}: cannot read" in out.err


def test_caption_reads_sampled_frames_of_a_video(shared_data, capsys):
    clip = shared_data / "videos" / "pedestrians-campus.mp4"
    status = main(["caption", "--every", "20", str(clip)])
    lines = capsys.readouterr().out.splitlines()
    # 795 frames at 10 fps: samples at 0, 20, 40 and 60 s
    assert status == 0
    assert [line.split(":")[0] for line in lines] == [f"{clip} @{t:.1f}s" for t in (0, 20, 40, 60)]


def test_shipped_model_is_small_and_offline():
    assert DEFAULT_MODEL.is_file(), "the default model must ship inside the package"
    assert DEFAULT_MODEL.stat().st_size < 40 * 2**20

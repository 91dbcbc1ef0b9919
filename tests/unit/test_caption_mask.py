"""Caption masks: regions of a camera the model does not see (camera text read as traffic), the picture kept whole."""
from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from pydantic import ValidationError

from streamcap.app import build
from streamcap.backends.select import load_captioner
from streamcap.concepts import named_concepts
from streamcap.config.schema import StreamcapConfig
from streamcap.masks import CaptionMask

# The infrared yard's clock (top left) and camera name (bottom right), as fractions of the frame.
YARD_TEXT = [[0, 0, 0.4, 0.1], [0.6, 0.85, 0.4, 0.15]]


def test_a_mask_blacks_out_its_regions_on_a_copy():
    image = np.full((100, 200, 3), 200, np.uint8)
    masked = CaptionMask.from_config([[0, 0, 0.25, 0.1], [0.5, 0.5, 0.5, 0.5]]).apply(image)
    assert (masked[:10, :50] == 0).all() and (masked[50:, 100:] == 0).all()
    assert (masked[10:50, 50:100] == 200).all() and masked[10, 50].tolist() == [200, 200, 200]
    assert (image == 200).all(), "the frame itself is untouched: snapshots and the page keep it"


@pytest.mark.parametrize("region, says", [
    ([0.5, 0.5, 0.6, 0.1], "inside the frame"),
    ([0, 0, 0, 0.1], "width and height above 0"),
    ([0, 0, 0.4], "write [x, y, width, height]"),
])
def test_a_bad_region_is_refused_naming_the_camera_and_the_region(region, says):
    with pytest.raises(ValidationError) as caught:
        StreamcapConfig.model_validate({"cameras": {"yard": {"url": "yard.mp4", "mask": [[0, 0, 0.1, 0.1], region]}}})
    text = str(caught.value)
    assert "cameras.yard.mask" in text and "region 2" in text and says in text, text


def test_the_masked_camera_text_is_not_read_as_a_car_and_snapshots_keep_it(shared_data, tmp_path):
    # given the infrared night yard (no vehicle ever; a clock and "Camera 01" on screen) with its text masked
    config = StreamcapConfig.model_validate({
        "device_id": "unit",
        "cameras": {"yard": {"url": str(shared_data / "videos" / "ir-night-yard.mp4"), "loop": True,
                             "caption_interval_s": 0.5, "mask": YARD_TEXT}},
        "model": {"max_batch": 4},
        "outputs": {"console": False, "jsonl": str(tmp_path / "events.jsonl")},
    })
    app = build(config, captioner=load_captioner(backend="torch"), console_stream=io.StringIO())

    def captions():
        path = tmp_path / "events.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [e for e in map(json.loads, lines) if e["kind"] == "caption"]

    # when the pipeline captions a few seconds of it
    app.start()
    try:
        deadline = time.monotonic() + 120
        while len(captions()) < 8:
            assert time.monotonic() < deadline, "timed out waiting for eight captions"
            time.sleep(0.2)
        frame, _ = app.pipeline.snapshots.latest("yard")
    finally:
        app.stop()
    # then no caption names a vehicle and the head is not taken in by the text (unmasked it said
    # "a black and white photo of a mountain car" in 80 of 88 dev frames, p(vehicle) 0.76)
    texts = [c["caption"] for c in captions()]
    assert not any("vehicle" in named_concepts(t) for t in texts), texts
    assert np.median([c["concepts"]["vehicle"] for c in captions()]) < 0.3
    # and the snapshot is the whole picture, clock included
    height, width = frame.image.shape[:2]
    assert frame.image[: height // 10, : int(0.4 * width)].max() > 100, "the clock's white digits are still there"

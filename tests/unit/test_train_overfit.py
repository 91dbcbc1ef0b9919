"""A tiny model trained by `streamcap train` learns a handful of real images by heart."""
import json

import pytest

from streamcap.__main__ import main
from streamcap.model.captioner import Captioner
from streamcap.model.images import read_image
from streamcap.model.vocab import clean_caption


@pytest.fixture
def tiny_corpus(tmp_path, flickr8k):
    """Six real training images with one caption each, in Flickr8k's on-disk format."""
    ids = flickr8k.split("train")[:6]
    (tmp_path / "Images").mkdir()
    lines = []
    for image_id in ids:
        (tmp_path / "Images" / image_id).symlink_to(flickr8k.image_paths[image_id])
        lines.append(f"{image_id}#0\t{flickr8k.captions[image_id][0]}")
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    for split in ("train", "dev"):
        (tmp_path / f"Flickr_8k.{split}Images.txt").write_text("\n".join(ids) + "\n")
    expected = {i: " ".join(clean_caption(flickr8k.captions[i][0])) for i in ids}
    return tmp_path, expected


@pytest.mark.parametrize("decoder", ["attention", "merge"])
def test_tiny_model_reproduces_its_training_captions(tiny_corpus, tmp_path, decoder):
    root, expected = tiny_corpus
    out = tmp_path / "out" / "tiny.pt"
    # given a small model trained on six images, one caption each, through the CLI
    status = main([
        "train", "--data", str(root), "--out", str(out), "--decoder", decoder, "--min-count", "1",
        "--hidden-dim", "96", "--attention-dim", "48", "--embed-dim", "32", "--dropout", "0",
        "--epochs", "120", "--batch-size", "6", "--lr", "0.005", "--lr-drop-epoch", "80", "--lr-after-drop", "0.001",
        "--patience", "1000", "--eval-beam", "1", "--freeze-embeddings", "false",
        "--cache-dir", str(tmp_path / "cache"),
    ])
    assert status == 0
    # when it captions those images from their files
    captioner = Captioner.load(out)
    frames = [read_image(root / "Images" / image_id) for image_id in expected]
    captions = captioner.caption(frames)
    # then it says back what it was taught
    assert dict(zip(expected, captions)) == expected
    history = json.loads((out.parent / "tiny.pt.history.json").read_text())
    assert history[-1]["loss"] < history[0]["loss"] / 5

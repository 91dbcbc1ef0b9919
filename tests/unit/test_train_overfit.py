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


def _tiny_args(root, out, tmp_path, *extra):
    return [
        "train", "--data", str(root), "--out", str(out), "--decoder", "attention", "--min-count", "1",
        "--hidden-dim", "32", "--attention-dim", "16", "--embed-dim", "16", "--dropout", "0", "--batch-size", "6",
        "--lr", "0.005", "--patience", "1000", "--eval-beam", "1", "--cache-dir", str(tmp_path / "cache"), *extra,
    ]


def test_resume_continues_where_training_stopped_and_scst_runs_after(tiny_corpus, tmp_path):
    root, _ = tiny_corpus
    out = tmp_path / "run" / "m.pt"
    # given a run stopped after 3 epochs
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "3")) == 0
    # when resumed to 5 epochs and followed by 2 epochs of self-critical training
    last = out.parent / "m.last.pt"
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "5", "--resume", str(last), "--scst-epochs", "2",
                           "--scst-batch-images", "3", "--scst-lr", "0.001")) == 0
    # then the history shows epochs 0-4 once each, then the SCST epochs with their CIDEr-D reward
    history = json.loads((out.parent / "m.pt.history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [("xe", e) for e in range(5)] + [("scst", 0), ("scst", 1)]
    assert all(h["reward"] >= 0 for h in history if h["phase"] == "scst")

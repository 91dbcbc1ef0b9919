"""A tiny model trained by `streamcap train` learns a handful of real images by heart."""
import json
import shutil

import torch

import pytest

from streamcap.__main__ import main
from streamcap.backends.select import load_captioner
from streamcap.model.checkpoint import load_checkpoint
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
    captioner = load_captioner(out, backend="torch-cpu")
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
    last = out.parent / "m.last.pt"
    # given a run stopped after 3 epochs, then resumed to 5
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "3")) == 0
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "5", "--resume", str(last))) == 0
    shutil.copy(last, tmp_path / "after_xe.pt")
    # when resumed with 2 epochs of self-critical training, then once more to 3
    scst = ("--scst-batch-images", "3", "--scst-lr", "0.001")
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "5", "--resume", str(last), "--scst-epochs", "2", *scst)) == 0
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "5", "--resume", str(last), "--scst-epochs", "3", *scst)) == 0
    # then the history shows each epoch once: cross-entropy 0-4, then SCST 0-2, the last one after a resume
    history = json.loads((out.parent / "m.pt.history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [("xe", e) for e in range(5)] + [("scst", e) for e in range(3)]
    # rewards are CIDEr-D values, and the policy gradient really moved the weights
    assert all(0.0 <= h["reward"] <= 10.0 for h in history if h["phase"] == "scst")
    before, after = load_checkpoint(tmp_path / "after_xe.pt")[1], load_checkpoint(last)[1]
    assert not torch.equal(before.head.weight, after.head.weight)


def test_scst_runs_straight_from_a_warm_start(tiny_corpus, tmp_path):
    root, _ = tiny_corpus
    first = tmp_path / "a" / "m.pt"
    assert main(_tiny_args(root, first, tmp_path, "--epochs", "2")) == 0
    # when a new run has no cross-entropy epochs, only --init-from and SCST
    out = tmp_path / "b" / "m.pt"
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "0", "--init-from", str(first), "--scst-epochs", "1",
                           "--scst-batch-images", "3")) == 0
    # then it trained one SCST epoch from the warm start and wrote a model
    history = json.loads((out.parent / "m.pt.history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [("scst", 0)]
    assert load_checkpoint(out)[0].vocab.words == load_checkpoint(first)[0].vocab.words


def test_a_model_with_a_concept_head_trains_and_reports_its_concepts(tiny_corpus, tmp_path):
    root, _ = tiny_corpus
    out = tmp_path / "c" / "m.pt"
    # when trained with --concepts (six images: too few to hold folds out, so the head predicts its own)
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "2", "--concepts", "true", "--concept-epochs", "2")) == 0
    # then the checkpoint carries a calibrated head and every description has one probability per concept
    spec, decoder, _ = load_checkpoint(out)
    assert spec.concept_names == ("person", "vehicle", "animal", "fire") and decoder.concept_head is not None
    captioner = load_captioner(out, backend="torch-cpu")
    described = captioner.describe([read_image(p) for p in sorted((root / "Images").iterdir())[:3]])
    assert [sorted(d.concepts) for d in described] == [sorted(spec.concept_names)] * 3
    assert all(0.0 <= p <= 1.0 for d in described for p in d.concepts.values())
    # and a second run reuses the trained head instead of training it again
    assert (out.parent / "m.concepts.pt").is_file()


def test_a_refitted_concept_head_keeps_the_models_concepts_and_decoder(tiny_corpus, tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    root, _ = tiny_corpus
    out = tmp_path / "c" / "m.pt"
    assert main(_tiny_args(root, out, tmp_path, "--epochs", "1", "--concepts", "true", "--concept-epochs", "1")) == 0
    # when its head is refitted on the same images plus copies with camera text drawn on
    refit = tmp_path / "c" / "refit.pt"
    monkeypatch.setenv("STREAMCAP_CACHE", str(tmp_path / "cache"))
    script = Path(__file__).resolve().parents[2] / "scripts" / "refit_concept_head.py"
    done = subprocess.run([sys.executable, str(script), "--model", str(out), "--out", str(refit), "--data", str(root),
                           "--data", f"overlay:{root}:6", "--epochs", "2", "--folds", "3", "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # then the model has the same concepts and decoder, a new head, and still describes frames with every concept
    (spec, decoder, _), (new_spec, new_decoder, _) = load_checkpoint(out), load_checkpoint(refit)
    assert new_spec.concept_names == spec.concept_names
    old_state, new_state = decoder.state_dict(), new_decoder.state_dict()
    changed = {k for k in old_state if not torch.equal(old_state[k], new_state[k])}
    assert changed and all(k.startswith("concept_head.") for k in changed), changed
    assert "refit_concept_head.py" in new_spec.info["concept_head_refit"]
    described = load_captioner(refit, backend="torch-cpu").describe([read_image(p) for p in sorted((root / "Images").iterdir())[:2]])
    assert [sorted(d.concepts) for d in described] == [sorted(spec.concept_names)] * 2

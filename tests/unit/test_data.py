import json

import pytest

from streamcap.train.data import load_corpus, load_flickr8k


def test_flickr8k_splits_and_captions(flickr8k):
    assert len(flickr8k.split("train")) == 6000 and len(flickr8k.split("dev")) == 1000
    assert all(len(flickr8k.captions[i]) == 5 for i in flickr8k.split("dev"))
    assert not set(flickr8k.split("train")) & set(flickr8k.split("dev"))


def test_karpathy_json_loads_with_restval_joining_train(tmp_path):
    # given a Karpathy-style dataset file (COCO layout: filepath + filename)
    data = {"images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "restval", "sentences": [{"raw": "A dog runs.", "tokens": ["a", "dog", "runs"]}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "train", "sentences": [{"raw": "Two cats.", "tokens": ["two", "cats"]}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "val", "sentences": [{"raw": "A car.", "tokens": ["a", "car"]}]},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    # when loaded
    corpus = load_corpus(path, tmp_path / "images")
    # then splits, captions and image paths follow the file
    assert corpus.split("train") == ["a.jpg", "b.jpg"] and corpus.split("val") == ["c.jpg"]
    assert corpus.captions["b.jpg"] == ["Two cats."]
    assert corpus.image_paths["a.jpg"] == tmp_path / "images" / "val2014" / "a.jpg"


def test_karpathy_json_without_an_image_folder_says_so(tmp_path):
    (tmp_path / "d.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="needs --images"):
        load_corpus(tmp_path / "d.json")


def test_malformed_token_file_names_the_line(tmp_path):
    (tmp_path / "Flickr8k.token.txt").write_text("a.jpg#0\tA dog.\nthis line has no tab\n")
    with pytest.raises(ValueError, match=r"Flickr8k.token.txt:2: expected"):
        load_flickr8k(tmp_path)

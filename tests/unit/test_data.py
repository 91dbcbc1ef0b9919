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


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_coco_subset_splits_train2014_from_val2014(tmp_path):
    from streamcap.train.data import load_corpus

    _write(tmp_path / "coco" / "captions.tsv",
           "COCO_train2014_000000000009.jpg\ta bus\nCOCO_train2014_000000000009.jpg\ta red bus on a street\n"
           "COCO_val2014_000000000042.jpg\tan empty room\nCOCO_val2014_000000000042.jpg\tan empty office\n")
    corpus = load_corpus(tmp_path / "coco")
    assert corpus.split("train") == ["COCO_train2014_000000000009.jpg"]
    assert corpus.split("dev") == ["COCO_val2014_000000000042.jpg"]
    assert corpus.captions["COCO_val2014_000000000042.jpg"] == ["an empty room", "an empty office"]
    assert corpus.image_paths["COCO_val2014_000000000042.jpg"] == tmp_path / "coco" / "Images" / "COCO_val2014_000000000042.jpg"


def test_clip_frames_split_by_clip_and_keep_hand_labels(tmp_path):
    from streamcap.train.data import load_clip_frames

    root = tmp_path / "clips"
    _write(root / "captions.tsv", "yard_00000.jpg\ta dark yard\nyard_00060.jpg\ta man at a gate\nhall_00000.jpg\tan empty hall\n")
    _write(root / "labels.tsv", "frame\tperson\tvehicle\tanimal\nyard_00000.jpg\t?\t0\t0\nyard_00060.jpg\t1\t0\t0\nhall_00000.jpg\t0\t0\t0\n")
    corpus = load_clip_frames(root, dev_clips=("yard",))
    assert corpus.split("dev") == ["yard_00000.jpg", "yard_00060.jpg"] and corpus.split("train") == ["hall_00000.jpg"]
    assert corpus.labels["yard_00000.jpg"] == {"person": None, "vehicle": 0, "animal": 0}
    assert corpus.labels["yard_00060.jpg"]["person"] == 1


def test_a_corpus_without_frames_cuts_them_from_the_clips_its_videos_file_names(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from streamcap.model.images import read_image
    from streamcap.train.data import apply_corrections, load_clip_frames

    # given a 6-frame clip whose frames are 0, 40, 80... grey, under a shared-data folder
    videos = tmp_path / "shared" / "clips" / "videos"
    videos.mkdir(parents=True)
    writer = cv2.VideoWriter(str(videos / "gate.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    for k in range(6):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    root = tmp_path / "extra"
    _write(root / "captions.tsv", "gate_00004.jpg\tan empty gate\ngate_00001.jpg\ta dark gate\n")
    _write(root / "labels.tsv", "frame\tperson\tvehicle\tanimal\ngate_00004.jpg\t0\t0\t0\ngate_00001.jpg\t0\t0\t0\n")
    _write(root / "videos.txt", "clips/videos\n")
    monkeypatch.setenv("STREAMCAP_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("STREAMCAP_CACHE", str(tmp_path / "cache"))
    # when loaded
    corpus = load_clip_frames(root, dev_clips=())
    # then each frame is the one of that index in the clip, cut into the cache
    assert corpus.image_paths["gate_00004.jpg"] == tmp_path / "cache" / "frames" / "extra" / "gate_00004.jpg"
    assert abs(float(read_image(corpus.image_paths["gate_00004.jpg"]).mean()) - 160) < 6
    assert abs(float(read_image(corpus.image_paths["gate_00001.jpg"]).mean()) - 40) < 6
    # and a label correction changes a hand label, naming the line when it is wrong
    _write(tmp_path / "fixes.tsv", "# a walker at the edge\ngate_00001.jpg\tlabel:person\t?\n")
    fixed, count = apply_corrections(corpus, tmp_path / "fixes.tsv")
    assert count == 1 and fixed.labels["gate_00001.jpg"]["person"] is None
    _write(tmp_path / "bad.tsv", "gate_00001.jpg\tlabel:persn\t1\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: gate_00001.jpg has no hand label 'persn'"):
        apply_corrections(corpus, tmp_path / "bad.tsv")


def test_a_bad_label_names_the_file_and_line(tmp_path):
    from streamcap.train.data import load_clip_frames

    root = tmp_path / "clips"
    _write(root / "captions.tsv", "yard_00000.jpg\ta dark yard\n")
    _write(root / "labels.tsv", "frame\tperson\tvehicle\tanimal\nyard_00000.jpg\tyes\t0\t0\n")
    with pytest.raises(ValueError, match=r"labels.tsv:2: person is 'yes'"):
        load_clip_frames(root)


def test_corrections_replace_one_caption_and_merging_prefixes_ids(tmp_path):
    from streamcap.train.data import apply_corrections, load_corpora

    _write(tmp_path / "coco_subset" / "captions.tsv",
           "COCO_train2014_1.jpg\ta man on a street\nCOCO_train2014_1.jpg\ta busy street\n")
    _write(tmp_path / "fixes.tsv", "# the street is empty: nobody is in view\nCOCO_train2014_1.jpg\t1\tan empty street\n")
    corpus = load_corpora([tmp_path / "coco_subset"])
    fixed, count = apply_corrections(corpus, tmp_path / "fixes.tsv")
    assert count == 1 and fixed.captions["COCO_train2014_1.jpg"] == ["an empty street", "a busy street"]
    merged = load_corpora([tmp_path / "coco_subset", tmp_path / "coco_subset"], corrections=tmp_path / "fixes.tsv")
    assert merged.split("train") == ["coco_subset/COCO_train2014_1.jpg"] * 2
    assert merged.captions["coco_subset/COCO_train2014_1.jpg"][0] == "an empty street"


def test_shared_data_splits(shared_data):
    from streamcap.train.data import DEV_CLIPS, clip_of, load_corpus

    coco = load_corpus(shared_data / "coco_subset")
    assert len(coco.split("train")) == 5000 and len(coco.split("dev")) == 938
    dev_clips = set()
    for folder in ("clip_frames", "cctv_clips"):
        clips = load_corpus(shared_data / folder)
        dev_clips |= {clip_of(i) for i in clips.split("dev")}
        assert not {clip_of(i) for i in clips.split("train")} & set(DEV_CLIPS)
        assert len({clip_of(i) for i in clips.split("train")}) >= 2  # something of every corpus to learn from
    assert dev_clips == set(DEV_CLIPS)  # every dev clip exists, split by clip: none of its frames is trained on


def test_overlay_copies_are_training_images_with_camera_text_and_the_same_captions(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from streamcap.model.images import read_image
    from streamcap.train.data import load_corpora

    root = tmp_path / "coco_subset"
    (root / "Images").mkdir(parents=True)
    lines = []
    for k in range(6):
        split = "train2014" if k < 4 else "val2014"
        name = f"COCO_{split}_{k:012d}.jpg"
        cv2.imwrite(str(root / "Images" / name), np.full((96, 128, 3), 90, np.uint8))
        lines.append(f"{name}\ta grey wall number {k}\n")
    _write(root / "captions.tsv", "".join(lines))
    _write(tmp_path / "fixes.tsv", "# the wall is plain\nCOCO_train2014_000000000001.jpg\t1\ta plain grey wall\n")
    monkeypatch.setenv("STREAMCAP_CACHE", str(tmp_path / "cache"))
    corpus = load_corpora([f"overlay:{root}:3"], corrections=tmp_path / "fixes.tsv")
    ids = corpus.split("train")
    # three of the four training images, never a dev one, each with its (corrected) captions
    assert len(ids) == 3 and all("train2014" in i for i in ids) and "dev" not in corpus.splits
    expected = {f"COCO_train2014_{k:012d}.jpg": [f"a grey wall number {k}"] for k in range(4)}
    expected["COCO_train2014_000000000001.jpg"] = ["a plain grey wall"]
    assert all(corpus.captions[i] == expected[i] for i in ids)
    # the copies carry drawn text (the plain grey frame is no longer plain) and are the same on a second load
    first = {i: read_image(p) for i, p in corpus.image_paths.items()}
    assert all(float(np.abs(img.astype(int) - 90).max()) > 60 for img in first.values())
    for path in corpus.image_paths.values():
        path.unlink()
    again = load_corpora([f"overlay:{root}:3"])
    assert all(np.array_equal(first[i], read_image(again.image_paths[i])) for i in ids)
    with pytest.raises(ValueError, match="write overlay:FOLDER:COUNT"):
        load_corpora([f"overlay:{root}"])


def test_overlaid_camera_frames_keep_their_hand_labels_and_their_clip(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from streamcap.train.data import clip_of, load_corpora

    # given a clip-frames corpus: a training clip without vehicles and a dev clip
    root = tmp_path / "clips"
    (root / "Frames").mkdir(parents=True)
    frames = ["shop-a_00000.jpg", "shop-a_00010.jpg", "car-detection_00000.jpg"]
    for name in frames:
        cv2.imwrite(str(root / "Frames" / name), np.full((96, 128, 3), 90, np.uint8))
    _write(root / "captions.tsv", "".join(f"{n}\ta quiet shop\n" for n in frames))
    _write(root / "labels.tsv", "frame\tperson\tvehicle\tanimal\n" + "".join(f"{n}\t0\t0\t0\n" for n in frames))
    monkeypatch.setenv("STREAMCAP_CACHE", str(tmp_path / "cache"))
    # when its training frames are overlaid beside the originals
    corpus = load_corpora([root, f"overlay:{root}:100"])
    copies = [i for i in corpus.split("train") if i.startswith("overlay-clips/")]
    # then every training frame has a copy, labelled like its original (so it counts as a camera frame), the dev
    # clip has none, and a copy belongs to its original's clip (one fold for both when the head is calibrated)
    assert sorted(copies) == ["overlay-clips/shop-a_00000.jpg", "overlay-clips/shop-a_00010.jpg"]
    assert all(corpus.labels[i] == {"person": 0, "vehicle": 0, "animal": 0} for i in copies)
    assert {clip_of(i) for i in copies} == {clip_of("clips/shop-a_00000.jpg")} == {"shop-a"}

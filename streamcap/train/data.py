"""Caption datasets on disk, all loaded into one `CaptionCorpus`.

Formats: Flickr8k's own folder, Karpathy's JSON, and the shared data's
`captions.tsv` folders (the COCO subset; the clip frames, which add hand
labels). A corpus is image paths, raw captions per image, named splits and,
where people labelled the images, concept labels. Several corpora merge into
one for training on all of them (`merge_corpora`). Nothing here reads pixels.

Splits of the shared data, fixed here so that training and every benchmark
agree on them:
- COCO subset: `train` is its 5,000 train2014 images, `dev` its 938 val2014 ones.
- Clip frames (`clip_frames/`, `cctv_clips/` and the project's own
  `data/cctv_extra/`): frames of one clip are near-duplicates, so the split is
  by clip. `dev` is the clips in DEV_CLIPS, one of each kind of view users
  have: from clip_frames a top-down car park, an infrared night yard with one
  visitor, a hall people walk through; from cctv_clips an elevated motorway, a
  road seen straight down, a busy shop aisle, a crowd on a plaza seen from
  above, a lamp-lit lane at night. `train` is every other clip (a raised
  campus camera, bottles on a table; motorways, car parks, a level crossing,
  shops, a fisheye, streets, a mall).
"""
from __future__ import annotations

import json
import os
from collections import defaultdict

import numpy as np
from dataclasses import dataclass, field
from pathlib import Path


DEV_CLIPS = (
    "car-detection", "ir-night-yard", "one-by-one-person-detection",  # clip_frames
    "motorway-elevated", "road-topdown", "shop-aisle", "plaza-crowd-topdown", "night-lane",  # cctv_clips
)
LabelValue = int | None  # 1 present, 0 absent, None: cannot tell


@dataclass(frozen=True)
class CaptionCorpus:
    image_paths: dict[str, Path]
    captions: dict[str, list[str]]  # raw, as written by the annotators
    splits: dict[str, list[str]]
    labels: dict[str, dict[str, LabelValue]] = field(default_factory=dict)  # hand labels, where there are any
    name: str = ""

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise KeyError(f"no split {name!r}; this corpus has {', '.join(sorted(self.splits))}")
        return self.splits[name]


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_flickr8k(root: str | Path) -> CaptionCorpus:
    """`root` holds Flickr8k.token.txt, Flickr_8k.<split>Images.txt and Images/."""
    root = Path(root)
    token_file = root / "Flickr8k.token.txt"
    if not token_file.is_file():
        raise FileNotFoundError(f"{token_file}: not found; expected Flickr8k's token file there")
    captions: dict[str, list[str]] = defaultdict(list)
    for line_no, line in enumerate(_read_lines(token_file), start=1):
        key, sep, text = line.partition("\t")
        if not sep:
            raise ValueError(f"{token_file}:{line_no}: expected 'IMAGE#N<TAB>caption'")
        captions[key.split("#")[0]].append(text)
    splits = {}
    for split_file in sorted(root.glob("Flickr_8k.*Images.txt")):
        name = split_file.name.split(".")[1].removesuffix("Images")
        splits[name] = [i for i in _read_lines(split_file) if i in captions]
    image_dir = root / "Images" if (root / "Images").is_dir() else root / "Flicker8k_Dataset"
    paths = {image_id: image_dir / image_id for image_id in captions}
    return CaptionCorpus(paths, dict(captions), splits)


def load_karpathy_json(json_path: str | Path, image_root: str | Path) -> CaptionCorpus:
    """Karpathy's dataset_*.json (COCO, Flickr8k/30k); `restval` joins `train`."""
    json_path, image_root = Path(json_path), Path(image_root)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    paths, captions, splits = {}, {}, defaultdict(list)
    for entry in data["images"]:
        image_id = entry["filename"]
        paths[image_id] = image_root / entry.get("filepath", "") / entry["filename"]
        captions[image_id] = [s["raw"] for s in entry["sentences"]]
        split = "train" if entry["split"] == "restval" else entry["split"]
        splits[split].append(image_id)
    return CaptionCorpus(paths, captions, dict(splits))


def _read_tsv(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a tab-separated file, skipping blank lines and `#` comments."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != columns:
            raise ValueError(f"{path}:{line_no}: expected {columns} tab-separated fields, found {len(fields)}")
        rows.append((line_no, fields))
    return rows


def _captions_tsv(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected 'image<TAB>caption' lines there")
    captions: dict[str, list[str]] = defaultdict(list)
    for _, (image_id, text) in _read_tsv(path, 2):
        captions[image_id].append(text.strip())
    return dict(captions)


def apply_corrections(corpus: CaptionCorpus, corrections: str | Path) -> tuple[CaptionCorpus, int]:
    """Replace captions and hand labels found wrong.

    Lines `image<TAB>caption number (1-based)<TAB>corrected caption`, or
    `image<TAB>label:<concept><TAB>1|0|?` for a hand label.
    """
    captions = {k: list(v) for k, v in corpus.captions.items()}
    labels = {k: dict(v) for k, v in corpus.labels.items()}
    fixed = 0
    for line_no, (image_id, number, text) in _read_tsv(Path(corrections), 3):
        if image_id not in captions:
            continue  # a correction for another corpus in the same file
        if number.startswith("label:"):
            concept, value = number[len("label:"):], text.strip()
            if image_id not in labels or concept not in labels[image_id] or value not in ("0", "1", "?"):
                raise ValueError(f"{corrections}:{line_no}: {image_id} has no hand label {concept!r}, or {value!r} is not 1, 0 or ?")
            labels[image_id][concept] = None if value == "?" else int(value)
            fixed += 1
            continue
        index = int(number) - 1
        if not 0 <= index < len(captions[image_id]):
            raise ValueError(f"{corrections}:{line_no}: {image_id} has {len(captions[image_id])} captions, not {number}")
        captions[image_id][index] = text.strip()
        fixed += 1
    return CaptionCorpus(corpus.image_paths, captions, corpus.splits, labels, corpus.name), fixed


def load_coco_subset(root: str | Path) -> CaptionCorpus:
    """`root` holds captions.tsv and Images/ (the shared COCO subset)."""
    root = Path(root)
    captions = _captions_tsv(root / "captions.tsv")
    ids = sorted(captions)
    splits = {"train": [i for i in ids if "_train" in i], "dev": [i for i in ids if "_train" not in i]}
    return CaptionCorpus({i: root / "Images" / i for i in ids}, captions, splits, name=root.name)


def clip_of(frame_id: str) -> str:
    """`ir-night-yard_00840.jpg` -> `ir-night-yard`; a merged id's corpus is dropped (`cctv_extra/shop-a_00010.jpg`
    -> `shop-a`), so the frames of one clip from several corpora, overlaid copies included, are one clip."""
    return frame_id.rsplit("/", 1)[-1].rsplit("_", 1)[0]


def shared_data_root() -> Path:
    """The shared data folder: $STREAMCAP_DATA, else ../shared/data from the working directory."""
    return Path(os.environ.get("STREAMCAP_DATA") or "../shared/data")


def _frames_dir(root: Path, frame_ids: list[str]) -> Path:
    """A clip corpus's frames: its own Frames/, or cut from the clips that its `videos.txt` names.

    `videos.txt` holds one folder, relative to the shared data (e.g. `cctv_clips/videos`); the frames
    are cut once into .cache/frames/<corpus>/ ($STREAMCAP_CACHE instead of .cache).
    """
    videos_file = root / "videos.txt"
    if (root / "Frames").is_dir() or not videos_file.is_file():
        return root / "Frames"  # an image missing there is named when it is read
    from streamcap.train.clip_video import extract_frames

    videos = shared_data_root() / videos_file.read_text(encoding="utf-8").strip()
    out = Path(os.environ.get("STREAMCAP_CACHE") or ".cache") / "frames" / root.name
    extract_frames(frame_ids, videos, out)
    return out


def load_clip_frames(root: str | Path, dev_clips: tuple[str, ...] = DEV_CLIPS) -> CaptionCorpus:
    """`root` holds captions.tsv, labels.tsv (frame, person, vehicle, animal) and Frames/ (or videos.txt)."""
    root = Path(root)
    captions = _captions_tsv(root / "captions.tsv")
    labels: dict[str, dict[str, LabelValue]] = {}
    label_file = root / "labels.tsv"
    rows = _read_tsv(label_file, 4)
    header = rows[0][1]
    for line_no, fields in rows[1:]:
        values = {}
        for name, value in zip(header[1:], fields[1:]):
            if value not in ("0", "1", "?"):
                raise ValueError(f"{label_file}:{line_no}: {name} is {value!r}; write 1, 0 or ?")
            values[name] = None if value == "?" else int(value)
        labels[fields[0]] = values
    ids = sorted(captions)
    splits = {"train": [i for i in ids if clip_of(i) not in dev_clips], "dev": [i for i in ids if clip_of(i) in dev_clips]}
    frames = _frames_dir(root, ids)
    return CaptionCorpus({i: frames / i for i in ids}, captions, splits, labels, name=root.name)


def merge_corpora(corpora: list[CaptionCorpus]) -> CaptionCorpus:
    """One corpus whose ids are `<corpus name>/<image id>`; each split is the union of the parts'."""
    paths, captions, splits, labels = {}, {}, defaultdict(list), {}
    for corpus in corpora:
        def key(image_id: str) -> str:
            return f"{corpus.name}/{image_id}"
        paths.update((key(i), p) for i, p in corpus.image_paths.items())
        captions.update((key(i), c) for i, c in corpus.captions.items())
        labels.update((key(i), v) for i, v in corpus.labels.items())
        for split, ids in corpus.splits.items():
            splits[split].extend(key(i) for i in ids)
    return CaptionCorpus(paths, captions, dict(splits), labels, name="+".join(c.name for c in corpora))


def source_of(image_id: str) -> str:
    """The corpus a merged id came from (`coco_subset/COCO_...jpg` -> `coco_subset`), or ''."""
    return image_id.split("/", 1)[0] if "/" in image_id else ""


OVERLAY = "overlay:"


def load_overlays(spec: str, corrections: str | Path | None = None) -> CaptionCorpus:
    """`overlay:FOLDER:COUNT`: COUNT training images of FOLDER's corpus with camera text drawn on (see train/overlays.py)."""
    from streamcap.train.overlays import overlay_copies

    folder, _, count = spec[len(OVERLAY):].rpartition(":")
    if not folder or not count.isdigit():
        raise ValueError(f"{spec!r}: write overlay:FOLDER:COUNT, e.g. overlay:../shared/data/coco_subset:1500")
    source = load_corpus(folder)
    if corrections:
        source = apply_corrections(source, corrections)[0]
    chosen = sorted(np.random.default_rng(int(count)).permutation(source.split("train"))[: int(count)].tolist())
    name = f"overlay-{source.name}"
    paths = overlay_copies(source.image_paths, chosen, Path(os.environ.get("STREAMCAP_CACHE") or ".cache") / "frames" / name)
    # Camera frames keep their hand labels, so their copies count as camera frames: the text must appear on
    # camera views without vehicles too, or the head still reads "camera text" as "traffic camera".
    labels = {i: source.labels[i] for i in chosen if i in source.labels}
    return CaptionCorpus(paths, {i: source.captions[i] for i in chosen}, {"train": chosen}, labels, name=name)


def load_corpus(data: str | Path, images: str | Path | None = None) -> CaptionCorpus:
    """A Flickr8k folder, a captions.tsv folder (COCO subset, clip frames), a Karpathy JSON with its image
    folder, or `overlay:FOLDER:COUNT` (camera text drawn on COUNT of FOLDER's training images)."""
    if str(data).startswith(OVERLAY):
        return load_overlays(str(data))
    data = Path(data)
    if data.suffix == ".json":
        if images is None:
            raise ValueError(f"{data}: a Karpathy JSON needs --images, the image folder")
        return load_karpathy_json(data, images)
    if (data / "labels.tsv").is_file():
        return load_clip_frames(data)
    if (data / "captions.tsv").is_file():
        return load_coco_subset(data)
    corpus = load_flickr8k(data)
    return CaptionCorpus(corpus.image_paths, corpus.captions, corpus.splits, name=data.name)


def load_corpora(data: list[str | Path], images: str | Path | None = None, corrections: str | Path | None = None) -> CaptionCorpus:
    """One folder as it is; several merged (ids prefixed by folder name). Corrections apply to each part."""
    parts = []
    for d in data:
        if str(d).startswith(OVERLAY):  # copies its source's captions, corrected
            parts.append(load_overlays(str(d), corrections))
        else:
            part = load_corpus(d, images)
            parts.append(apply_corrections(part, corrections)[0] if corrections else part)
    return parts[0] if len(parts) == 1 else merge_corpora(parts)

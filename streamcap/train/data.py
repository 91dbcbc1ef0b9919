"""Caption datasets on disk: Flickr8k's own format and Karpathy's JSON.

Both load into one `CaptionCorpus`: image paths, raw captions per image, and
named splits. Nothing here reads pixels.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaptionCorpus:
    image_paths: dict[str, Path]
    captions: dict[str, list[str]]  # raw, as written by the annotators
    splits: dict[str, list[str]]

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


def load_corpus(data: str | Path, images: str | Path | None = None) -> CaptionCorpus:
    """A Flickr8k folder, or a Karpathy JSON file with its image folder."""
    data = Path(data)
    if data.suffix == ".json":
        if images is None:
            raise ValueError(f"{data}: a Karpathy JSON needs --images, the image folder")
        return load_karpathy_json(data, images)
    return load_flickr8k(data)

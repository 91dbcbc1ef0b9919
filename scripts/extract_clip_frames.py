#!/usr/bin/env python3
"""Cut the frames a captions file names out of the shared CCTV clips (see streamcap/train/clip_video.py).

    .venv/bin/python scripts/extract_clip_frames.py --captions data/cctv_extra/captions.tsv \
        --videos ../shared/data/cctv_clips/videos --out /tmp/cctv_extra/Frames

Training does this by itself for data/cctv_extra (streamcap.train.data); this is for looking at them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamcap.train.clip_video import extract_frames


def names_in_captions(captions: Path) -> list[str]:
    """The distinct image names in the first column of a captions TSV, in file order (# lines skipped)."""
    seen: dict[str, None] = {}
    for line in Path(captions).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        seen.setdefault(line.split("\t", 1)[0].strip(), None)
    return list(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=Path, required=True, help="captions TSV: <clip>_<index>.jpg<TAB>caption")
    parser.add_argument("--videos", type=Path, required=True, help="folder with <clip>.mp4")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the JPEGs into")
    args = parser.parse_args(argv)
    names = names_in_captions(args.captions)
    before = {n for n in names if (args.out / n).is_file()}
    try:
        paths = extract_frames(names, args.videos, args.out)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} frames in {args.out}: {len(paths) - len(before)} written, {len(before)} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())

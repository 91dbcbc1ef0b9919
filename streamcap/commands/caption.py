"""`streamcap caption FILE...`: caption images and sampled frames of video files."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import cv2

from streamcap.backend_kinds import BACKEND_CHOICES
from streamcap.backends.base import BackendUnavailable
from streamcap.backends.select import load_captioner
from streamcap.concepts import reported
from streamcap.model.checkpoint import CheckpointError
from streamcap.model.encoder import EncoderWeightsError
from streamcap.model.images import ImageReadError, read_image

log = logging.getLogger("streamcap.caption")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".ts"}


def register(subparsers) -> None:
    p = subparsers.add_parser("caption", help="caption image files and frames of video files")
    p.add_argument("files", nargs="+", help="images (jpg, png, ...) or videos")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--beam", type=int, help="beam width (default: the model's)")
    p.add_argument("--length-penalty", type=float, help="beam length penalty exponent")
    p.add_argument("--encoder-weights", help="local ImageNet weights for the encoder")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="inference backend (default auto)")
    p.add_argument("--input-size", type=int, help="encoder input side in pixels (default: the model's own)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between sampled video frames (default 2)")
    p.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def video_frames(path: Path, every_s: float):
    """(time in seconds, BGR frame) every `every_s` seconds of a video file."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageReadError(f"{path}: cannot open as a video; check the file")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(1, round(fps * every_s))
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                yield index / fps, frame
            index += 1
        if index == 0:
            raise ImageReadError(f"{path}: no decodable frames; the video is corrupt or truncated")
    finally:
        capture.release()


def _items(files: list[str], every_s: float):
    """(source label, time or None, frame or an error message)."""
    for name in files:
        path = Path(name)
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                for t, frame in video_frames(path, every_s):
                    yield str(path), t, frame
            else:
                yield str(path), None, read_image(path)
        except ImageReadError as exc:
            yield str(path), None, str(exc)


def run(args) -> int:
    try:
        captioner = load_captioner(args.model, backend=args.backend, beam_size=args.beam,
                                   length_penalty=args.length_penalty, encoder_weights=args.encoder_weights,
                                   input_size=args.input_size)
    except (CheckpointError, EncoderWeightsError, BackendUnavailable, ValueError) as exc:
        print(f"streamcap caption: {exc}", file=sys.stderr)
        return 2
    failures = 0

    def emit(batch):
        frames = [frame for _, _, frame in batch]
        for (source, t, _), description in zip(batch, captioner.describe(frames)):
            # The same fields as every other output: the caption and its concept probabilities ({} without a
            # head), as the MQTT payloads report them (every group, the categories that are likely enough).
            concepts = reported(description.concepts)
            record = {"file": source, "caption": description.text, "concepts": concepts, "model": captioner.model_name}
            if t is not None:
                record["time_s"] = round(t, 2)
            concepts = "".join(f" {c} {p:.2f}" for c, p in reported(description.concepts, above=0.5).items())
            line = f"{source} @{t:.1f}s" if t is not None else source
            print(json.dumps(record) if args.json else f"{line}: {description.text}{f'  [{concepts.strip()}]' if concepts else ''}",
                  flush=True)

    batch = []
    for source, t, frame in _items(args.files, args.every):
        if isinstance(frame, str):
            failures += 1
            print(f"streamcap caption: {frame}", file=sys.stderr)
            if args.json:
                print(json.dumps({"file": source, "error": frame}), flush=True)
            continue
        batch.append((source, t, frame))
        if len(batch) >= args.batch:
            emit(batch)
            batch = []
    if batch:
        emit(batch)
    return 1 if failures else 0

"""Camera overlays on training photos: so a timestamp never means "there is a car".

Real CCTV frames carry on-screen text: a date and time, a camera name, a
channel number. In the training clips most such frames show traffic, so a
concept head learns the shortcut: on the infrared yard (no vehicle, a
timestamp in the corner) it was sure of a car, and blacking out the text
dropped p(vehicle) from 0.98 to 0.04. Training photos that carry the same
kind of text, whatever they show, break the shortcut.

`--data overlay:FOLDER:COUNT` adds COUNT training images of the corpus in
FOLDER (chosen at random, seeded), each drawn with one to three lines of
camera text in OpenCV's own fonts (white, yellow or grey, with an outline or a
dark box, in a corner, sized like an on-screen display), some re-encoded as a
low-quality JPEG. The text is never read out in a caption (the annotators'
rule), so every caption of the source image stays true and the copies train
the decoder as well as the head. The copies are written once into
.cache/frames/overlay-<corpus>/ ($STREAMCAP_CACHE instead of .cache); dev
images are never copied.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import cv2
import numpy as np

from streamcap.model.images import read_image

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX)
COLOURS = ((255, 255, 255), (0, 255, 255), (220, 220, 220), (0, 230, 0))  # BGR: white, yellow, grey, green
NAMES = ("Camera 01", "CAM 3", "CH02", "Front Door", "IPC", "Cam-4 Yard", "Gate", "Channel 7", "Entrance", "PTZ 1")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _texts(rng: np.random.Generator) -> list[str]:
    y, mo, d = int(rng.integers(2015, 2027)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    h, mi, s = int(rng.integers(0, 24)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    day = DAYS[int(rng.integers(len(DAYS)))]
    stamps = (f"{y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}", f"{mo:02d}-{d:02d}-{y} {day} {h:02d}:{mi:02d}:{s:02d}",
              f"{d:02d}/{mo:02d}/{y} {h:02d}:{mi:02d}", f"{y}/{mo:02d}/{d:02d} {day} {h % 12 or 12:02d}:{mi:02d}:{s:02d} {'AM' if h < 12 else 'PM'}")
    texts = [stamps[int(rng.integers(len(stamps)))]]
    if rng.random() < 0.6:
        texts.append(NAMES[int(rng.integers(len(NAMES)))])
    if rng.random() < 0.2:
        texts.append(f"{int(rng.integers(1, 60))} fps  {int(rng.integers(1, 9))}x")
    return texts


def render_overlay(image: np.ndarray, seed: int) -> np.ndarray:
    """A copy of a BGR frame with camera text drawn on it, the same for the same seed."""
    rng = np.random.default_rng(seed)
    out = image.copy()
    H, W = out.shape[:2]
    corners = rng.permutation(4)
    for k, text in enumerate(_texts(rng)):
        font = FONTS[int(rng.integers(len(FONTS)))]
        height = max(8.0, H * float(rng.uniform(0.025, 0.06)))  # an on-screen display's line
        scale = height / cv2.getTextSize("0", font, 1.0, 1)[0][1]
        thickness = max(1, int(round(scale * float(rng.uniform(0.8, 2.0)))))
        (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
        margin = int(H * 0.02) + 2
        corner = int(corners[k % 4])
        x = margin if corner in (0, 2) else max(margin, W - tw - margin)
        y = margin + th if corner in (0, 1) else H - margin - base
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        style = rng.random()
        if style < 0.3:  # a dark box behind the text
            cv2.rectangle(out, (x - 2, y - th - 2), (x + tw + 2, y + base + 2), (0, 0, 0), -1)
        elif style < 0.7:  # a black outline
            cv2.putText(out, text, (x, y), font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(out, text, (x, y), font, scale, colour, thickness, cv2.LINE_AA)
    if rng.random() < 0.4:  # a camera's low-quality encoding
        quality = int(rng.integers(25, 70))
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return out


def overlay_copies(image_paths: dict[str, Path], image_ids: list[str], out_dir: Path) -> dict[str, Path]:
    """Write the overlaid copy of each image once (seeded by its id); returns id -> copy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for image_id in image_ids:
        path = out_dir / Path(image_id).name
        if not path.is_file():
            seed = zlib.crc32(image_id.encode())
            copy = render_overlay(read_image(image_paths[image_id]), seed)
            ok, data = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, 92])
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data.tobytes())
            os.replace(tmp, path)
        result[image_id] = path
    return result

"""Caption masks: regions of a camera's picture the captioner does not see.

    mask = CaptionMask.from_config([[0, 0, 0.4, 0.1]])   # x, y, width, height as fractions of the frame
    image_for_model = mask.apply(frame.image)            # a copy with the regions blacked out; frame untouched

Camera text (a timestamp, "Camera 01") is the case that made this: the
shipped concept head reads it as traffic, so an infrared yard with a clock in
the corner was "a mountain car" in 80 of 88 frames, and 0 of 88 with the text
masked. Also for a busy road beyond the fence that no rule is about. The
regions are fractions, so a camera's main and sub streams share one mask;
snapshots, the live page and the history keep the whole picture.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Region = tuple[float, float, float, float]  # x, y, width, height, each 0..1 of the frame


def region_error(region) -> str | None:
    """Why `region` is not a valid mask rectangle, or None."""
    if len(region) != 4:
        return f"{list(region)}: write [x, y, width, height] as fractions of the frame, e.g. [0, 0, 0.4, 0.1]"
    x, y, w, h = region
    if not (0 <= x < 1 and 0 <= y < 1 and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9):
        return (f"{list(region)}: x and y from 0 to below 1, width and height above 0, and the rectangle inside "
                "the frame (x + width <= 1, y + height <= 1)")
    return None


@dataclass(frozen=True)
class CaptionMask:
    regions: tuple[Region, ...]

    @classmethod
    def from_config(cls, regions) -> "CaptionMask":
        return cls(tuple(tuple(float(v) for v in r) for r in regions))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """A copy of `image` with the regions black (edges rounded outwards: a mask covers at least what it says)."""
        out = image.copy()
        height, width = image.shape[:2]
        for x, y, w, h in self.regions:
            left, top = int(x * width), int(y * height)
            right, bottom = int(np.ceil((x + w) * width)), int(np.ceil((y + h) * height))
            out[top:bottom, left:right] = 0
        return out

"""Reading image files for captioning and training, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageReadError(ValueError):
    """An image file is missing, unreadable or not an image."""


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 (H, W, 3), as OpenCV decodes it."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{path}: not a decodable image (corrupt or unsupported format); skipped")
    return image

"""The embedded default: a sample stream that needs no camera and no network.

Real photos that scikit-image ships (people, a cat, a coffee, a rocket) are
played as a looping 640x360 clip with a slow zoom, written at run time, so the
demo exercises the same file-camera, model, rules and publishers as a real
deployment.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# scikit-image sample photos; "camera" (a man with a camera on a tripod) and
# "astronaut" give the demo's person rule something to fire on.
PHOTOS = ("camera", "chelsea", "astronaut", "coffee", "rocket")
WIDTH, HEIGHT = 640, 360
DEMO_RULES = Path(__file__).resolve().parent / "assets" / "demo_rules.yaml"


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3][:, :, ::-1])  # RGB -> BGR


def _zoomed(image: np.ndarray, zoom: float) -> np.ndarray:
    """Crop to 16:9 around the centre, `zoom` >= 1 closer in, and resize to the stream size."""
    h, w = image.shape[:2]
    crop_w = min(w, h * WIDTH / HEIGHT) / zoom
    crop_h = crop_w * HEIGHT / WIDTH
    x0, y0 = int((w - crop_w) / 2), int((h - crop_h) / 2)
    crop = image[y0 : y0 + int(crop_h), x0 : x0 + int(crop_w)]
    return cv2.resize(crop, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def write_sample_clip(path: str | Path, fps: int = 5, seconds_per_photo: float = 4.0) -> Path:
    """An MJPG .avi of the sample photos; MJPG because the OpenCV wheel has no H.264 encoder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an MJPG clip here")
    try:
        frames_per_photo = int(fps * seconds_per_photo)
        for name in PHOTOS:
            image = photo(name)
            for i in range(frames_per_photo):
                writer.write(_zoomed(image, 1.0 + 0.15 * i / frames_per_photo))
    finally:
        writer.release()
    return path


def demo_config(clip: Path, mqtt_host: str | None = None, mqtt_port: int = 1883, http_port: int | None = None, spool_dir: str | None = None) -> dict:
    """The demo's config as a plain dict (validated by StreamcapConfig like any file)."""
    config: dict = {
        "device_id": "demo",
        "cameras": {"sample": {"url": str(clip), "kind": "file", "loop": True, "caption_interval_s": 2.0}},
        "model": {"backend": "auto", "max_batch": 4, "max_wait_ms": 50},
        "rules": {"paths": [str(DEMO_RULES)]},
        "outputs": {"console": True},
    }
    if mqtt_host:
        config["mqtt"] = {"host": mqtt_host, "port": mqtt_port}
        if spool_dir:
            config["mqtt"]["spool_dir"] = spool_dir
    if http_port:
        config["http"] = {"enabled": True, "port": http_port}
    return config

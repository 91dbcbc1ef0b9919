"""Encoder features for a whole split, extracted once and cached on disk.

Training never runs the CNN: the encoder is frozen, so each image's feature
grid is computed once, stored as float16 in a memory-mapped .npy, and reused
by every epoch and every later run with the same encoder and image list.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from streamcap.model.encoder import ImageEncoder
from streamcap.model.images import ImageReadError, read_image

log = logging.getLogger(__name__)


def _weights_digest(path: str) -> str:
    """Identity of the encoder's weights: size and mtime would miss a same-size replacement, so the bytes."""
    if not path:
        return "unknown-weights"
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_stem(encoder: ImageEncoder, image_ids: list[str]) -> str:
    """Same encoder, same weights, same image list: same cache; any of them different: a new one."""
    key = "\n".join([encoder.name, str(encoder.spec.input_size), _weights_digest(encoder.weights_file), *image_ids])
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return f"{encoder.name}-{len(image_ids)}-{digest}"


def cached_features(
    encoder: ImageEncoder,
    image_ids: list[str],
    image_paths: dict[str, Path],
    cache_dir: str | Path,
    batch_size: int = 32,
) -> tuple[np.ndarray, list[str]]:
    """Feature grids (N, P, D) float16 in `image_ids` order, and the ids that failed to read."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = _cache_stem(encoder, image_ids)
    array_path, meta_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if array_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return np.load(array_path, mmap_mode="r"), meta["unreadable"]

    with torch.no_grad():
        probe = encoder(torch.zeros(1, 3, encoder.spec.input_size, encoder.spec.input_size))
    grid_shape = tuple(probe.shape[1:])  # (P, D)
    partial = cache_dir / f"{stem}.partial.npy"
    features = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(image_ids), *grid_shape))
    unreadable: list[str] = []
    progress = tqdm(total=len(image_ids), desc=f"features {encoder.name}", unit="img")
    for start in range(0, len(image_ids), batch_size):
        chunk = image_ids[start : start + batch_size]
        frames, rows = [], []
        for offset, image_id in enumerate(chunk):
            try:
                frames.append(read_image(image_paths[image_id]))
                rows.append(start + offset)
            except ImageReadError as exc:
                log.warning("%s", exc)
                unreadable.append(image_id)
        if frames:
            with torch.no_grad():
                grid = encoder(encoder.preprocess(frames))  # (B, P, D)
            features[rows] = grid.numpy().astype(np.float16)
        progress.update(len(chunk))
    progress.close()
    features.flush()
    del features
    os.replace(partial, array_path)
    meta_path.write_text(json.dumps({"image_ids": image_ids, "unreadable": unreadable}))
    return np.load(array_path, mmap_mode="r"), unreadable

"""The inference backends and precisions a config file or command line may name: defined once.

The config schema (`model.backend`, `model.precision`), the command lines and
the backend selection (`streamcap.backends.select`) all read these, so a name
accepted in one place is accepted everywhere. This module imports nothing
heavy: the config is validated without torch.
"""
from __future__ import annotations

# What `auto` tries, in order; each name can also be asked for alone.
AUTO_CHAIN = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu", "torch-cpu")

BACKEND_CHOICES: dict[str, tuple[str, ...]] = {
    "auto": AUTO_CHAIN,
    "onnxruntime": ("onnxruntime-cuda", "onnxruntime-cpu"),
    "torch": ("torch-cuda", "torch-cpu"),
    **{name: (name,) for name in AUTO_CHAIN},
}

PRECISIONS = ("fp32", "fp16", "int8")

# The backends that run on an NVIDIA GPU: a checkpoint may ask for a larger
# encoder input on these than on a CPU box (`input_size_gpu` / `input_size_cpu`).
GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda")


def box_kind(backend: str) -> str:
    return "gpu" if backend in GPU_BACKENDS else "cpu"

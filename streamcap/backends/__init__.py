"""Inference backends behind one interface: TensorRT, ONNX Runtime, PyTorch.

    from streamcap.backends import load_captioner
    captioner = load_captioner(backend="auto")   # logs what it picked and why
    captioner.caption(frames_bgr)                # -> list[str]
"""
from streamcap.backends.base import BackendUnavailable, CaptionBackend, SearchCaptioner
from streamcap.backends.select import AUTO_CHAIN, CHOICES, LOADERS, load_captioner

__all__ = ["AUTO_CHAIN", "CHOICES", "LOADERS", "BackendUnavailable", "CaptionBackend", "SearchCaptioner", "load_captioner"]

"""Which hardware video decoders this box has, and what each camera's `decoder:` setting comes to here.

    available = box_decoders(library)           # {DecoderKind.nvdec: None | "why not", DecoderKind.jetson: ...}
    kind, why = resolve_decoder(DecoderKind.nvdec, available)   # (cpu, "this box has no NVIDIA device ...")

Probing happens once, at start (app.build), never in config validation:
- nvdec: an NVIDIA device node and a decoder library that can use it (PyAV's
  wheels bring FFmpeg with CUDA; OpenCV's FFmpeg is tried per camera, since
  only opening a stream tells).
- jetson: the nvv4l2decoder GStreamer plugin and an OpenCV built with GStreamer.
`auto` takes a hardware decoder only where it is known to work, else the CPU.
"""
from __future__ import annotations

import glob
import os

from streamcap.decoder_kinds import DecoderKind, DecoderLibrary

_NVIDIA_DEVICE = "/dev/nvidiactl"
_JETSON_PLUGIN = "/usr/lib/*/gstreamer-1.0/libgstnvvideo4linux2.so"


def _nvdec_missing(library: DecoderLibrary) -> str | None:
    if not os.path.exists(_NVIDIA_DEVICE):
        return f"this box has no NVIDIA GPU ({_NVIDIA_DEVICE} is missing)"
    if library == DecoderLibrary.pyav:
        from av.codec.hwaccel import hwdevices_available

        if "cuda" not in hwdevices_available():
            return "this PyAV's FFmpeg was built without CUDA"
    return None


def _jetson_missing() -> str | None:
    if not glob.glob(_JETSON_PLUGIN):
        return "this box has no Jetson decoder (GStreamer's nvv4l2decoder plugin is missing)"
    from streamcap.capture.video import has_gstreamer

    if not has_gstreamer():
        return "this OpenCV was built without GStreamer, which the Jetson decoder needs"
    return None


def box_decoders(library: DecoderLibrary) -> dict[DecoderKind, str | None]:
    """For each hardware decoder kind: None when this box can use it, else why not."""
    return {DecoderKind.nvdec: _nvdec_missing(library), DecoderKind.jetson: _jetson_missing()}


def resolve_decoder(requested: DecoderKind, available: dict[DecoderKind, str | None],
                    library: DecoderLibrary = DecoderLibrary.pyav) -> tuple[DecoderKind, str | None]:
    """(the decoder a camera uses, why it is not the one asked for); auto never explains its choice of CPU."""
    requested = DecoderKind(requested)
    if requested == DecoderKind.cpu:
        return DecoderKind.cpu, None
    if requested == DecoderKind.auto:
        if available.get(DecoderKind.jetson) is None:
            return DecoderKind.jetson, None
        if available.get(DecoderKind.nvdec) is None and library == DecoderLibrary.pyav:
            return DecoderKind.nvdec, None
        return DecoderKind.cpu, None
    why = available.get(requested)
    return (requested, None) if why is None else (DecoderKind.cpu, why)

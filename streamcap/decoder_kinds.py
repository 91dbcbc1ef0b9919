"""How a camera's video is decoded: the one definition the config, the readers and the metrics share.

    decoder   where:  auto (the box's hardware decoder if it has one, else the CPU), cpu, nvdec (NVIDIA), jetson
    library   with:   auto (PyAV if installed, else OpenCV), pyav, opencv
    mode      what:   keyframes (only key frames are decoded) or every_frame (all decoded, due ones converted)

A camera decodes key frames only when its stream's key-frame interval, measured
while connected, is no longer than its caption interval: every caption then
falls on a key frame and the frames in between are skipped before decoding.
"""
from __future__ import annotations

from streamcap.util.strenum import StrEnum


class DecoderKind(StrEnum):
    auto = "auto"
    cpu = "cpu"
    nvdec = "nvdec"  # NVIDIA's hardware decoder, through FFmpeg (PyAV's CUDA hwaccel, or OpenCV's)
    jetson = "jetson"  # the Jetson's nvv4l2decoder, through a GStreamer pipeline in OpenCV


class DecoderLibrary(StrEnum):
    auto = "auto"
    pyav = "pyav"  # FFmpeg through PyAV: demux and decode release the GIL; key flags per packet
    opencv = "opencv"  # FFmpeg (or GStreamer) inside OpenCV: the fallback where PyAV is not installed


class DecodeMode(StrEnum):
    keyframes = "keyframes"
    every_frame = "every_frame"

"""What kind of source a camera URL is: the one definition the config and the readers share.

    rtsp://, rtsps://        rtsp
    http://, https://        http (MJPEG or any stream FFmpeg reads)
    0, 1, /dev/video2        usb (a V4L2 device)
    "... ! appsink"          gstreamer (a pipeline; needs an OpenCV built with GStreamer)
    anything else            file (a path, or file://)

An explicit `kind:` must agree with the URL; `resolve_kind` says why when it does not.
"""
from __future__ import annotations

import re
from streamcap.util.strenum import StrEnum


class SourceKind(StrEnum):
    auto = "auto"
    rtsp = "rtsp"
    http = "http"
    file = "file"
    usb = "usb"
    gstreamer = "gstreamer"


SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_SCHEME_KINDS = {"rtsp": SourceKind.rtsp, "rtsps": SourceKind.rtsp, "http": SourceKind.http, "https": SourceKind.http,
                 "file": SourceKind.file}
_USB_RE = re.compile(r"^(?:\d{1,3}|/dev/video\d{1,3})$")


def usb_index(url: str) -> int:
    """`0` or `/dev/video0` -> 0."""
    return int(url.removeprefix("/dev/video"))


def infer_kind(url: str) -> SourceKind:
    """The kind `auto` stands for, or ValueError for an unsupported scheme."""
    match = SCHEME_RE.match(url)
    if match:
        scheme = match.group(1).lower()
        if scheme not in _SCHEME_KINDS:
            raise ValueError(
                f"unsupported URL scheme {scheme!r}; use rtsp://, rtsps://, http(s)://, a file path, a USB index, or kind: gstreamer"
            )
        return _SCHEME_KINDS[scheme]
    if _USB_RE.match(url):
        return SourceKind.usb
    if " ! " in url:
        return SourceKind.gstreamer
    return SourceKind.file


def resolve_kind(url: str, kind: SourceKind | str = SourceKind.auto) -> SourceKind:
    """The concrete kind of `url` (never auto); ValueError when `kind` and the URL disagree."""
    try:
        kind = SourceKind(kind)
    except ValueError:
        raise ValueError(f"unknown camera kind {kind!r}; use one of {', '.join(k.value for k in SourceKind)}") from None
    if kind == SourceKind.auto:
        return infer_kind(url)
    if kind == SourceKind.gstreamer:
        return kind
    if kind == SourceKind.usb and not _USB_RE.match(url):
        raise ValueError("kind usb needs a camera index such as 0, or a device such as /dev/video0")
    if kind in (SourceKind.rtsp, SourceKind.http):
        inferred = infer_kind(url) if SCHEME_RE.match(url) else SourceKind.file
        if inferred != kind:
            raise ValueError(f"kind {kind.value} needs a {kind.value}:// or {kind.value}s:// URL")
    if kind == SourceKind.file and SCHEME_RE.match(url) and infer_kind(url) != SourceKind.file:
        raise ValueError("kind file needs a file path, not a URL")
    return kind

"""A small RTSP server for tests and benchmarks (GStreamer's gst-rtsp-server).

Run it with Debian's /usr/bin/python3 (the venv's python cannot import gi):

    /usr/bin/python3 tests/integration/rtsp_server.py --port 8554 --clip car.mp4
    /usr/bin/python3 tests/integration/rtsp_server.py --port 8554 --pattern --count 4

It serves an H.264 MP4 (no re-encoding: filesrc ! qtdemux ! h264parse) or a
live test pattern (x264enc) at rtsp://127.0.0.1:PORT/stream, or at
/stream0 .. /streamN-1 with --count N, over TCP and UDP. --user/--password
turn on Basic auth (Digest with --digest). Each client gets its own pipeline, so every camera starts
the clip from the beginning. It prints "READY <url>" once listening and exits
non-zero if the port is taken (attach() only returns 0 then, silently).
"""
from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def launch_line(args: argparse.Namespace) -> str:
    if args.clip:
        # h264parse config-interval=-1 repeats SPS/PPS with every IDR so a client
        # that joins late (or reconnects) can decode at once.
        return (
            f'( filesrc location="{args.clip}" ! qtdemux ! h264parse config-interval=-1 '
            "! rtph264pay name=pay0 pt=96 )"
        )
    return (
        f"( videotestsrc is-live=true pattern={args.pattern_name} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        "! clockoverlay ! videoconvert "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def add_auth(server: GstRtspServer.RTSPServer, factories: list, user: str, password: str, digest: bool) -> None:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    if digest:  # what most IP cameras ask for
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    for factory in factories:
        factory.add_role_from_structure(
            Gst.Structure.from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="stream", help="mount point name, without the slash")
    parser.add_argument("--count", type=int, default=1, help="serve N mounts /<path>0 .. /<path>N-1")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--clip", help="an H.264 .mp4 file")
    source.add_argument("--pattern", action="store_true", help="a live videotestsrc pattern")
    parser.add_argument("--pattern-name", default="ball")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--digest", action="store_true", help="Digest auth instead of Basic")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    names = [args.path] if args.count == 1 else [f"{args.path}{i}" for i in range(args.count)]
    factories = []
    for name in names:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(args))
        factory.set_shared(False)
        mounts.add_factory(f"/{name}", factory)
        factories.append(factory)
    if args.user:
        add_auth(server, factories, args.user, args.password or "", args.digest)

    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port} (port taken?)", file=sys.stderr, flush=True)
        return 3
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    for name in names:
        print(f"READY rtsp://127.0.0.1:{args.port}/{name}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

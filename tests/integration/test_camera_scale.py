"""Many RTSP cameras on one box: parallel connects, one decoding thread each, key frames only, back after a restart.

The RTSP server is GStreamer's (tests/integration/rtsp_server.py) serving a real CCTV clip with a key frame
every second, without re-encoding. The model is the shipped one.
"""
from __future__ import annotations

import functools
import socket
import threading
import time
from pathlib import Path

import pytest
from rtsp_fixtures import videos_dir
from rtsp_fixtures import wait_for as wait_for_within

from streamcap.app import build
from streamcap.backends.select import load_captioner
from streamcap.capture import Batcher, CameraSource, CaptureHub, FrameSampler
from streamcap.config.schema import StreamcapConfig
from streamcap.messages import CameraState

pytestmark = pytest.mark.integration

WAIT_S = 60.0


def cctv_clip() -> Path:
    clip = videos_dir().parent / "cctv_clips" / "videos" / "motorway-lowres.mp4"  # 320x240, 25 fps, a key frame a second
    if not clip.is_file():
        pytest.skip(f"{clip} not found; set STREAMCAP_DATA to the folder with cctv_clips/")
    return clip


wait_for = functools.partial(wait_for_within, timeout_s=WAIT_S)


class SlowLink:
    """A TCP relay on a free loopback port that holds every new connection `delay_s` before relaying it:
    a camera far away. Cameras that connect one after another take `delay_s` each; in parallel, all of them together."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port, self.delay_s = upstream_port, delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name="slowlink", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        if self.stop.wait(self.delay_s):
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._spawn(self._pump, upstream, client)
        self._pump(client, upstream)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        try:
            while not self.stop.is_set():
                try:
                    data = source.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(2.0)
        self.listener.close()


def test_sixteen_cameras_connect_in_parallel_with_one_decoding_thread_each(rtsp_server):
    # given 16 RTSP cameras, each reached over a link that holds every connection for 1 s
    server = rtsp_server(str(cctv_clip()), count=16, path="cam")
    link = SlowLink(server.port, delay_s=1.0)
    urls = [url.replace(f":{server.port}/", f":{link.port}/") for url in server.urls]
    cams = {f"cam{i:02d}": CameraSource(f"cam{i:02d}", url, open_timeout_s=10, read_timeout_s=5, caption_interval_s=1.0)
            for i, url in enumerate(urls)}
    hub = CaptureHub(cams, {c: FrameSampler(1.0) for c in cams}, Batcher(max_batch=16, max_wait_ms=50))
    python_before = threading.active_count()
    native_before = len(list(Path("/proc/self/task").iterdir())) - python_before

    # when they all start at once
    hub.start()
    try:
        took_s = wait_for(lambda: all(c.state == CameraState.connected for c in cams.values()), "all 16 connected")
        wait_for(lambda: all(c.decoder_info.get("mode") == "keyframes" for c in cams.values()), "key frames only everywhere")
        native_during = len(list(Path("/proc/self/task").iterdir())) - threading.active_count()
        camera_threads = [t for t in threading.enumerate() if t.name.startswith("camera-")]
    finally:
        hub.stop()
        link.close()

    # then they connected together: one after another would take at least 16 x (probe + open) x 1 s = 32 s
    assert took_s < 16, f"16 cameras took {took_s:.1f} s to connect: they connect one after another"
    # and each camera has its one reader thread, which decodes: no decoder thread pool per camera
    assert len(camera_threads) == 16
    assert native_during - native_before <= 4, f"{native_during - native_before} threads outside Python for 16 cameras"


@pytest.fixture(scope="module")
def captioner():
    return load_captioner(backend="torch")


def test_an_rtsp_camera_killed_and_restarted_is_captioned_again(rtsp_server, captioner):
    # given a camera captioned once a second, decoding key frames only
    server = rtsp_server(str(cctv_clip()))
    config = StreamcapConfig.model_validate({
        "cameras": {"lane": {"url": server.url, "caption_interval_s": 1.0, "read_timeout_s": 2.0,
                             "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0}},
        "outputs": {"console": False},
    })
    app = build(config, captioner=captioner)
    metrics, camera = app.pipeline.metrics, app.pipeline.hub.cameras["lane"]

    def captions() -> float:
        return metrics.frames_captioned.labels("lane")._value.get()

    app.start()
    try:
        wait_for(lambda: captions() >= 2 and camera.decoder_info.get("mode") == "keyframes", "captions in keyframes mode")
        # when the camera dies
        server.kill()
        wait_for(lambda: camera.state in (CameraState.reconnecting, CameraState.down), "the camera to be seen lost")
        lost_at = captions()
        # and comes back on the same address
        server.restart()
        wait_for(lambda: captions() >= lost_at + 2 and camera.decoder_info.get("mode") == "keyframes",
                 "captions after the restart, in keyframes mode once the interval is measured again")
        # (the dispatch thread folds status events into /healthz within a quarter second)
        wait_for(lambda: (metrics.health()["cameras"]["lane"]["decoder"] or {}).get("mode") == "keyframes", "/healthz")
        health = metrics.health()
    finally:
        app.stop()

    # then it is captioned again, connected, and decodes key frames only again
    assert camera.decoder_info["mode"] == "keyframes"
    assert health["cameras"]["lane"]["state"] == "connected"
    assert health["cameras"]["lane"]["decoder"]["keyframe_interval_s"] == pytest.approx(1.0, abs=0.01)

"""Cameras against a real GStreamer RTSP server: frames, restarts, hangs, bad URLs.

Waits poll a condition up to a generous deadline (the box is shared with a
training job); nothing here asserts a speed.
"""
from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import pytest
from rtsp_fixtures import videos_dir
from rtsp_fixtures import wait_for as wait_for_within

from streamcap.capture import Batcher, CameraSource, CaptureHub, FrameSampler
from streamcap.messages import CameraReconnecting, CameraState, CameraStateChanged, StatusEvent

pytestmark = pytest.mark.integration

WAIT_S = 45.0


wait_for = functools.partial(wait_for_within, timeout_s=WAIT_S)


@pytest.fixture
def cameras():
    """Start CameraSources; every one is stopped and joined in teardown, before any server dies."""
    started: list[CameraSource] = []

    def make(camera_id: str, url: str, **options) -> CameraSource:
        options = {"open_timeout_s": 3.0, "read_timeout_s": 2.0, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0} | options
        camera = CameraSource(camera_id, url, **options)
        started.append(camera)
        camera.start()
        return camera

    yield make
    for camera in started:
        camera.request_stop()
    for camera in started:
        assert camera.stop(), f"camera {camera.camera_id} reader did not stop"


def frames_grow(camera: CameraSource, by: int = 10):
    start = camera.stats().frames_read
    return lambda: camera.stats().frames_read >= start + by


def test_served_clip_arrives_and_camera_is_connected(rtsp_server, cameras):
    # given
    server = rtsp_server("car-detection.mp4")

    # when
    camera = cameras("lot", server.url)
    wait_for(lambda: camera.stats().frames_read >= 20, "20 frames over RTSP")

    # then
    assert camera.state == CameraState.connected
    frame = camera.read_latest(timeout_s=5)
    assert frame.camera_id == "lot"
    assert frame.image.shape == (432, 768, 3), "the clip's own size, decoded"
    assert camera.stats().reconnects == 0


def test_killed_server_is_reported_and_frames_resume_after_restart(rtsp_server, cameras):
    # given
    server = rtsp_server(pattern=True)
    events: list[StatusEvent] = []
    camera = cameras("gate", server.url, on_status=events.append)
    wait_for(lambda: camera.state == CameraState.connected, "connected")

    # when
    server.kill()
    wait_for(lambda: camera.state in (CameraState.reconnecting, CameraState.down), "the loss to be reported")
    wait_for(lambda: camera.state == CameraState.down, "failed reconnects to mark it down")
    server.restart()
    wait_for(lambda: camera.state == CameraState.connected, "reconnect after restart on the same port")
    wait_for(frames_grow(camera), "frames to resume")

    # then
    states = [e.state.value for e in events if isinstance(e, CameraStateChanged)]
    assert states[:4] == ["connecting", "connected", "reconnecting", "down"], states
    assert states[-1] == "connected"
    assert camera.stats().reconnects >= 1
    assert any(isinstance(e, CameraReconnecting) for e in events)


def test_frozen_server_is_detected_as_hung_and_recovers_when_it_resumes(rtsp_server, cameras):
    # given: SIGSTOP keeps the TCP connection open with no data, like a hung camera
    server = rtsp_server(pattern=True)
    camera = cameras("porch", server.url, read_timeout_s=2.0)
    wait_for(lambda: camera.state == CameraState.connected, "connected")
    wait_for(frames_grow(camera), "steady frames")

    # when
    server.freeze()
    try:
        # OpenCV's defaults would block 30 s per read and fail after ~90 s;
        # with the read timeout the reader gives up after about 2 s.
        took = wait_for(lambda: camera.state != CameraState.connected, "the hang to be detected", timeout_s=20)
        detail = camera.detail
    finally:
        server.resume()
    wait_for(lambda: camera.state == CameraState.connected, "reconnect once the server resumes")
    wait_for(frames_grow(camera), "frames after the hang")

    # then
    assert "hung" in detail or "read failed" in detail, detail
    print(f"hang detected after {took:.1f} s (read_timeout_s=2.0)")


@pytest.mark.parametrize("digest", [False, True], ids=["basic-auth", "digest-auth"])
def test_unreachable_and_refused_cameras_go_down_while_the_others_keep_reading(rtsp_server, cameras, caplog, digest):
    # given: a server with auth, and four cameras pointing at it in various wrong ways
    server = rtsp_server(pattern=True, user="admin", password="s3cret-pw", digest=digest)
    closed_port = server.port + 1 if server.port < 65000 else server.port - 1
    caplog.set_level(logging.INFO, logger="streamcap.capture")
    events: list[StatusEvent] = []
    good = cameras("good", server.url_with("admin", "s3cret-pw"), on_status=events.append)
    broken = {
        "bad_creds": cameras("bad_creds", server.url_with("admin", "wrong-pw"), on_status=events.append),
        "bad_path": cameras("bad_path", server.url_with("admin", "s3cret-pw", path="nope"), on_status=events.append),
        "unreachable": cameras("unreachable", f"rtsp://admin:s3cret-pw@127.0.0.1:{closed_port}/stream", on_status=events.append),
    }

    # when
    wait_for(lambda: all(c.state == CameraState.down for c in broken.values()), "the three broken cameras down")
    wait_for(lambda: all(c.stats().reconnects >= 2 for c in broken.values()), "retries of the broken cameras")
    wait_for(frames_grow(good, by=30), "the good camera to keep reading")

    # then
    assert good.state == CameraState.connected
    for name, camera in broken.items():
        assert camera.stats().frames_read == 0, name
        assert "cannot open rtsp://***:***@127.0.0.1" in camera.detail, camera.detail
    assert "401 Unauthorized: check the user and password" in broken["bad_creds"].detail
    assert "404 Not Found: no stream at this path" in broken["bad_path"].detail
    assert "connection refused" in broken["unreachable"].detail
    said = [e.detail for e in events] + [r.getMessage() for r in caplog.records]
    assert not [line for line in said if "s3cret-pw" in line or "wrong-pw" in line], "credentials leaked"
    assert any("'unreachable'" in line and "down" in line for line in said)


def test_a_hung_camera_does_not_hold_up_other_cameras_connecting(rtsp_server, cameras):
    # given: a camera stuck opening a frozen server with a very long open timeout.
    # OpenCV serialises FFmpeg opens process-wide, so without the probe the
    # second camera could not open until the first gave up after 120 s.
    frozen, healthy = rtsp_server(pattern=True), rtsp_server(pattern=True)
    frozen.freeze()
    stuck = cameras("stuck", frozen.url, open_timeout_s=120.0)
    time.sleep(0.5)  # let it get into its open first

    # when
    fresh = cameras("fresh", healthy.url)
    wait_for(lambda: fresh.state == CameraState.connected, "the healthy camera to connect", timeout_s=45)

    # then
    assert stuck.state == CameraState.connecting, "still waiting on the frozen server"
    wait_for(frames_grow(fresh), "frames from the healthy camera")
    assert stuck.stop(timeout_s=30), "stop interrupts the probe instead of waiting out 120 s"


def test_hub_keeps_batching_one_camera_while_another_server_dies(rtsp_server):
    # given: two cameras on two servers behind one hub
    first, second = rtsp_server(pattern=True), rtsp_server(pattern=True)
    cams = {
        "one": CameraSource("one", first.url, open_timeout_s=3.0, read_timeout_s=2.0, reconnect_initial_s=0.2, reconnect_max_s=1.0),
        "two": CameraSource("two", second.url, open_timeout_s=3.0, read_timeout_s=2.0, reconnect_initial_s=0.2, reconnect_max_s=1.0),
    }
    hub = CaptureHub(cams, {name: FrameSampler(interval_s=0.2) for name in cams}, Batcher(max_batch=2, max_wait_ms=50))
    hub.start()
    try:
        wait_for(lambda: set(hub.states().values()) == {CameraState.connected}, "both connected")

        # when
        second.kill()
        wait_for(lambda: hub.states()["two"] != CameraState.connected, "camera two lost")
        from_one = 0
        deadline = time.monotonic() + WAIT_S
        while from_one < 5 and time.monotonic() < deadline:
            batch = hub.next_batch(timeout_s=1.0)
            from_one += sum(f.camera_id == "one" for f in batch.frames) if batch else 0
        state_two = hub.states()["two"]
    finally:
        assert hub.stop(), "a reader did not stop"

    # then
    assert from_one >= 5, "camera one kept reaching the batcher"
    assert state_two in (CameraState.reconnecting, CameraState.down)


def test_stop_while_the_camera_is_hung_joins_the_reader(rtsp_server):
    # given: the reader is blocked inside cap.read() on a frozen server
    server = rtsp_server(pattern=True)
    camera = CameraSource("hung", server.url, open_timeout_s=3.0, read_timeout_s=2.0)
    camera.start()
    try:
        wait_for(lambda: camera.state == CameraState.connected, "connected")
        server.freeze()

        # when
        joined = camera.stop()
    finally:
        camera.stop()
        server.resume()

    # then
    assert joined, "stop() must wait out the blocked read (bounded by read_timeout_s)"
    assert camera.state == CameraState.stopped


STOP_AND_EXIT = """
import sys, time
from streamcap.capture import CameraSource
camera = CameraSource("hung", sys.argv[1], open_timeout_s=3.0, read_timeout_s=2.0)
camera.start()
deadline = time.monotonic() + 40
while camera.stats().frames_read < 5 and time.monotonic() < deadline:
    time.sleep(0.05)
print("frames", camera.stats().frames_read, flush=True)
sys.stdin.readline()  # the test freezes the server, then says go
sys.exit(0 if camera.stop() else 1)
"""


def test_process_exits_cleanly_when_stopped_during_a_blocked_read(rtsp_server):
    # given: a separate Python process reading a camera whose server then freezes
    import subprocess
    import sys

    server = rtsp_server(pattern=True)
    proc = subprocess.Popen([sys.executable, "-c", STOP_AND_EXIT, server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        server.freeze()

        # when: stop() and exit while the reader sits in cap.read()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.resume()

    # then: 134 would mean the interpreter died under a thread still inside OpenCV
    assert first.startswith("frames") and int(first.split()[1]) >= 5, first
    assert code == 0, f"exit code {code}"


class MjpegHandler(BaseHTTPRequestHandler):
    """multipart/x-mixed-replace JPEGs, as IP cameras serve at /video.mjpg."""

    jpegs: list[bytes] = []

    def do_GET(self) -> None:
        if self.path != "/video.mjpg":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            for i in itertools.count():
                jpeg = self.jpegs[i % len(self.jpegs)]
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg))
                if self.server.stopping.wait(0.08):
                    return
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mjpeg_server():
    """An HTTP MJPEG camera in a thread on 127.0.0.1:<free port>, serving frames of a shared clip."""
    clip = videos_dir() / "pedestrians-campus.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found; set STREAMCAP_DATA to the folder with videos/")
    cap = cv2.VideoCapture(str(clip))
    MjpegHandler.jpegs = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(20)]
    cap.release()
    server = ThreadingHTTPServer(("127.0.0.1", 0), MjpegHandler)
    server.daemon_threads = True
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, name="mjpeg-server")
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_http_mjpeg_camera_delivers_frames_and_bad_path_goes_down(mjpeg_server, cameras):
    # given
    base = f"http://127.0.0.1:{mjpeg_server.server_address[1]}"

    # when
    camera = cameras("web", f"{base}/video.mjpg")
    missing = cameras("web_missing", f"{base}/nope.mjpg")
    wait_for(lambda: camera.stats().frames_read >= 10, "10 MJPEG frames")
    wait_for(lambda: missing.state == CameraState.down, "the 404 camera down")

    # then
    assert camera.state == CameraState.connected
    assert camera.read_latest(timeout_s=5).image.shape == (360, 480, 3)
    assert camera.kind == "http"

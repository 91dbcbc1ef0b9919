"""Real RTSP servers for tests and benchmarks (tests/integration/rtsp_server.py).

    def test_x(rtsp_server):
        server = rtsp_server("car-detection.mp4")     # or rtsp_server(pattern=True)
        server.url                                    # rtsp://127.0.0.1:<free port>/stream
        server.freeze(); server.resume()              # SIGSTOP / SIGCONT: a hung camera
        server.kill(); server.restart()               # same port

Each server is one process of Debian's /usr/bin/python3 (the only Python here
that can import gi), bound to 127.0.0.1 on a free port, killed by PID in
teardown. Clips are re-muxed once per session by ffmpeg into a long H.264 loop
(optionally scaled), so a served clip does not end during a test. Tests skip
with a reason when gi/gst-rtsp-server, ffmpeg or the shared videos are missing.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import pytest

SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
START_TIMEOUT_S = 20.0
APT_PACKAGES = (
    "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-tools gstreamer1.0-libav ffmpeg"
)


def videos_dir() -> Path:
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("STREAMCAP_DATA", repo.parent / "shared" / "data")) / "videos"


def wait_for(condition, what: str, timeout_s: float) -> float:
    """Poll until condition() holds; returns the seconds it took, fails naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@lru_cache(maxsize=1)
def rtsp_unavailable() -> str | None:
    """Why no RTSP server can run here, or None."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found; apt-get install -y {APT_PACKAGES}"
    probe = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return f"{SYSTEM_PYTHON} cannot import gi/GstRtspServer; apt-get install -y {APT_PACKAGES}"
    return None


_CLIP_CACHE = Path(tempfile.gettempdir()) / "streamcap-rtsp-clips"
_clip_lock = threading.Lock()


def prepared_clip(name: str, width: int | None = None, height: int | None = None, loops: int = 20) -> Path:
    """A shared clip (a name in videos/, or a path) as a long H.264 MP4 (looped `loops` times, optionally scaled), made once."""
    source = Path(name) if Path(name).is_absolute() else videos_dir() / name
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found; set STREAMCAP_DATA to the folder with videos/")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg not found; apt-get install -y ffmpeg")
    size = f"{width}x{height}" if width else "native"
    out = _CLIP_CACHE / f"{source.parent.parent.name}-{source.stem}-{size}-x{loops}.mp4"
    with _clip_lock:
        if out.is_file():
            return out
        _CLIP_CACHE.mkdir(parents=True, exist_ok=True)
        codec = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(source)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if codec == "h264" and not width:
            video = ["-c:v", "copy"]  # no re-encoding: fast, and the real camera's bitstream
        else:
            scale = ["-vf", f"scale={width}:{height}"] if width else []
            video = [*scale, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
        partial = out.with_suffix(".part.mp4")
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(source), *video, "-an", str(partial)],
            check=True, timeout=600,
        )
        partial.rename(out)
        return out


class RtspServer:
    """One rtsp_server.py process; `url` (or `urls` with count > 1) is what cameras open."""

    def __init__(
        self,
        clip: Path | None = None,
        *,
        port: int | None = None,
        count: int = 1,
        path: str = "stream",
        fps: int = 15,
        width: int = 640,
        height: int = 360,
        user: str | None = None,
        password: str | None = None,
        digest: bool = False,
        log_dir: Path | None = None,
    ) -> None:
        self.clip = clip
        self.port = port or free_port()
        self.count = count
        self.path = path
        self.args = ["--fps", str(fps), "--width", str(width), "--height", str(height)]
        if user:
            self.args += ["--user", user, "--password", password or ""] + (["--digest"] if digest else [])
        self.log_path = (log_dir or Path(tempfile.mkdtemp(prefix="streamcap-rtsp-"))) / f"rtsp-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.frozen = False
        names = [path] if count == 1 else [f"{path}{i}" for i in range(count)]
        self.urls = [f"rtsp://127.0.0.1:{self.port}/{name}" for name in names]

    @property
    def url(self) -> str:
        return self.urls[0]

    def url_with(self, user: str, password: str, path: str | None = None) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}/{path or self.path}"

    def start(self) -> RtspServer:
        source = ["--clip", str(self.clip)] if self.clip else ["--pattern"]
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--path", self.path, "--count", str(self.count), *source, *self.args]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
            ready = self._wait_ready(deadline)
            if ready:
                return self
            code = self.proc.poll()
            self.kill()
            # The old server's socket may linger for a moment after a restart: retry until the deadline.
            if code != 3 or time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server on port {self.port} did not start (exit {code}); see {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.3)

    def _wait_ready(self, deadline: float) -> bool:
        lines: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:
                lines.append(line)
                if sum(line.startswith("READY") for line in lines) == self.count:
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        return sum(line.startswith("READY") for line in lines) == self.count

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but no data flows, like a hung camera."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()  # by PID; SIGKILL works on a stopped process too
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc, self.frozen = None, False

    def restart(self) -> RtspServer:
        self.kill()
        return self.start()

    close = kill


@pytest.fixture
def rtsp_server(tmp_path):
    """Factory: rtsp_server("clip.mp4" | None, pattern=..., **RtspServer options) -> started RtspServer."""
    why = rtsp_unavailable()
    if why:
        pytest.skip(why)
    servers: list[RtspServer] = []

    def make(clip: str | None = None, *, pattern: bool = False, scale: tuple[int, int] | None = None, **options) -> RtspServer:
        if (clip is None) == (not pattern):
            raise ValueError("give a clip name or pattern=True")
        path = None
        if clip:
            try:
                path = prepared_clip(clip, *(scale or (None, None)))
            except FileNotFoundError as exc:
                pytest.skip(str(exc))
        server = RtspServer(path, log_dir=tmp_path, **options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()

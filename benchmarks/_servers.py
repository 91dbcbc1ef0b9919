"""Real servers for the benchmarks: mosquitto on a free loopback port, started and killed by PID."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto with persistence in `workdir`, so a persistent subscriber's queue survives restarts."""

    def __init__(self, workdir: Path, port: int | None = None, persistence: bool = False, acl: str | None = None):
        self.binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
        if self.binary is None:
            sys.exit("mosquitto not found: apt-get install -y mosquitto")
        self.port = port or free_port()
        self.dir = Path(workdir)
        self.log = self.dir / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {self.log}",
                 "log_type error", "log_type warning"]
        if persistence:
            # Saved after every change, so a SIGKILLed broker comes back with the subscriber's session and queue.
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1",
                      "autosave_on_changes true", "max_queued_messages 100000"]
        if acl is not None:
            self.acl = self.dir / "acl"
            self.acl.write_text(acl)
            lines.append(f"acl_file {self.acl}")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            # Started as root, mosquitto runs as the user `mosquitto`, which must reach and own its
            # folder: without that it cannot save (a SIGKILL then loses every session and queued message).
            import pwd

            user = pwd.getpwnam("mosquitto")
            for folder in (self.dir, *self.dir.parents):
                if folder.stat().st_uid == 0 and not folder.stat().st_mode & 0o001:
                    folder.chmod(folder.stat().st_mode | 0o001)  # traversal only: names stay unlistable
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.persistence_file = self.dir / "mosquitto.db" if persistence else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit("mosquitto did not start")
                time.sleep(0.02)

    def wait_saved(self, timeout_s: float = 10) -> None:
        """Exit unless the broker has written its persistence file (the benchmark's numbers rely on it)."""
        deadline = time.monotonic() + timeout_s
        while not self.persistence_file.exists():
            if time.monotonic() > deadline:
                sys.exit(f"mosquitto did not save {self.persistence_file}; its log: {self.log.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)

    def set_acl(self, text: str) -> None:
        """Rewrite the ACL and have the running broker reload it (SIGHUP), as an operator fixing it would."""
        self.acl.write_text(text)
        os.kill(self.proc.pid, signal.SIGHUP)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


def stop_process(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    """SIGTERM (a clean stop, as systemd does), SIGKILL if it is not gone within `timeout_s`."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen, int]:
    broker = Broker(workdir)
    broker.start()
    return broker.proc, broker.port

"""The deploy/ files, run for real outside a container: entrypoint, install script, systemd unit, compose, Dockerfiles.

No root, Docker engine or network is needed. A test whose tool is missing (shellcheck, systemd-analyze,
systemctl, docker compose, mosquitto, the venv's streamcap) skips and says which.
"""
from __future__ import annotations

import ast
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
INSTALL = DEPLOY / "install.sh"
UNIT = DEPLOY / "streamcap.service"
EXAMPLE = DEPLOY / "streamcap.example.yaml"
STREAMCAP = Path(sys.executable).with_name("streamcap")  # the real command, beside this Python
SECRETS = {"CAMERA_PASSWORD": "cam-s3cret", "MQTT_PASSWORD": "mqtt-s3cret"}
DOCKERFILES = {  # file: what its first FROM must be
    "Dockerfile": "python:3.11-slim-bookworm",
    "Dockerfile.cuda": "nvcr.io/nvidia/tensorrt:",
    "Dockerfile.jetson": "nvcr.io/nvidia/l4t-jetpack:r36.",
}

# Stands in for streamcap on PATH: one line per call (PID, $XDG_CACHE_HOME, arguments; tab-separated).
# `config ...` goes on to the real streamcap when REAL_STREAMCAP is set; `run` waits for SIGTERM when
# STUB_READY names a file to create once it waits.
STUB = r"""#!/usr/bin/env bash
{ printf '%s\t%s' "$$" "$XDG_CACHE_HOME"; printf '\t%s' "$@"; echo; } >> "$STUB_LOG"
if [ "${1:-}" = config ] && [ -n "${REAL_STREAMCAP:-}" ]; then exec "$REAL_STREAMCAP" "$@"; fi
if [ "${1:-}" = run ] && [ -n "${STUB_READY:-}" ]; then
  trap 'kill "$!"; echo TERM > "$STUB_READY.signal"; exit 0' TERM
  sleep 30 & touch "$STUB_READY"; wait "$!"
  exit 3
fi
"""


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def real_streamcap() -> Path:
    if not os.access(STREAMCAP, os.X_OK):
        pytest.skip(f"no streamcap command at {STREAMCAP} (scripts/install.sh makes .venv)")
    return STREAMCAP


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the deploy variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAP_") and k not in SECRETS}
    env.update(extra)
    return env


def write_clip(path: Path, frames: int = 8) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (64, 48))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    return path


@dataclass
class Box:
    config: Path
    data: Path
    env: dict[str, str]
    log: Path

    def calls(self) -> list[list[str]]:
        """One [PID, XDG_CACHE_HOME, *arguments] per call of the streamcap stub."""
        return [line.split("\t") for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture
def box(tmp_path) -> Box:
    """A container's layout in tmp: a config with one file camera, empty data folder, streamcap stub on PATH."""
    config_dir, data, bin_dir = tmp_path / "config", tmp_path / "data", tmp_path / "bin"
    for d in (config_dir, data, bin_dir):
        d.mkdir()
    write_clip(config_dir / "clip.avi")
    config = config_dir / "streamcap.yaml"
    config.write_text("device_id: deploy-test\ncameras:\n  yard:\n    url: clip.avi\n    loop: true\n"
                      "model: {backend: auto}\noutputs: {console: true}\n")
    stub = bin_dir / "streamcap"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = clean_env(STREAMCAP_CONFIG=str(config), STREAMCAP_SPOOL_DIR=str(data / "spool"), STREAMCAP_HISTORY_DIR=str(data / "history"),
                    XDG_CACHE_HOME=str(data / "cache"), STUB_LOG=str(tmp_path / "calls.tsv"),
                    PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return Box(config, data, env, tmp_path / "calls.tsv")


def entrypoint(args: list[str], env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=timeout_s)


# --- entrypoint ---------------------------------------------------------------------------------


def test_entrypoint_without_config_fails_with_one_line_naming_the_path(box):
    # given no config file where STREAMCAP_CONFIG points
    box.config.unlink()
    # when
    result = entrypoint([], box.env)
    # then
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"one line expected, got {lines}"
    assert str(box.config) in lines[0] and "mount a folder holding streamcap.yaml" in lines[0]
    assert box.calls() == [], "streamcap must not start without a config"


def test_entrypoint_checks_the_config_then_execs_streamcap_run(box):
    # given a real streamcap behind the stub for `config check`, and extra arguments
    box.env["REAL_STREAMCAP"] = str(real_streamcap())
    # when
    proc = subprocess.Popen([str(ENTRYPOINT), "--duration", "5"], env=box.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    # then
    assert proc.returncode == 0, err
    assert f"{box.config}: ok (1 cameras (1 enabled)" in out, "the real `config check` ran and passed"
    check, run = box.calls()
    assert check[2:] == ["config", "check", str(box.config)]
    assert run[2:] == ["run", "-c", str(box.config), "--duration", "5"], "extra arguments go to streamcap run"
    assert run[0] == str(proc.pid) != check[0], "streamcap run replaces the entrypoint (exec), the check does not"
    assert run[1] == str(box.data / "cache"), "XDG_CACHE_HOME reaches streamcap"
    assert (box.data / "spool").is_dir() and (box.data / "history").is_dir() and (box.data / "cache").is_dir()


def test_entrypoint_stops_at_config_errors_before_run(box):
    # given a config with an unknown key, checked by the real streamcap
    box.env["REAL_STREAMCAP"] = str(real_streamcap())
    box.config.write_text(box.config.read_text() + "mqtt:\n  host: broker\n  colour: blue\n")
    # when
    result = entrypoint([], box.env)
    # then
    assert result.returncode == 2, result.stderr
    assert re.search(rf"{re.escape(str(box.config))}:10:3: mqtt\.colour", result.stderr), result.stderr
    assert [call[2] for call in box.calls()] == ["config"], "run never starts on a bad config"


def test_entrypoint_passes_other_streamcap_commands_through_as_they_are(box):
    # given no config at the default place: commands other than run do not need it
    box.config.unlink()
    # when
    result = entrypoint(["config", "show", "/elsewhere/x.yaml"], box.env)
    # then
    assert result.returncode == 0, result.stderr
    (call,) = box.calls()
    assert call[2:] == ["config", "show", "/elsewhere/x.yaml"]


def test_entrypoint_fails_in_one_line_when_the_data_folder_cannot_be_written(box, tmp_path):
    # given a spool folder that cannot be made (its parent is a file)
    (tmp_path / "not-a-dir").write_text("")
    box.env["STREAMCAP_SPOOL_DIR"] = str(tmp_path / "not-a-dir" / "spool")
    # when
    result = entrypoint([], box.env)
    # then
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not-a-dir/spool is not writable" in result.stderr
    assert box.calls() == []


def test_sigterm_to_the_container_process_reaches_streamcap(box, tmp_path):
    # given streamcap (the stub) running under the entrypoint as the container's main process
    ready = tmp_path / "ready"
    box.env["STUB_READY"] = str(ready)
    proc = subprocess.Popen([str(ENTRYPOINT)], env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "streamcap run did not start"
            time.sleep(0.02)
        # when `docker stop` signals the process
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # then streamcap itself got it and exited cleanly
    assert code == 0
    assert (tmp_path / "ready.signal").read_text().strip() == "TERM"


@pytest.mark.parametrize("script", [ENTRYPOINT, INSTALL], ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck_and_are_executable(script):
    assert os.access(script, os.X_OK), f"{script.name} must be executable (the images COPY its mode)"
    result = subprocess.run([need("shellcheck"), "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- install.sh ---------------------------------------------------------------------------------


def install(root: Path, *options: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(INSTALL), "--root", str(root), *options], capture_output=True, encoding="utf-8",
                            errors="replace", timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def unit_values(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value it is given, in order (Environment= and friends repeat)."""
    values: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith(("#", ";")) and "=" in line:
            key, value = line.split("=", 1)
            values.setdefault((section, key.strip()), []).append(value.strip())
    return values


def unit_environment(values) -> dict[str, str]:
    return dict(item.split("=", 1) for item in values[("Service", "Environment")])


def test_install_lays_out_the_files_where_the_unit_expects_them(tmp_path):
    # given an empty fake root
    root = tmp_path / "root"
    # when
    result = install(root, "--no-systemctl", "--skip-venv", "--prefix", "/srv/streamcap")
    # then the unit runs the prefix's venv, and every file it names is there
    unit = unit_values((root / "etc/systemd/system/streamcap.service").read_text())
    start = shlex.split(unit[("Service", "ExecStart")][0])
    assert start[:3] == ["/srv/streamcap/venv/bin/streamcap", "run", "-c"]
    assert shlex.split(unit[("Service", "ExecStartPre")][0])[0] == start[0]
    assert (root / start[3].lstrip("/")).read_text() == EXAMPLE.read_text()
    env_file = root / unit[("Service", "EnvironmentFile")][0].lstrip("-/")
    assert env_file.stat().st_mode & 0o777 == 0o600, "the secrets file is for systemd (root) only"
    rules = root / unit_environment(unit)["STREAMCAP_RULES_DIR"].lstrip("/")
    assert sorted(p.name for p in rules.iterdir()) == sorted(p.name for p in (REPO / "rules").glob("*.yaml"))
    assert {p.relative_to(root).parts[0] for p in root.rglob("*")} == {"etc"}, "nothing outside /etc without the venv"
    for line in ("skipped: venv", "skipped: systemctl", "skipped: user streamcap", "created ", "installed "):
        assert f"install.sh: {line}" in result.stdout, result.stdout


def test_install_with_the_default_prefix_installs_the_unit_as_shipped(tmp_path):
    # when
    install(tmp_path, "--no-systemctl", "--skip-venv")
    # then
    assert (tmp_path / "etc/systemd/system/streamcap.service").read_text() == UNIT.read_text()


def test_install_never_overwrites_the_admins_config_rules_or_secrets(tmp_path):
    # given a box that was installed and then edited
    etc = tmp_path / "etc/streamcap"
    (etc / "rules").mkdir(parents=True)
    mine = {etc / "streamcap.yaml": "device_id: mine\n", etc / "rules/mine.yaml": "[]\n", etc / "streamcap.env": "X=1\n"}
    for path, text in mine.items():
        path.write_text(text)
    # when it is installed again
    result = install(tmp_path, "--no-systemctl", "--skip-venv")
    # then
    assert {path: path.read_text() for path in mine} == mine
    assert sorted(p.name for p in (etc / "rules").iterdir()) == ["mine.yaml"]
    assert result.stdout.count("install.sh: kept existing") == 3, result.stdout


def test_install_enables_the_unit_with_systemctl_under_the_root(tmp_path):
    # given systemctl (offline with --root: no running systemd needed)
    need("systemctl")
    # when
    result = install(tmp_path, "--skip-venv")
    # then
    link = tmp_path / "etc/systemd/system/multi-user.target.wants/streamcap.service"
    assert link.is_symlink() and os.readlink(link) == "/etc/systemd/system/streamcap.service", result.stdout


def test_install_refuses_an_unknown_option(tmp_path):
    result = subprocess.run([str(INSTALL), "--root", str(tmp_path), "--sikp-venv"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown option --sikp-venv" in result.stderr
    assert not (tmp_path / "etc").exists(), "nothing is installed after a bad option"


def test_installed_config_passes_config_check_in_the_units_environment(tmp_path):
    # given the installed example config and rules, and the unit's environment moved under the fake root
    install(tmp_path, "--no-systemctl", "--skip-venv")
    unit = unit_values((tmp_path / "etc/systemd/system/streamcap.service").read_text())
    env = clean_env(**SECRETS, STREAMCAP_RULES_DIR=str(tmp_path) + unit_environment(unit)["STREAMCAP_RULES_DIR"])
    # when
    result = subprocess.run([str(real_streamcap()), "config", "check", str(tmp_path / "etc/streamcap/streamcap.yaml")],
                            env=env, capture_output=True, text=True, timeout=120)
    # then every example rule file is found and valid for the example cameras
    assert result.returncode == 0, result.stderr
    assert f"rules from {len(list((REPO / 'rules').glob('*.yaml')))} files" in result.stdout


# --- the systemd unit ---------------------------------------------------------------------------


def app_stop_timeout_s() -> float:
    """The default of App.stop(timeout_s=...) in streamcap/app.py: how long streamcap takes at most to stop."""
    for node in ast.walk(ast.parse((REPO / "streamcap" / "app.py").read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "stop":
            named = dict(zip([a.arg for a in node.args.args][-len(node.args.defaults):], node.args.defaults))
            if "timeout_s" in named:
                return float(ast.literal_eval(named["timeout_s"]))
    pytest.fail("no App.stop(timeout_s=...) default in streamcap/app.py")


@pytest.mark.parametrize("key, value", [
    ("User", "streamcap"),
    ("SupplementaryGroups", "video"),  # USB cameras
    ("StateDirectory", "streamcap"),
    ("CacheDirectory", "streamcap"),
    ("Restart", "on-failure"),
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("CapabilityBoundingSet", ""),
])
def test_unit_sets(key, value):
    assert unit_values(UNIT.read_text()).get(("Service", key)) == [value]


def test_unit_keeps_devices_and_points_streamcap_at_its_directories():
    unit = unit_values(UNIT.read_text())
    env = unit_environment(unit)
    assert ("Service", "PrivateDevices") not in unit, "USB cameras and GPUs are devices"
    assert env["XDG_CACHE_HOME"] == "/var/cache/" + unit[("Service", "CacheDirectory")][0]
    assert env["STREAMCAP_SPOOL_DIR"].startswith("/var/lib/" + unit[("Service", "StateDirectory")][0] + "/")
    assert env["STREAMCAP_HISTORY_DIR"].startswith("/var/lib/" + unit[("Service", "StateDirectory")][0] + "/")
    assert env["STREAMCAP_LOG_DIR"] == "/var/log/" + unit[("Service", "LogsDirectory")][0]
    assert float(unit[("Service", "TimeoutStopSec")][0]) > app_stop_timeout_s()


def test_example_config_uses_the_units_and_the_images_folders():
    from streamcap.config.load import load_config

    # given the environment the unit and the CPU image give streamcap
    unit_env = unit_environment(unit_values(UNIT.read_text()))
    image_env = dockerfile_env(DEPLOY / "Dockerfile")
    for env, spool, jsonl, rules, history in [
        (unit_env, unit_env["STREAMCAP_SPOOL_DIR"], "/var/log/streamcap/events.jsonl", "/etc/streamcap/rules/*.yaml",
         unit_env["STREAMCAP_HISTORY_DIR"]),
        (image_env, "/data/spool", "/data/log/events.jsonl", "/config/rules/*.yaml", "/data/history"),
    ]:
        # when
        config = load_config(EXAMPLE, env={**env, **SECRETS})
        # then
        assert str(config.mqtt.spool_dir) == spool
        assert str(config.outputs.jsonl) == jsonl
        assert config.rules.paths == [rules]
        assert str(config.history.path) == history


def test_systemd_analyze_verify_accepts_the_installed_unit(tmp_path):
    # given the unit installed with a prefix that holds an executable streamcap
    analyze = need("systemd-analyze")
    prefix = tmp_path / "prefix"
    install(tmp_path / "root", "--no-systemctl", "--skip-venv", "--prefix", str(prefix))
    (prefix / "venv/bin").mkdir(parents=True)
    (prefix / "venv/bin/streamcap").write_text("#!/bin/sh\n")
    (prefix / "venv/bin/streamcap").chmod(0o755)
    # when
    result = subprocess.run([analyze, "verify", str(tmp_path / "root/etc/systemd/system/streamcap.service")],
                            capture_output=True, encoding="utf-8", errors="replace", timeout=60)
    # then: no error, and no warning (an unknown key or a bad value is only a warning, with exit 0)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_systemd_analyze_security_rates_the_unit_well_hardened():
    analyze = need("systemd-analyze")
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(UNIT)],
                            capture_output=True, encoding="utf-8", errors="replace", timeout=60)
    if "--offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for streamcap\.service: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5, result.stdout


# --- compose.yaml and mosquitto.conf ------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def mounts(service: dict) -> dict[str, str]:
    """Target -> source of a service's `SOURCE:TARGET[:MODE]` volumes (a source may hold `${VAR:-default}`)."""
    pairs = [re.fullmatch(r"(.+?):(/[^:]*)(?::\w+)?", volume).groups() for volume in service["volumes"]]
    return {target: source for source, target in pairs}


def test_compose_services_use_files_that_exist():
    services = compose()["services"]
    named_volumes = set(compose()["volumes"])
    assert set(services) == {"streamcap", "streamcap-gpu", "mosquitto"}
    for name in ("streamcap", "streamcap-gpu"):
        service = services[name]
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert (context / service["build"]["dockerfile"]).is_file(), name
        volumes = mounts(service)
        assert volumes["/data"] in named_volumes, f"{name}: the spool and caches live on a named volume"
        assert f"{volumes['/config']}:/config:ro" in service["volumes"], f"{name}: the config is mounted read-only"
        assert "MQTT_HOST=mosquitto" in service["environment"]
        assert float(service["stop_grace_period"].rstrip("s")) > app_stop_timeout_s()
    gpu = services["streamcap-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["dockerfile"] == "deploy/Dockerfile.cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    mosquitto = mounts(services["mosquitto"])
    assert (DEPLOY / mosquitto["/mosquitto/config/mosquitto.conf"]).is_file()
    assert mosquitto["/mosquitto/data"] in named_volumes


def docker_compose_config() -> list[str] | None:
    """The command that validates a compose file here: Compose v2, else Debian's docker-compose 1.x."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates_with_docker_compose():
    tool = docker_compose_config()
    if tool is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    text = (DEPLOY / "compose.yaml").read_text()
    if tool == ["docker-compose"]:
        text = re.sub(r"(?m)^name: .*\n", "", text)  # Compose 1.x predates the top-level name
    result = subprocess.run([*tool, "--project-directory", ".", "-f", "-", "--profile", "gpu", "config"], input=text,
                            cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) == {"streamcap", "streamcap-gpu", "mosquitto"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mosquitto_conf_runs_a_broker_that_keeps_retained_status_across_a_restart():
    # given Debian's mosquitto with deploy/mosquitto.conf, only its port and data folder moved for the test
    binary = need("mosquitto")
    import paho.mqtt.client as mqtt

    conf_text = (DEPLOY / "mosquitto.conf").read_text()
    assert re.search(r"(?m)^listener 1883$", conf_text) and re.search(r"(?m)^persistence true$", conf_text)
    data_in_compose = mounts(compose()["services"]["mosquitto"])
    assert re.search(r"(?m)^persistence_location /mosquitto/data/$", conf_text) and "/mosquitto/data" in data_in_compose
    work = Path(tempfile.mkdtemp(prefix="streamcap-deploy-mosquitto-"))
    port = free_port()
    text = re.sub(r"(?m)^listener 1883$", f"listener {port} 127.0.0.1", conf_text)
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {work}/", text)
    if os.geteuid() == 0:  # started as root, mosquitto drops to its own user, which must write the data folder
        user = pwd.getpwnam("mosquitto") if "mosquitto" in {u.pw_name for u in pwd.getpwall()} else pwd.getpwuid(0)
        os.chown(work, user.pw_uid, user.pw_gid)
    (work / "mosquitto.conf").write_text(text)

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([binary, "-c", str(work / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"mosquitto exited with {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen"
                time.sleep(0.05)

    def client() -> mqtt.Client:  # as streamcap connects: username and password from the example config
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"deploy-test-{port}")
        c.username_pw_set("streamcap", "mqtt-s3cret")
        accepted = threading.Event()
        c.on_connect = lambda _c, _u, _f, reason, _p: accepted.set() if not reason.is_failure else None
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert accepted.wait(10), "the broker did not accept streamcap's connection"
        return c

    broker = start()
    try:
        c = client()
        c.publish("streamcap/deploy-test/status", "online", qos=1, retain=True).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()
        # when the broker restarts (SIGTERM saves the persistence file, as `docker compose restart` does)
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
        broker = start()
        got: list[bytes] = []
        arrived = threading.Event()
        c = client()
        c.on_message = lambda _c, _u, msg: (got.append(msg.payload), arrived.set())
        c.subscribe("streamcap/+/status", qos=1)
        arrived.wait(5)
        c.disconnect()
        c.loop_stop()
    finally:
        broker.kill()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    # then
    assert got == [b"online"], "the retained status survives the restart"


# --- Dockerfiles --------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"(?m)^\s*#.*\n", "", dockerfile.read_text())
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip()]


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """ENV of the final stage."""
    steps = instructions(dockerfile)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    env: dict[str, str] = {}
    for op, args in steps[last_from:]:
        if op == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_files_that_exist_and_starts_with_the_entrypoint(name):
    steps = instructions(DEPLOY / name)
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    first_from = next(a for op, a in steps if op == "FROM").split()[0]
    assert re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], first_from).startswith(DOCKERFILES[name])
    copies = [shlex.split(a) for op, a in steps if op == "COPY"]
    destinations = {}
    for copy in copies:
        if any(part.startswith("--from=") for part in copy):
            continue
        *sources, destination = [part for part in copy if not part.startswith("--")]
        for source in sources:  # the build context is the repository root
            assert (REPO / source).exists(), f"{name}: COPY {source}: no such file"
            destinations[source] = destination
    (entry,) = [json.loads(a) for op, a in steps if op == "ENTRYPOINT"]
    assert entry == [destinations["deploy/entrypoint.sh"]], "ENTRYPOINT is deploy/entrypoint.sh, as copied"
    users = [a for op, a in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "streamcap does not run as root in the container"
    env = dockerfile_env(DEPLOY / name)
    entrypoint_defaults = dict(re.findall(r"(?m)^(?:export )?\w+=\$\{(\w+):-([^}]+)\}$", ENTRYPOINT.read_text()))
    assert env["XDG_CACHE_HOME"] == entrypoint_defaults["XDG_CACHE_HOME"] == "/data/cache"
    assert env["STREAMCAP_SPOOL_DIR"] == entrypoint_defaults["STREAMCAP_SPOOL_DIR"] == "/data/spool"
    assert env["STREAMCAP_HISTORY_DIR"] == entrypoint_defaults["STREAMCAP_HISTORY_DIR"] == "/data/history"
    assert env["STREAMCAP_CONFIG"] == entrypoint_defaults["STREAMCAP_CONFIG"]


@pytest.mark.parametrize("name, index", [
    ("Dockerfile", "https://download.pytorch.org/whl/cpu"),
    ("Dockerfile.cuda", "${TORCH_INDEX}"),
    ("Dockerfile.jetson", "${TORCH_INDEX}"),
])
def test_dockerfile_takes_torch_only_from_its_own_index(name, index):
    steps = instructions(DEPLOY / name)
    installs = [a for op, a in steps if op == "RUN" for a in re.split(r"&&|\|\|", a) if "pip install" in a]
    with_torch = [i for i in installs if re.search(r"\btorch\b", i)]
    assert with_torch, f"{name} installs torch"
    for command in with_torch:
        words = shlex.split(command)
        assert words[words.index("--index-url") + 1] == index, command
    if name == "Dockerfile.jetson":
        args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
        assert "jetson" in args["TORCH_INDEX"] and "jp6" in args["TORCH_INDEX"], "NVIDIA's JetPack 6 builds"


def test_the_files_the_dockerfiles_copy_build_a_package_with_the_model(tmp_path):
    # given the project files the Dockerfiles COPY into /src, less the local exports they delete
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "streamcap", src / "streamcap", ignore=shutil.ignore_patterns("__pycache__", "*-onnx"))
    # when pip builds the package from them, as `pip install /src[onnx]` does
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path / "wheels"), str(src)], capture_output=True, text=True, timeout=300)
    # then
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("streamcap-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "streamcap/assets/default.pt" in names, "the shipped model is in the package"
    assert "streamcap = streamcap.__main__:main" in entry_points

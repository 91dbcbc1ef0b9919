"""Config loading: defaults, line-accurate errors, ${ENV} substitution, secrets never printed."""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from streamcap.__main__ import main
from streamcap.config.load import ConfigError, load_config
from streamcap.config.schema import CameraConfig, SourceKind, StreamcapConfig
from streamcap.util.redact import redact_url

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "streamcap.example.yaml"
EXAMPLE_ENV = {"CAMERA_PASSWORD": "cam-s3cret", "MQTT_PASSWORD": "mqtt-s3cret"}


def write(tmp_path: Path, text: str, name: str = "streamcap.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_example_config_loads():
    # given the shipped example and its secrets in the environment
    # when
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    # then
    assert config.device_id == "site-a-box1"
    assert set(config.cameras) == {"gate", "fence_north", "front_door", "loading_bay", "parking_east", "lobby_usb"}
    assert config.cameras["gate"].resolved_kind == SourceKind.rtsp
    assert config.cameras["front_door"].resolved_kind == SourceKind.http
    assert config.cameras["lobby_usb"].resolved_kind == SourceKind.usb
    assert "lobby_usb" not in config.enabled_cameras
    assert config.mqtt is not None and config.mqtt.password.get_secret_value() == "mqtt-s3cret"
    assert config.rules.paths == [str(REPO / "rules" / "*.yaml")], "rule globs are relative to the config file"


def test_minimal_config_gets_defaults(tmp_path):
    # given
    path = write(tmp_path, """
        cameras:
          yard:
            url: clips/yard.mp4
    """)
    # when
    config = load_config(path, env={})
    # then
    yard = config.cameras["yard"]
    assert yard.resolved_kind == SourceKind.file
    assert yard.url == str(tmp_path / "clips" / "yard.mp4")
    assert (yard.caption_interval_s, yard.open_timeout_s, yard.reconnect_max_s) == (1.0, 5.0, 2.0)
    assert config.mqtt is None and config.outputs.console and not config.http.enabled
    assert config.model.max_batch == 8 and config.timezone == "UTC"


def test_empty_file_is_all_defaults(tmp_path):
    config = load_config(write(tmp_path, "# nothing yet\n"), env={})
    # the default history folder is relative to the file, like every relative path in it
    assert config.history.path == tmp_path / ".streamcap" / "history"
    assert config.model_copy(update={"history": StreamcapConfig().history}) == StreamcapConfig()


BAD_CONFIGS = [
    # (yaml, expected line:col, expected dotted path, fragment of the message)
    ("cameras:\n  gate:\n    url: rtsp://h/s\n    fps: 30\n", "4:5", "cameras.gate.fps", "unknown key"),
    ("cameras:\n  Gate:\n    url: rtsp://h/s\n", "2:3", "cameras.Gate", "lowercase"),
    ("cameras:\n  gate:\n    kind: rtsp\n", "2:3", "cameras.gate.url", "required key is missing"),
    ("cameras:\n  gate:\n    url: ftp://h/s\n", "3:5", "cameras.gate.url", "unsupported URL scheme 'ftp'"),
    ("cameras:\n  gate:\n    url: clip.mp4\n    kind: rtsp\n", "3:5", "cameras.gate.url", "kind rtsp needs"),
    ("cameras:\n  gate:\n    url: 0\n    caption_interval_s: 0\n", "4:5", "cameras.gate.caption_interval_s", "greater than 0"),
    ("cameras:\n  gate:\n    url: 0\n    scene_change_threshold: 1.5\n", "4:5", "cameras.gate.scene_change_threshold", "less than or equal to 1"),
    ("cameras:\n  gate:\n    url: 0\n    reconnect_initial_s: 10\n    reconnect_max_s: 5\n", "2:3", "cameras.gate", "reconnect_max_s must be >="),
    ("timezone: Mars/Olympus\n", "1:1", "timezone", "unknown time zone"),
    ("device_id: Box 1\n", "1:1", "device_id", "lowercase"),
    ("model:\n  backend: tpu\n", "2:3", "model.backend", "'tensorrt'"),
    ("model:\n  precision: fp8\n", "2:3", "model.precision", "'fp16'"),
    ("model:\n  input_size: 300\n", "2:3", "model.input_size", "multiple of 32"),
    ("model:\n  input_size: 1024\n", "2:3", "model.input_size", "less than or equal to 640"),
    ("mqtt:\n  port: 1883\n", "1:1", "mqtt.host", "required key is missing"),
    ("mqtt:\n  host: b\n  port: lots\n", "3:3", "mqtt.port", "valid integer"),
    ("mqtt:\n  host: b\n  qos_alarm: 3\n", "3:3", "mqtt.qos_alarm", "less than or equal to 2"),
    ("mqtt:\n  host: b\n  password: x\n", "1:1", "mqtt", "password needs username"),
    ("mqtt:\n  host: b\n  prefix: a/#\n", "3:3", "mqtt.prefix", "no '#'"),
    ("mqtt:\n  host: b\n  prefix: a//b\n", "3:3", "mqtt.prefix", "empty levels"),
    ("mqtt:\n  host: b\n  homeassistant:\n    prefix: home/assistant\n", "4:5", "mqtt.homeassistant.prefix", "must be one MQTT topic level"),
    ("device_id: Box 1\n", "1:1", "device_id", "ids must be lowercase"),
    ("mqtt:\n  host: b\n  tls:\n    keyfile: k.pem\n", "3:3", "mqtt.tls", "keyfile needs certfile"),
    ("http:\n  port: 70000\n", "2:3", "http.port", "less than or equal to 65535"),
    ("rules:\n  paths: rules/*.yaml\n", "2:3", "rules.paths", "valid list"),
    ("outputs:\n  console: maybe\n", "2:3", "outputs.console", "valid boolean"),
    ("camera:\n  gate:\n    url: 0\n", "1:1", "camera", "unknown key"),
]


@pytest.mark.parametrize("text,position,path,fragment", BAD_CONFIGS)
def test_errors_name_file_line_col_and_path(tmp_path, text, position, path, fragment):
    # given
    config_file = write(tmp_path, text)
    # when
    with pytest.raises(ConfigError) as raised:
        load_config(config_file, env={})
    # then
    problems = raised.value.problems
    expected_prefix = f"{config_file}:{position}: {path}: "
    assert any(p.startswith(expected_prefix) and fragment in p for p in problems), f"wanted {expected_prefix}...{fragment} in {problems}"


def test_all_problems_are_reported_not_only_the_first(tmp_path):
    # given three independent mistakes
    path = write(tmp_path, """
        device_id: BAD
        cameras:
          gate:
            url: rtsp://h/s
            fps: 5
        http:
          port: 0
    """)
    # when
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    # then
    lines = [p.split(": ")[0].split(":")[1] for p in raised.value.problems]
    assert lines == ["1", "5", "7"], raised.value.problems


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "cameras:\n  gate:\n    url: [rtsp://h\n  yard: {\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert raised.value.problems[0].startswith(f"{path}:4:"), raised.value.problems
    assert "invalid YAML" in raised.value.problems[0]


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "cameras:\n  gate:\n    url: 0\n  gate:\n    url: 1\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert raised.value.problems == [f"{path}:4:3: duplicate key 'gate' (first on line 2)"]


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- gate\n- yard\n")
    with pytest.raises(ConfigError, match=r":1:1: the config must be a mapping"):
        load_config(path, env={})


@pytest.mark.parametrize(
    "value,env,expected",
    [
        ("${HOST}", {"HOST": "broker.lan"}, "broker.lan"),
        ("${HOST:-localhost}", {}, "localhost"),
        ("${HOST:-localhost}", {"HOST": "b"}, "b"),
        ("mqtt-${SITE}-${ROOM}", {"SITE": "a", "ROOM": "b"}, "mqtt-a-b"),
        ("$${HOST}", {"HOST": "b"}, "${HOST}"),
        ("${EMPTY:-}x", {}, "x"),
    ],
)
def test_env_substitution(tmp_path, value, env, expected):
    path = write(tmp_path, f"mqtt:\n  host: \"{value}\"\n")
    assert load_config(path, env=env).mqtt.host == expected


def test_env_substitution_keeps_types_coercible(tmp_path):
    path = write(tmp_path, "mqtt:\n  host: b\n  port: ${PORT}\n")
    assert load_config(path, env={"PORT": "8883"}).mqtt.port == 8883


def test_missing_env_var_names_file_line_and_variable(tmp_path):
    # given
    path = write(tmp_path, "mqtt:\n  host: b\n  username: u\n  password: ${MQTT_PASSWORD}\n")
    # when
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    # then
    assert raised.value.problems == [
        f"{path}:4:13: environment variable MQTT_PASSWORD is not set; export it or write ${{MQTT_PASSWORD:-default}}"
    ]


def test_env_is_read_from_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMCAP_TEST_HOST", "from-env")
    path = write(tmp_path, "mqtt:\n  host: ${STREAMCAP_TEST_HOST}\n")
    assert load_config(path).mqtt.host == "from-env"


def test_secrets_never_in_repr_str_or_errors(tmp_path, caplog):
    # given a config whose camera URL and MQTT password carry secrets
    path = write(tmp_path, """
        cameras:
          gate:
            url: rtsp://admin:${CAM_PW}@10.0.0.5/live
          yard:
            url: ftp://admin:${CAM_PW}@10.0.0.6/live
        mqtt:
          host: b
          username: u
          password: ${MQTT_PW}
    """)
    env = {"CAM_PW": "hunter2cam", "MQTT_PW": "hunter2mqtt"}
    # when the config is wrong (ftp), the error must not carry the password
    with pytest.raises(ConfigError) as raised:
        load_config(path, env=env)
    # then
    assert "hunter2" not in str(raised.value)
    # when it is right
    path.write_text(path.read_text().replace("ftp://", "rtsp://"))
    config = load_config(path, env=env)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("streamcap.test").info("config: %s / %r / %s", config, config, config.cameras["gate"])
    # then
    for text in (repr(config), str(config), caplog.text, config.cameras["gate"].display_url):
        assert "hunter2" not in text
    assert config.cameras["gate"].url == "rtsp://admin:hunter2cam@10.0.0.5/live", "the real URL is still usable"
    assert config.mqtt.password.get_secret_value() == "hunter2mqtt"


def test_validation_error_hides_inputs():
    with pytest.raises(ValueError) as raised:
        CameraConfig(url="ftp://admin:hunter2@h/x")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("rtsp://admin:pw@10.0.0.5:554/s", "rtsp://***:***@10.0.0.5:554/s"),
        ("rtsps://user@host/s", "rtsps://***:***@host/s"),
        ("cannot open rtsp://a:b@h/x after 3 tries", "cannot open rtsp://***:***@h/x after 3 tries"),
        ("http://cam/video.mjpg?user=a&password=pw&x=1", "http://cam/video.mjpg?user=a&password=***&x=1"),
        ("rtspsrc location=rtsp://h/s user-id=admin user-pw=pw ! decodebin", "rtspsrc location=rtsp://h/s user-id=admin user-pw=*** ! decodebin"),
        ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
        ("/videos/a@b.mp4", "/videos/a@b.mp4"),
        ("", ""),
    ],
)
def test_redact_url(text, expected):
    assert redact_url(text) == expected


@pytest.mark.parametrize(
    "url,kind,expected",
    [
        ("rtsp://h/s", "auto", SourceKind.rtsp),
        ("RTSPS://h/s", "auto", SourceKind.rtsp),
        ("https://h/v.mjpg", "auto", SourceKind.http),
        (2, "auto", SourceKind.usb),
        ("/data/clip.mp4", "auto", SourceKind.file),
        ("file:///data/clip.mp4", "auto", SourceKind.file),
        ("videotestsrc ! videoconvert ! appsink", "auto", SourceKind.gstreamer),
        ("rtspsrc location=rtsp://h/s ! decodebin ! appsink", "gstreamer", SourceKind.gstreamer),
        ("/dev/video2", "auto", SourceKind.usb),
        ("/dev/video2", "usb", SourceKind.usb),
        ("1", "usb", SourceKind.usb),
    ],
)
def test_source_kind_is_one_definition_for_the_config_and_the_readers(url, kind, expected):
    from streamcap.capture.source import CameraSource

    config = CameraConfig(url=url, kind=kind)
    assert config.resolved_kind == expected
    assert CameraSource.from_config("cam", config).kind == expected


@pytest.mark.parametrize("field,value,fragment", [
    ("caption_interval_s", ".inf", "finite number"),
    ("open_timeout_s", ".nan", "finite number"),
    ("read_timeout_s", "1e309", "finite number"),
    ("reconnect_max_s", "99999999", "less than or equal to 3600"),
    ("caption_interval_s", "-1", "greater than 0"),
])
def test_numbers_must_be_finite_and_in_range(tmp_path, field, value, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(f"cameras:\n  gate:\n    url: rtsp://h/s\n    {field}: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(f"{path}:4:5: cameras.gate.{field}: ")
    assert fragment in err.value.problems[0], err.value.problems


def test_an_unset_variable_does_not_hide_the_other_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  host: broker\n  username: u\n  password: ${NOPE}\n  port: 99999\ncameras:\n  gate:\n    url: rtsp://h/s\n    fps: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    problems = err.value.problems
    assert any(":4:13: environment variable NOPE is not set" in p for p in problems)
    assert any(":5:3: mqtt.port:" in p for p in problems) and any(":9:5: cameras.gate.fps: unknown key" in p for p in problems)
    assert [p.split(":")[1] for p in problems] == ["4", "5", "9"], "in file order"


def test_config_is_frozen():
    config = StreamcapConfig()
    with pytest.raises(ValueError):
        config.device_id = "other"


def test_every_field_has_a_description():
    # given every model reachable from the top-level config
    models, seen = [StreamcapConfig], set()
    # when / then
    while models:
        model = models.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(field.annotation, "__args__", ()) + (field.annotation,):
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    models.append(arg)
    assert len(seen) >= 7


def test_cli_config_check_ok(capsys, monkeypatch):
    # given
    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    # when
    code = main(["config", "check", str(EXAMPLE)])
    # then
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith(f"{EXAMPLE}: ok (6 cameras (5 enabled), ")
    assert f"rules from {len(list((REPO / 'rules').glob('*.yaml')))} files" in out.out
    assert "s3cret" not in out.out + out.err


def test_the_example_checks_cleanly_on_first_contact_and_keeps_its_state_in_the_users_home(capsys, monkeypatch,
                                                                                          tmp_path):
    # given a user who exported nothing (no secrets, none of the deploy folders)
    for key in (*EXAMPLE_ENV, "STREAMCAP_SPOOL_DIR", "STREAMCAP_LOG_DIR", "STREAMCAP_HISTORY_DIR", "STREAMCAP_RULES_DIR",
                "MQTT_HOST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    # when they check the example, as the README says
    code = main(["config", "check", str(EXAMPLE)])
    # then it is ok, and what it writes goes under their home, not /var
    out = capsys.readouterr()
    assert code == 0, out.err
    config = load_config(EXAMPLE, env={"HOME": str(tmp_path)})
    assert config.mqtt.spool_dir == tmp_path / ".local/state/streamcap/spool"
    assert config.outputs.jsonl == tmp_path / ".local/state/streamcap/events.jsonl"
    assert config.history.path == tmp_path / ".local/state/streamcap/history"


def test_cli_config_check_errors_exit_2(tmp_path, capsys):
    path = write(tmp_path, "cameras:\n  gate:\n    url: rtsp://h/s\n    fps: 30\n")
    code = main(["config", "check", str(path)])
    out = capsys.readouterr()
    assert code == 2
    assert f"{path}:4:5: cameras.gate.fps: unknown key" in out.err


def test_cli_config_check_reports_rule_file_problems(tmp_path, capsys):
    # given a valid config whose rule names a camera it does not have
    (tmp_path / "r.yaml").write_text("- id: r\n  cameras: [yard]\n  triggers:\n    - trigger: caption\n      any: [dog]\n")
    path = write(tmp_path, "cameras:\n  gate:\n    url: 0\nrules:\n  paths: [r.yaml]\n")
    # when
    code = main(["config", "check", str(path)])
    # then
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path / 'r.yaml'}:2:13: rule r: cameras: unknown camera 'yard'" in err


def test_cli_config_show_masks_secrets(capsys, monkeypatch):
    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    assert main(["config", "show", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "rtsp://***:***@192.168.1.21" in out

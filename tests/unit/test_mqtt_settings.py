"""MqttSettings from the pydantic MqttConfig: every field carried, the secret unwrapped."""
from __future__ import annotations

import pytest

from streamcap.publish.mqtt_settings import MqttSettings

schema = pytest.importorskip("streamcap.config.schema")


def test_from_config_carries_every_field():
    # given
    cfg = schema.MqttConfig(
        host="broker.lan", port=8883, prefix="site", username="cam", password="s3cret-value",
        tls={"ca": "/etc/ca.pem", "certfile": "/etc/c.pem", "keyfile": "/etc/k.pem", "insecure": True},
        keepalive_s=20, qos_caption=1, qos_alarm=2, qos_status=0, spool_dir="/var/spool/sc",
        spool_max_messages=50, publish_snapshots=False,
    )
    # when
    s = MqttSettings.from_config(cfg, "box1")
    # then
    assert (s.host, s.port, s.prefix, s.device_id, s.username, s.password) == (
        "broker.lan", 8883, "site", "box1", "cam", "s3cret-value")
    assert (s.tls_enabled, s.tls_ca, s.tls_certfile, s.tls_keyfile, s.tls_insecure) == (
        True, "/etc/ca.pem", "/etc/c.pem", "/etc/k.pem", True)
    assert (s.keepalive_s, s.qos_caption, s.qos_alarm, s.qos_status) == (20, 1, 2, 0)
    assert (s.spool_dir, s.spool_max_messages, s.publish_snapshots) == ("/var/spool/sc", 50, False)
    assert s.client_id == "streamcap-box1"
    assert "s3cret-value" not in repr(s)


def test_plain_config_has_no_tls():
    # given
    cfg = schema.MqttConfig(host="127.0.0.1")
    # when
    s = MqttSettings.from_config(cfg, "box1")
    # then
    assert not s.tls_enabled and s.password is None


@pytest.mark.parametrize("field, value", [("qos_alarm", 3), ("qos_caption", -1), ("alarm_window", 0)])
def test_bad_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        MqttSettings(**{field: value})

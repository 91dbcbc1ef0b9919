"""Integration fixtures: real servers started by the tests, killed by PID in teardown."""
from mqtt_fixtures import mosquitto, mosquitto_auth, mosquitto_binary, mosquitto_tls, subscriber_factory  # noqa: F401 (fixtures)
from rtsp_fixtures import rtsp_server  # noqa: F401 (fixture)

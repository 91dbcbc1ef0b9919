"""Integration fixtures: real servers started by the tests, killed by PID in teardown."""
from rtsp_fixtures import rtsp_server  # noqa: F401 (fixture)

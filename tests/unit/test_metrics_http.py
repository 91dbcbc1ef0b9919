"""Metrics registry, /metrics and /healthz on a real loopback HTTP server."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from streamcap.http import MetricsServer
from streamcap.messages import (
    CameraReconnecting, CameraState, CameraStateChanged, DropCause, FramesDropped, PublisherError, PublisherState,
    PublisherStatus,
)
from streamcap.metrics import Metrics

EXPECTED_NAMES = [
    "streamcap_frames_read_total", "streamcap_frames_captioned_total", "streamcap_camera_reconnects_total",
    "streamcap_camera_state", "streamcap_drops_total", "streamcap_batch_size_bucket",
    "streamcap_latency_seconds_bucket", "streamcap_alarms_raised_total", "streamcap_captions_published_total",
    "streamcap_alarms_published_total", "streamcap_publish_errors_total", "streamcap_mqtt_connected",
    "streamcap_mqtt_reconnects_total", "streamcap_spool_depth", "streamcap_spool_dropped_total",
    "streamcap_rules_seconds_bucket", "streamcap_publisher_state",
]


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


@pytest.fixture
def served():
    metrics = Metrics()
    server = MetricsServer(metrics, host="127.0.0.1", port=0)
    server.start()
    try:
        yield metrics, server
    finally:
        server.stop()


def touch_everything(m: Metrics) -> None:
    m.frames_read.labels(camera="gate").inc()
    m.note_last_frame("gate", 1_764_064_885.0)
    m.frames_captioned.labels(camera="gate").inc()
    m.camera_reconnects.labels(camera="gate").inc()
    m.set_camera_state("gate", CameraState.connected)
    m.count_drop("batcher", DropCause.captioner_behind, 3, "gate")
    m.observe_rules(0.002)
    m.set_publisher_state("mqtt", PublisherState.connected)
    m.batch_size.observe(4)
    m.latency_seconds.labels(stage="capture_to_caption").observe(0.3)
    m.alarms_raised.labels(camera="gate", rule="person_at_gate").inc()
    m.captions_published.labels(publisher="mqtt").inc()
    m.alarms_published.labels(publisher="mqtt").inc()
    m.publish_errors.labels(publisher="mqtt", call="publish_caption").inc()
    m.set_mqtt_state("connected")
    m.mqtt_reconnects.inc()
    m.set_spool_depth(3)
    m.spool_dropped.inc()


def test_metrics_endpoint_lists_every_metric(served):
    # given
    metrics, server = served
    touch_everything(metrics)
    # when
    status, content_type, body = get(f"{server.url}/metrics")
    # then
    assert status == 200 and content_type.startswith("text/plain")
    missing = [name for name in EXPECTED_NAMES if name not in body]
    assert not missing, f"not exported: {missing}"
    assert 'streamcap_camera_state{camera="gate",streamcap_camera_state="connected"} 1.0' in body
    assert "process_cpu_seconds_total" not in body, "the private registry must not carry the global collectors"


@pytest.mark.parametrize(
    "cameras, mqtt, expected",
    [
        ({}, None, "ok"),
        ({"gate": CameraState.connected}, "connected", "ok"),
        ({"gate": CameraState.connected, "yard": CameraState.reconnecting}, "connected", "degraded"),
        ({"gate": CameraState.connected}, "disconnected", "degraded"),
        ({"gate": CameraState.down}, None, "degraded"),
    ],
)
def test_healthz_is_ok_only_when_cameras_and_broker_are_up(served, cameras, mqtt, expected):
    # given
    metrics, server = served
    for camera, state in cameras.items():
        metrics.set_camera_state(camera, state)
    if mqtt is not None:
        metrics.set_mqtt_state(mqtt)
    # when
    status, content_type, body = get(f"{server.url}/healthz")
    # then
    doc = json.loads(body)
    assert status == 200 and content_type == "application/json"
    assert doc["status"] == expected
    assert {c: v["state"] for c, v in doc["cameras"].items()} == {c: str(s) for c, s in cameras.items()}
    assert (doc["mqtt"] is None) == (mqtt is None)


def test_healthz_reports_last_frame_time_and_spool_depth(served):
    # given
    metrics, server = served
    metrics.note_last_frame("gate", 1_764_064_885.25)
    metrics.set_mqtt_state("connected")
    metrics.set_spool_depth(7)
    # when
    doc = json.loads(get(f"{server.url}/healthz")[2])
    # then
    last = datetime.fromisoformat(doc["cameras"]["gate"]["last_frame_time"])
    assert last.tzinfo is not None and last.timestamp() == 1_764_064_885.25
    assert doc["mqtt"] == {"state": "connected", "detail": "", "spool_depth": 7}
    assert doc["publishers"] == {"mqtt": {"state": "connected", "detail": ""}}


def test_unknown_path_is_404(served):
    # given
    _, server = served
    # when
    with pytest.raises(urllib.error.HTTPError) as err:
        get(f"{server.url}/nope")
    # then
    assert err.value.code == 404


def test_stop_joins_the_thread_and_frees_the_port():
    # given
    server = MetricsServer(Metrics(), port=0)
    server.start()
    port = server.port
    thread = server._thread
    # when
    server.stop()
    # then
    assert not thread.is_alive()
    again = MetricsServer(Metrics(), port=port)
    again.start()  # the same port binds again
    again.stop()


def test_port_in_use_is_one_clear_error():
    # given
    first = MetricsServer(Metrics(), port=0)
    first.start()
    try:
        # when
        with pytest.raises(OSError) as err:
            MetricsServer(Metrics(), port=first.port).start()
        # then
        assert f"127.0.0.1:{first.port}" in str(err.value) and "http.port" in str(err.value)
    finally:
        first.stop()


@pytest.mark.parametrize(
    "event, sample, labels, value",
    [
        (CameraReconnecting("gate", 1, "refused", 0.0), "streamcap_camera_reconnects_total", {"camera": "gate"}, 1),
        (FramesDropped("batcher", DropCause.captioner_behind, 57, "gate"), "streamcap_drops_total",
         {"stage": "batcher", "cause": "captioner_behind", "camera": "gate"}, 57),
        (CameraStateChanged("gate", CameraState.down, "gone", 0.0), "streamcap_camera_state",
         {"camera": "gate", "streamcap_camera_state": "down"}, 1),
        (PublisherStatus("mqtt", PublisherState.refused, "not authorized"), "streamcap_publisher_state",
         {"publisher": "mqtt", "streamcap_publisher_state": "refused"}, 1),
        (PublisherError("mqtt", "publish_alarm", "OSError: disk full"), "streamcap_publish_errors_total",
         {"publisher": "mqtt", "call": "publish_alarm"}, 1),
    ],
)
def test_status_events_fold_into_metrics_by_type(event, sample, labels, value):
    # given
    metrics = Metrics()
    # when
    metrics.observe_status(event)
    # then the count is the event's count, under bounded labels (never a running total as a label)
    assert metrics.registry.get_sample_value(sample, labels) == value


def test_a_failed_publisher_makes_health_failed_and_slow_rules_degraded():
    metrics = Metrics()
    metrics.set_publisher_state("mqtt", PublisherState.failed, "cannot write the spool")
    assert metrics.health()["status"] == "failed"
    metrics = Metrics()
    metrics.observe_rules(0.5)
    health = metrics.health()
    assert health["status"] == "degraded" and health["rules"] == {"slow": True, "slowest_ms": 500.0}


def test_the_batch_size_histogram_covers_max_batch_up_to_256():
    from streamcap.config.schema import ModelConfig

    metrics = Metrics()
    largest = ModelConfig.model_fields["max_batch"].metadata[-1].le
    metrics.batch_size.observe(200)
    assert largest == 256
    assert metrics.registry.get_sample_value("streamcap_batch_size_bucket", {"le": "128.0"}) == 0
    assert metrics.registry.get_sample_value("streamcap_batch_size_bucket", {"le": f"{largest}.0"}) == 1

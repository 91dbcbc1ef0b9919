"""Composition root: a validated config in, a ready Pipeline out.

Reads like the boot order: metrics, cameras, model, rules, publishers, HTTP.
Probing the hardware (which backend loads) happens here, not in config
validation, and fails with a one-line reason.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from streamcap.backends.select import load_captioner
from streamcap.capture.hub import build_hub
from streamcap.masks import CaptionMask
from streamcap.config.schema import StreamcapConfig
from streamcap.history.query import History
from streamcap.history.store import HistoryUnavailable, preflight as history_preflight
from streamcap.history.writer import HistoryRecorder
from streamcap.http import Auth, MetricsServer
from streamcap.messages import DropCause
from streamcap.metrics import Metrics
from streamcap.util.bounded_http import Limits
from streamcap.util.queues import BoundedQueue, Overflow
from streamcap.pipeline import Pipeline
from streamcap.publish.base import PublisherSet
from streamcap.publish.console import ConsolePublisher, preflight_jsonl
from streamcap.publish.homeassistant import HomeAssistantDiscovery
from streamcap.publish.mqtt import MqttPublisher, preflight
from streamcap.rules.watch import build_rules
from streamcap.snapshots import SnapshotStore
from streamcap.web.live import LivePage

log = logging.getLogger("streamcap.app")


@dataclass
class App:
    pipeline: Pipeline
    http: MetricsServer | None

    def start(self) -> None:
        if self.http:
            self.http.start()
            log.info("live page, metrics and health at %s", self.http.url)
        self.pipeline.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            self.pipeline.stop(timeout_s)
        finally:
            if self.http:
                self.http.stop()


def build(config: StreamcapConfig, captioner=None, console_stream=None, max_pending_captions: int = 256) -> App:
    if config.mqtt is not None:
        preflight(config.mqtt)  # first and fast: a box that cannot deliver alarms must not start looking healthy
    if config.outputs.jsonl is not None:
        preflight_jsonl(config.outputs.jsonl)
    history, history_off = (config.history, "") if config.history.enabled else (None, "history.enabled is false")
    if history is not None:
        try:
            history_preflight(history.path)
        except HistoryUnavailable as exc:
            if "path" in history.model_fields_set:
                raise  # a folder the config names must work
            # The default folder (beside the config file) may be read-only: the box runs, without a history.
            log.warning("%s; running without a history", exc)
            history, history_off = None, str(exc)
    metrics = Metrics()
    if history is None:
        metrics.set_history_state("off", history_off)
    # Status events are small and rate-limited at their source; the bound only guards against a stuck dispatch thread.
    status_events = BoundedQueue("status", 10_000, Overflow.drop_oldest,
                                 on_drop=lambda event: metrics.count_drop("status", DropCause.backlog))

    if captioner is None:
        m = config.model
        captioner = load_captioner(
            model_path=m.path, backend=m.backend, beam_size=m.beam_size, length_penalty=m.length_penalty,
            precision=m.precision, max_batch=m.max_batch, encoder_weights=m.encoder_weights, input_size=m.input_size,
        )
    hub = build_hub(config.cameras, max_batch=config.model.max_batch, max_wait_ms=config.model.max_wait_ms, on_status=status_events.put,
                    decode=config.decode)
    snapshots = SnapshotStore(max_bytes=config.snapshots.memory_mb << 20)
    spec = getattr(captioner, "spec", None)
    concepts = spec.concept_names if spec is not None else None
    engine, watcher = build_rules(config, known_concepts=concepts, snapshots=snapshots.jpeg)

    publishers = []
    # MQTT first: an alarm is in the spool before any other output shows it, so a crash in between
    # can leave a spooled alarm unprinted, never a printed alarm unspooled.
    rules_listeners = []
    if config.mqtt is not None:
        mqtt_publisher = MqttPublisher(config.mqtt, config.device_id, metrics=metrics, on_status=status_events.put)
        publishers.append(mqtt_publisher)
        if config.mqtt.homeassistant.enabled:
            discovery = HomeAssistantDiscovery(config.mqtt.homeassistant.prefix, mqtt_publisher.topics, config.device_id,
                                               list(config.enabled_cameras), engine.rules)
            discovery.attach(mqtt_publisher)
            rules_listeners.append(discovery.rules_changed)
    if config.outputs.console or config.outputs.jsonl:
        publishers.append(ConsolePublisher(stream=console_stream, jsonl_path=config.outputs.jsonl, metrics=metrics, console=config.outputs.console))
    live = None
    if config.http.enabled and config.http.page:
        live = LivePage(config.device_id, list(config.enabled_cameras), snapshots, decoder_info=hub.decoder_info)
        publishers.append(live)
    if history is not None:  # fed like a publisher: the dispatch thread only queues, one writer thread writes
        publishers.append(HistoryRecorder(history, metrics, snapshots))
    publisher_set = PublisherSet(publishers, metrics, on_status=status_events.put)

    pipeline = Pipeline(hub, captioner, engine, watcher, publisher_set, metrics, status_events,
                        max_pending_captions=max_pending_captions, snapshots=snapshots, on_rules_changed=rules_listeners,
                        caption_masks={camera_id: CaptionMask.from_config(camera.mask)
                                       for camera_id, camera in config.enabled_cameras.items() if camera.mask})
    http = None
    if config.http.enabled:
        h = config.http
        limits = Limits(max_connections=h.max_connections, max_streams=h.max_event_streams, header_timeout_s=h.header_timeout_s)
        http = MetricsServer(metrics, h.host, h.port, live=live, auth=Auth.from_config(h.auth), limits=limits,
                             allowed_hosts=h.allowed_hosts, history=History(history.path) if history is not None else None)
    log.info(
        "streamcap %s: %d camera(s), model %s on %s, %d rule(s), outputs: %s",
        config.device_id, len(hub.cameras), captioner.model_name, getattr(captioner, "name", "torch"),
        len(engine.rules), ", ".join(p.name for p in publishers) or "none",
    )
    return App(pipeline, http)

"""PublishRefusals: what the broker said no to, per topic, counted, logged once and reported in /healthz.

With MQTT 5, paho calls `on_publish` with the PUBACK's reason code before it
marks the message published. `note` keeps the refusals (reason >= 0x80) by
message id on paho's thread; whoever owns the message (the alarm sender, or
the publisher for retained messages) `take`s its verdict once it is published,
keeps a refused alarm in the spool and calls `refused(topic, ...)`. A refused
topic makes /healthz `failed` with the topic and reason code until a publish on
it is accepted again (`accepted`). One log line per topic and reason, one when
it clears; `streamcap_mqtt_refused_total{reason}` counts every refusal.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

from streamcap.metrics import Metrics
from streamcap.publish.mqtt_client import reason_text, refused

log = logging.getLogger(__name__)

MAX_UNCLAIMED = 10_000  # verdicts nobody took (a message paho dropped): forget the oldest beyond this
PROBLEM = "publish_refused"


class PublishRefusals:
    def __init__(self, metrics: Metrics, client_id: str) -> None:
        self._metrics = metrics
        self._client_id = client_id
        self._lock = threading.Lock()
        self._by_mid: collections.OrderedDict[int, object] = collections.OrderedDict()
        self._topics: dict[str, dict] = {}

    def note(self, mid: int, reason_code) -> None:
        """paho's thread, from on_publish: remember a refusal until its owner takes it."""
        if not refused(reason_code):
            return
        with self._lock:
            self._by_mid[mid] = reason_code
            while len(self._by_mid) > MAX_UNCLAIMED:
                self._by_mid.popitem(last=False)

    def take(self, mid: int):
        """The refusal of this published message, or None if the broker accepted it."""
        with self._lock:
            return self._by_mid.pop(mid, None)

    def refused(self, topic: str, reason_code, kept: str) -> None:
        """Report a refused publish on `topic`; `kept` says what became of the message."""
        reason = reason_text(reason_code)
        self._metrics.mqtt_refused.labels(reason=str(reason_code)).inc()
        now = time.time()
        with self._lock:
            record = self._topics.get(topic)
            fresh = record is None or record["reason"] != reason
            if fresh:
                record = self._topics[topic] = {"reason": reason, "count": 0, "since": now}
            record["count"] += 1
            count, since = record["count"], record["since"]
        detail = (f"the broker refused {count} publish(es) on {topic}: {reason}; {kept}; check the broker's ACL "
                  f"for client id {self._client_id}")
        if fresh:
            log.error("mqtt: the broker refused a publish on %s: %s; %s; check the broker's ACL (acl_file) for client "
                      "id %s and its user", topic, reason, kept, self._client_id)
        self._metrics.set_problem(PROBLEM, "failed", subject=topic, topic=topic, reason=str(reason_code),
                                  reason_code=getattr(reason_code, "value", None), count=count, since=since,
                                  detail=detail)

    def accepted(self, topic: str) -> None:
        """A publish on `topic` was acknowledged: it is no longer refused."""
        with self._lock:
            record = self._topics.pop(topic, None)
        if record is not None:
            log.warning("mqtt: the broker accepts publishes on %s again (%d were refused)", topic, record["count"])
            self._metrics.set_problem(PROBLEM, None, subject=topic)

    @property
    def topics(self) -> list[str]:
        with self._lock:
            return sorted(self._topics)

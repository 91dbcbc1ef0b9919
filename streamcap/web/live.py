"""LivePage: what the live web page shows, kept as a publisher so it sees exactly what MQTT sees.

The dispatch thread hands it every caption, alarm message and camera state
(through PublisherSet, like any publisher). It keeps, per camera, the latest
caption with its concepts, the camera state and the alarms in progress, and
the last RECENT_ALARMS alarm messages with their snapshots; and it fans each
change out to the page's live connections (server-sent events), each with a
bounded queue (DROP_OLDEST: a stalled browser never holds up the box).

Nothing here ever holds a camera URL or a credential: the page shows camera
ids, states and captions only.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass
from typing import Callable

from streamcap.messages import Alarm, AlarmType, CameraState, Caption
from streamcap.metrics import iso_time
from streamcap.publish.payloads import alarm_doc, caption_doc, state_doc
from streamcap.snapshots import SnapshotStore
from streamcap.util.queues import BoundedQueue, Overflow

RECENT_ALARMS = 50
CLIENT_QUEUE = 200


@dataclass
class _Camera:
    state: dict
    caption: dict | None = None
    frame_id: int | None = None


class LivePage:
    name = "web"

    def __init__(self, device_id: str, cameras: list[str], snapshots: SnapshotStore | None = None,
                 decoder_info: Callable[[str], dict] | None = None):
        self.device_id = device_id
        self.snapshots = snapshots
        self._decoder_info = decoder_info  # how each camera decodes (CaptureHub.decoder_info): shown in its tile
        self._lock = threading.Lock()
        self._cameras = {c: _Camera(state_doc(c, CameraState.connecting, None)) for c in cameras}
        self._recent: collections.deque[dict] = collections.deque(maxlen=RECENT_ALARMS)
        self._snapshots: dict[str, bytes] = {}  # message id -> JPEG, for the alarms in _recent
        self._active: dict[str, dict] = {}  # alarm id -> its latest message, while it lasts
        self._clients: list[BoundedQueue] = []
        self.closed = threading.Event()

    # --- Publisher ----------------------------------------------------------------
    def start(self) -> None:
        pass

    def publish_caption(self, caption: Caption) -> None:
        doc = caption_doc(caption)
        with self._lock:
            camera = self._cameras.get(caption.camera_id)
            if camera is None:
                return
            camera.caption, camera.frame_id = doc, caption.frame_id
        self._send("caption", {**doc, "frame_url": self.frame_url(caption.camera_id, caption.frame_id)})

    def publish_alarm(self, alarm: Alarm) -> None:
        doc = alarm_doc(alarm, None)
        doc["snapshot_url"] = f"/alarms/{alarm.alarm_id}/{alarm.seq}/snapshot.jpg" if alarm.snapshot_jpeg else None
        with self._lock:
            if alarm.snapshot_jpeg:
                self._snapshots[f"{alarm.alarm_id}/{alarm.seq}"] = alarm.snapshot_jpeg
            if alarm.type == AlarmType.end:
                started = self._active.pop(alarm.alarm_id, None)
                doc.setdefault("snapshot_url", None)
                if doc["snapshot_url"] is None and started is not None:
                    doc["snapshot_url"] = started.get("snapshot_url")
            else:
                previous = self._active.get(alarm.alarm_id, {})
                if doc["snapshot_url"] is None:
                    doc["snapshot_url"] = previous.get("snapshot_url")
                self._active[alarm.alarm_id] = doc
            if alarm.type != AlarmType.update:  # the list shows each alarm's start and end, not every improvement
                self._recent.appendleft(doc)
            self._forget_old_snapshots()
        self._send("alarm", doc)

    def publish_camera_state(self, camera_id: str, state: CameraState, last_frame_at: float | None = None) -> None:
        doc = state_doc(camera_id, state, last_frame_at)
        if self._decoder_info is not None:
            doc["decoder"] = self._decoder_info(camera_id) or None
        with self._lock:
            if camera_id not in self._cameras:
                return
            self._cameras[camera_id].state = doc
        self._send("state", doc)

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed.set()
        with self._lock:
            clients = list(self._clients)
        for queue in clients:
            queue.put_last(None)  # wakes each event stream so its thread ends

    # --- what the page reads ---------------------------------------------------------
    def has_camera(self, camera_id: str) -> bool:
        return camera_id in self._cameras

    def frame_url(self, camera_id: str, frame_id: int | None) -> str | None:
        return None if frame_id is None else f"/cameras/{camera_id}/frame.jpg?f={frame_id}"

    def state(self) -> dict:
        with self._lock:
            cameras = [{"camera": cid, "state": self._with_decoder(cid, cam.state), "caption": cam.caption,
                        "frame_url": self.frame_url(cid, cam.frame_id),
                        "alarms": [a for a in self._active.values() if a["camera"] == cid]}
                       for cid, cam in self._cameras.items()]
            return {"device": self.device_id, "time": iso_time(time.time()), "cameras": cameras,
                    "recent_alarms": list(self._recent)}

    def _with_decoder(self, camera_id: str, state: dict) -> dict:
        if self._decoder_info is None:
            return state
        return {**state, "decoder": self._decoder_info(camera_id) or None}  # now, not as of the last state change

    def alarm_snapshot(self, alarm_id: str, seq: str) -> bytes | None:
        with self._lock:
            return self._snapshots.get(f"{alarm_id}/{seq}")

    def subscribe(self) -> BoundedQueue:
        queue = BoundedQueue("web-client", CLIENT_QUEUE, Overflow.drop_oldest)
        with self._lock:
            self._clients.append(queue)
        return queue

    def unsubscribe(self, queue: BoundedQueue) -> None:
        with self._lock:
            if queue in self._clients:
                self._clients.remove(queue)

    # --- helpers ----------------------------------------------------------------------
    def _send(self, kind: str, doc: dict) -> None:
        data = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            clients = list(self._clients)
        for queue in clients:
            queue.put((kind, data))

    def _forget_old_snapshots(self) -> None:
        keep = {d["snapshot_url"] for d in [*self._recent, *self._active.values()] if d.get("snapshot_url")}
        for key in [k for k in self._snapshots if f"/alarms/{k}/snapshot.jpg" not in keep]:
            del self._snapshots[key]

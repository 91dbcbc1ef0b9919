"""The history over HTTP: JSON for the page's search, and the thumbnails. Served by streamcap/http.py behind its auth.

    /api/history/search?q=white+van&camera=gate&since=12h&until=...&concept=vehicle>=0.7&limit=50
    /api/history/summary?camera=gate&since=24h&until=...
    /api/history/segments/<id>          one segment with its captions
    /api/history/cameras                the cameras the history knows
    /history/thumbnails/<name>.jpg      a segment's or an alarm's thumbnail

`respond()` is pure request -> response, so http.py only sends what it returns.
A bad parameter is a 400 with a one-line JSON error, never a traceback.
"""
from __future__ import annotations

import json
import re
import time

from streamcap.history.query import History, HistoryMissing, QueryError, parse_concept, parse_time

PREFIXES = ("/api/history/", "/history/")
_SEGMENT = re.compile(r"^/api/history/segments/(\d{1,18})$")
_THUMBNAIL = re.compile(r"^/history/thumbnails/([A-Za-z0-9_.:-]{1,210}\.jpg)$")

Response = tuple[int, str, bytes, str | None]  # status, content type, body, Cache-Control


def respond(history: History, path: str, query: dict[str, list[str]]) -> Response:
    try:
        return _route(history, path, query)
    except HistoryMissing as exc:
        return _json(503, {"error": str(exc)})
    except QueryError as exc:
        return _json(400, {"error": str(exc)})


def _route(history: History, path: str, query: dict[str, list[str]]) -> Response:
    now = time.time()
    if path == "/api/history/search":
        results = history.search(
            _one(query, "q") or "", camera=_one(query, "camera"), since=_time(query, "since", now),
            until=_time(query, "until", now), concepts=[parse_concept(c) for c in query.get("concept", []) if c.strip()],
            limit=_limit(query))
        return _json(200, {"results": [_with_urls(r) for r in results]})
    if path == "/api/history/summary":
        camera = _one(query, "camera")
        if not camera:
            raise QueryError("camera is required")
        since = _time(query, "since", now)
        doc = history.summary(camera, now - 86400 if since is None else since, _time(query, "until", now))
        doc["segments"] = [_with_urls(s) for s in doc["segments"]]
        doc["alarms"] = [_with_urls(a) for a in doc["alarms"]]
        return _json(200, doc)
    if path == "/api/history/cameras":
        return _json(200, {"cameras": history.cameras()})
    if match := _SEGMENT.match(path):
        doc = history.segment(int(match.group(1)))
        return _json(200, _with_urls(doc)) if doc is not None else _json(404, {"error": "no such segment (deleted by retention?)"})
    if match := _THUMBNAIL.match(path):
        file = history.thumbnail_path(match.group(1))
        if file is None:
            return 404, "text/plain; charset=utf-8", b"no such thumbnail (the oldest are deleted first)\n", None
        try:
            return 200, "image/jpeg", file.read_bytes(), "max-age=86400"
        except OSError:
            return 404, "text/plain; charset=utf-8", b"no such thumbnail (the oldest are deleted first)\n", None
    return _json(404, {"error": "not found: /api/history/search, /api/history/summary, /api/history/segments/<id>"})


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise QueryError(f"{name} is given {len(values)} times; give it once")
    return values[0]


def _time(query, name: str, now: float) -> float | None:
    value = _one(query, name)
    return parse_time(value, now, name) if value else None


def _limit(query) -> int:
    value = _one(query, "limit")
    if value is None:
        return 50
    if not value.isdigit() or len(value) > 6:
        raise QueryError("limit must be a whole number")
    return int(value)


def _with_urls(doc: dict) -> dict:
    thumbnail = doc.get("thumbnail")
    return {**doc, "thumbnail_url": f"/history/thumbnails/{thumbnail}" if thumbnail else None}


def _json(status: int, doc: dict) -> Response:
    return status, "application/json", json.dumps(doc, ensure_ascii=False).encode(), "no-store"

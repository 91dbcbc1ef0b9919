"""The caption history's three targets: writing, size, query. A table on stdout and a JSON file.

    flock /tmp/streamcap-bench.lock .venv/bin/python benchmarks/bench_history.py            # all three
    .venv/bin/python benchmarks/bench_history.py --only size,query --days 30 --json bench_history.json

- write: the real pipeline (8 file cameras playing real CCTV clips, asking more captions than the shipped
  model makes, so captions/s is the model's rate) run with the history off and on, alternately, in one
  process. While on, more captions are injected into the history (with real frames for their thumbnails)
  so it writes >= 200 captions/s in all. Reports the pipeline's captions/s each way and their ratio, and
  what the history wrote and dropped. Then the writer alone: how many captions/s it can take.
- size: real clips (a still night lane; busy streets, a shop, a plaza) captioned by the shipped model at
  one frame a second, looped into a camera-day (86,400 captions) and written through the history's own
  writing code. Bytes per camera-day with single captions (within raw_days) and as segments only (after),
  against one row per caption (camera, time, caption, concepts as JSON, with the same FTS5 search).
- query: a synthetic history of 16 cameras at 1 caption/s for --days days (real CCTV captions from
  cctv_clips/captions.tsv, scenes held for realistic spells, single captions for the last 3 days) built once
  and cached; text searches over all of it and one-day summaries of one camera, p50/p95 over many runs,
  each opening its own connection as the HTTP API does.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from streamcap.history import store as db  # noqa: E402
from streamcap.history.query import History  # noqa: E402
from streamcap.history.segments import Segmenter  # noqa: E402
from streamcap.history.thumbnails import PictureSchedule, encode  # noqa: E402
from streamcap.history.writer import HistoryRecorder, record  # noqa: E402
from streamcap.messages import Caption, Frame  # noqa: E402
from streamcap.metrics import Metrics  # noqa: E402

DATA = Path(__import__("os").environ.get("STREAMCAP_DATA", REPO.parent / "shared" / "data"))
CLIPS = DATA / "cctv_clips" / "videos"
PIPELINE_CLIPS = ["road-topdown", "roadside-pedestrians", "shopfront-corner", "street-parked-cars", "level-crossing",
                  "motorway-lowres", "road-elevated", "carpark-timelapse"]
SIZE_CLIPS = {"night-lane": "static", "roadside-pedestrians": "busy", "shop-aisle": "busy", "plaza-crowd-topdown": "busy"}
QUERIES = ["white van", "vehicle", "person", "people walking", "car park", "truck", "bicycle", "night", "empty road",
           "shoppers with trolleys", "animal", "motorway traffic"]
DAY = 86400


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def sample(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# --- write ------------------------------------------------------------------------------------------
def caption_pool() -> list[tuple[str, dict]]:
    rows = [line.split("\t") for line in (DATA / "cctv_clips" / "captions.tsv").read_text().splitlines()]
    return [(text.strip(), {"person": 0.1, "vehicle": 0.8}) for _, text in rows]


class Injector(threading.Thread):
    """Extra captions into the history at `rate`/s over 16 virtual cameras, each with a real frame for its thumbnail."""

    def __init__(self, recorder, snapshots, rate: float, frames: list):
        super().__init__(name="injector", daemon=True)
        self.recorder, self.snapshots, self.rate, self.frames = recorder, snapshots, rate, frames
        self.stop, self.sent = threading.Event(), 0
        self.pool = caption_pool()

    def run(self) -> None:
        rng, started = random.Random(1), time.monotonic()
        scene = [rng.randrange(len(self.pool)) for _ in range(16)]
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                camera = self.sent % 16
                if rng.random() < 0.05:  # a new scene now and then, as on a busy camera
                    scene[camera] = rng.randrange(len(self.pool))
                text, concepts = self.pool[scene[camera]]
                name = f"extra{camera}"
                self.snapshots.put(Frame(name, self.sent, time.time(), time.monotonic(), self.frames[self.sent % len(self.frames)]))
                self.recorder.publish_caption(Caption(name, self.sent, time.time(), time.monotonic(), text, "injected", 0.0, concepts))
                self.sent += 1
            time.sleep(0.02)


def history_drops(metrics: Metrics) -> float:
    """Captions the history did not write, whatever the cause (thumbnails not counted)."""
    return sum(s.value for m in metrics.drops.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["stage"] == "history")


def run_pipeline(captioner, history_on: bool, seconds: float, burn_in: float, tmp: Path, inject_rate: float, frames) -> dict:
    from streamcap.app import build
    from streamcap.config.schema import StreamcapConfig

    events = tmp / f"events-{time.monotonic_ns()}.jsonl"
    config = StreamcapConfig.model_validate({
        "device_id": "bench",
        "cameras": {name.replace("-", "_"): {"url": str(CLIPS / f"{name}.mp4"), "loop": True, "caption_interval_s": 0.25}
                    for name in PIPELINE_CLIPS},
        "model": {"max_batch": 8, "max_wait_ms": 50},
        "outputs": {"console": False, "jsonl": str(events)},
        "history": {"enabled": history_on, "path": str(tmp / f"history-{time.monotonic_ns()}")},
    })
    app = build(config, captioner=captioner, console_stream=io.StringIO())
    metrics = app.pipeline.metrics
    recorder = next((p for p in app.pipeline.publishers.publishers if isinstance(p, HistoryRecorder)), None)
    injector = Injector(recorder, app.pipeline.snapshots, inject_rate, frames) if recorder is not None and inject_rate > 0 else None
    app.start()
    try:
        if injector:
            injector.start()
        time.sleep(burn_in)
        start_wall, written0 = time.time(), sample(metrics, "streamcap_history_written_total", kind="caption")
        dropped0 = history_drops(metrics)
        depth = []
        for _ in range(int(seconds * 4)):
            time.sleep(0.25)
            if recorder is not None:
                depth.append(len(recorder._queue))
        end_wall, written1 = time.time(), sample(metrics, "streamcap_history_written_total", kind="caption")
        dropped = history_drops(metrics) - dropped0
    finally:
        if injector:
            injector.stop.set()
            injector.join()
        app.stop()
    captions = [json.loads(line) for line in events.read_text().splitlines() if '"kind": "caption"' in line]
    window = [c for c in captions if start_wall <= datetime.fromisoformat(c["time"]).timestamp() <= end_wall]
    return {"history": history_on, "captions_per_s": len(window) / (end_wall - start_wall),
            "history_written_per_s": (written1 - written0) / (end_wall - start_wall), "history_dropped": dropped,
            "queue_max": max(depth, default=0)}


def bench_write(args, tmp: Path) -> dict:
    from streamcap.backends.select import load_captioner

    captioner = load_captioner(backend=args.backend)
    cap = cv2.VideoCapture(str(CLIPS / "roadside-pedestrians.mp4"))
    frames = [cap.read()[1] for _ in range(20)]
    cap.release()
    rows = []
    off = run_pipeline(captioner, False, args.seconds, args.burn_in, tmp, 0, frames)
    rows.append(off)
    inject = max(0.0, args.history_rate - off["captions_per_s"])
    for i in range(args.rounds):
        rows.append(run_pipeline(captioner, True, args.seconds, args.burn_in, tmp, inject, frames))
        if i + 1 < args.rounds:
            rows.append(run_pipeline(captioner, False, args.seconds, args.burn_in, tmp, 0, frames))
        print(f"  write round {i + 1} done", file=sys.stderr)
    on_rates = [r["captions_per_s"] for r in rows if r["history"]]
    off_rates = [r["captions_per_s"] for r in rows if not r["history"]]
    alone = writer_alone(tmp)
    return {"backend": captioner.name, "injected_per_s": inject, "rows": rows,
            "pipeline_off_median": statistics.median(off_rates), "pipeline_on_median": statistics.median(on_rates),
            "ratio_on_off": statistics.median(on_rates) / statistics.median(off_rates), "writer_alone": alone}


def writer_alone(tmp: Path, count: int = 100_000) -> dict:
    """The writer's own ceiling: `count` captions of 16 cameras queued at once, timed until written."""
    metrics = Metrics()
    pool, rng = caption_pool(), random.Random(2)
    config = _history_config(tmp / "writer-alone", max_pending=count + 10)
    recorder = HistoryRecorder(config, metrics)
    recorder.start()
    scene = [0] * 16
    items = []
    now = time.time() - count / 16
    for i in range(count):
        camera = i % 16
        if rng.random() < 0.05:
            scene[camera] = rng.randrange(len(pool))
        text, concepts = pool[scene[camera]]
        items.append(Caption(f"cam{camera}", i, now + i / 16, 0.0, text, "m", 0.0, concepts))
    cpu0, started = _cpu_s(), time.perf_counter()
    for item in items:
        recorder.publish_caption(item)
    recorder.close(timeout_s=600)
    elapsed, cpu = time.perf_counter() - started, _cpu_s() - cpu0
    written = sample(metrics, "streamcap_history_written_total", kind="caption")
    return {"captions": count, "written": written, "seconds": elapsed, "captions_per_s": written / elapsed,
            "cpu_s_per_1000": 1000 * cpu / max(written, 1)}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _history_config(path: Path, **overrides):
    from streamcap.config.schema import HistoryConfig

    return HistoryConfig(path=path, **overrides)


# --- size ---------------------------------------------------------------------------------------------
def clip_captions(captioner, name: str) -> list[tuple[str, dict, object]]:
    """The clip captioned at one frame a second: (caption, concepts, frame)."""
    cap = cv2.VideoCapture(str(CLIPS / f"{name}.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25
    frames, index = [], 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        if index % round(fps) == 0:
            frames.append(image)
        index += 1
    cap.release()
    out = []
    for start in range(0, len(frames), 8):
        chunk = frames[start:start + 8]
        for image, d in zip(chunk, captioner.describe(chunk)):
            out.append((d.text, dict(d.concepts), image))
    return out


def table_bytes(conn, skip: tuple[str, ...] = ()) -> int:
    return sum(size for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name") if name not in skip)


def camera_day(name: str, captions, folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    conn = db.open_for_writing(folder)
    store, segmenter = db.HistoryStore(conn), Segmenter()
    pictures = PictureSchedule(_history_config(folder).thumbnail_interval_s)  # the default: as a box takes them
    empty = table_bytes(conn)
    start = time.time() - DAY
    began = []
    for hour in range(24):
        conn.execute("BEGIN")
        items = [Caption(name, t, start + t, 0.0, captions[t % len(captions)][0], "default", 0.0, captions[t % len(captions)][1])
                 for t in range(hour * 3600, (hour + 1) * 3600)]
        began += record(store, segmenter, items, final=hour == 23, pictures=pictures)[0]
        conn.execute("COMMIT")
    conn.execute("VACUUM")
    total = table_bytes(conn) - empty
    raw = table_bytes(conn) - table_bytes(conn, skip=("captions",))
    segments_only = total - raw
    n_segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
    conn.close()
    thumb_sizes = [len(encode(captions[s.frame_id % len(captions)][2])) for s in began[:300]]
    baseline = one_row_per_caption(name, captions, folder / "rows.db", start)
    return {"clip": name, "kind": SIZE_CLIPS[name], "distinct_captions": len({c[0] for c in captions}), "clip_captions": len(captions),
            "segments": n_segments, "bytes_with_raw": total, "bytes_segments_only": segments_only,
            "bytes_one_row_per_caption": baseline, "ratio_rows_to_segments": baseline / max(segments_only, 1),
            "thumbnails": len(began), "thumbnail_bytes": len(began) * statistics.mean(thumb_sizes)}


def one_row_per_caption(name: str, captions, path: Path, start: float) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        CREATE TABLE rows(id INTEGER PRIMARY KEY, camera TEXT NOT NULL, t_ms INTEGER NOT NULL, caption TEXT NOT NULL,
                          concepts TEXT NOT NULL, model TEXT NOT NULL);
        CREATE INDEX rows_by_camera ON rows(camera, t_ms);
        CREATE VIRTUAL TABLE rows_fts USING fts5(caption, content='rows', content_rowid='id', tokenize='porter unicode61');
        CREATE TRIGGER rows_ai AFTER INSERT ON rows BEGIN INSERT INTO rows_fts(rowid, caption) VALUES (new.id, new.caption); END;
    """)
    empty = table_bytes(conn)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO rows(camera, t_ms, caption, concepts, model) VALUES (?, ?, ?, ?, ?)",
                     [(name, db.to_ms(start + t), captions[t % len(captions)][0],
                       json.dumps({k: round(v, 3) for k, v in captions[t % len(captions)][1].items()}), "default")
                      for t in range(DAY)])
    conn.execute("COMMIT")
    conn.execute("VACUUM")
    size = table_bytes(conn) - empty
    conn.close()
    return size


def bench_size(args, tmp: Path) -> dict:
    from streamcap.backends.select import load_captioner

    captioner = load_captioner(backend=args.backend)
    rows = []
    for name in SIZE_CLIPS:
        rows.append(camera_day(name, clip_captions(captioner, name), tmp / f"size-{name}"))
        print(f"  size {name} done", file=sys.stderr)
    return {"rows": rows}


# --- query --------------------------------------------------------------------------------------------
def synthetic_history(folder: Path, cameras: int, days: int, raw_days: int = 3, seed: int = 7) -> Path:
    """16 cameras at 1 caption/s for `days` days, as segments (and single captions for the last raw_days)."""
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / db.DB_NAME).unlink(missing_ok=True)
    by_frame: dict[str, list[str]] = {}
    for line in (DATA / "cctv_clips" / "captions.tsv").read_text().splitlines():
        frame, text = line.split("\t")
        by_frame.setdefault(frame, []).append(text.strip())
    labels = {}
    for line in (DATA / "cctv_clips" / "labels.tsv").read_text().splitlines()[1:]:
        frame, *values = line.split("\t")
        labels[frame] = {k: {"1": 0.9, "0": 0.04, "?": 0.5}[v] for k, v in zip(("person", "vehicle", "animal"), values)}
    clips = sorted({f.rsplit("_", 1)[0] for f in by_frame})
    rng = random.Random(seed)
    plans = []
    for c in range(cameras):
        clip = clips[c % len(clips)]
        frames = sorted(f for f in by_frame if f.startswith(clip + "_"))
        plans.append({"name": f"cam{c:02d}", "frames": frames, "mean_s": [20, 60, 300, 1200][c % 4], "frame": frames[0], "until": 0})
    conn = db.open_for_writing(folder)
    store, segmenter = db.HistoryStore(conn), Segmenter()
    end = time.time()
    start = end - days * DAY
    for hour in range(days * 24):
        items = []
        base = start + hour * 3600
        for second in range(3600):
            at = base + second
            for plan in plans:
                if at >= plan["until"]:
                    plan["frame"] = rng.choice(plan["frames"])
                    plan["until"] = at + rng.expovariate(1 / plan["mean_s"])
                texts = by_frame[plan["frame"]]
                text = texts[1] if len(texts) > 1 and rng.random() < 0.1 else texts[0]
                concepts = {k: min(1.0, max(0.0, p + rng.uniform(-0.03, 0.03))) for k, p in labels[plan["frame"]].items()}
                items.append(Caption(plan["name"], second, at, 0.0, text, "synthetic", 0.0, concepts))
        conn.execute("BEGIN")
        record(store, segmenter, items, raw=base >= end - raw_days * DAY, final=hour == days * 24 - 1)
        conn.execute("COMMIT")
        if hour % 24 == 23:
            print(f"  synthetic day {hour // 24 + 1}/{days}", file=sys.stderr)
    conn.close()
    (folder / "done").write_text("")
    return folder


def bench_query(args, tmp: Path) -> dict:
    cache = Path(args.cache) / f"synthetic-{args.cameras}c-{args.days}d-v1"
    started = time.perf_counter()
    folder = synthetic_history(cache, args.cameras, args.days)
    build_s = time.perf_counter() - started
    history = History(folder)
    conn = sqlite3.connect(folder / db.DB_NAME)
    segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
    raw = conn.execute("SELECT count(*) FROM captions").fetchone()[0]
    span = conn.execute("SELECT min(start_ms), max(end_ms) FROM segments").fetchone()
    conn.close()
    size = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(db.DB_NAME))
    search_ms, hits = [], {}
    for _ in range(args.repeats):
        for text in QUERIES:
            t0 = time.perf_counter()
            hits[text] = len(history.search(text, limit=50))
            search_ms.append(1000 * (time.perf_counter() - t0))
    rng = random.Random(3)
    summary_ms, sizes = [], []
    for _ in range(args.repeats * 4):
        camera = f"cam{rng.randrange(args.cameras):02d}"
        day_start = span[0] / 1000 + rng.randrange(args.days - 1) * DAY
        t0 = time.perf_counter()
        doc = history.summary(camera, day_start, day_start + DAY)
        summary_ms.append(1000 * (time.perf_counter() - t0))
        sizes.append(len(doc["segments"]))
    return {"cameras": args.cameras, "days": args.days, "captions": args.cameras * args.days * DAY, "segments": segments,
            "raw_captions": raw, "database_bytes": size, "build_s": build_s,
            "search_p50_ms": percentile(search_ms, 0.5), "search_p95_ms": percentile(search_ms, 0.95),
            "search_max_ms": max(search_ms), "search_hits": hits,
            "summary_p50_ms": percentile(summary_ms, 0.5), "summary_p95_ms": percentile(summary_ms, 0.95),
            "summary_segments_median": statistics.median(sizes)}


# --- report -------------------------------------------------------------------------------------------
def report(results: dict) -> None:
    if "write" in results:
        w = results["write"]
        print(f"\nWriting (backend {w['backend']}; {w['injected_per_s']:.0f} captions/s injected into the history while on)")
        print("| run | history | pipeline captions/s | history written/s | history dropped | queue max |")
        print("|---|---|---|---|---|---|")
        for i, r in enumerate(w["rows"], 1):
            print(f"| {i} | {'on' if r['history'] else 'off'} | {r['captions_per_s']:.2f} | {r['history_written_per_s']:.0f} | "
                  f"{r['history_dropped']:.0f} | {r['queue_max']} |")
        print(f"pipeline captions/s median: off {w['pipeline_off_median']:.2f}, on {w['pipeline_on_median']:.2f}, "
              f"ratio on/off {w['ratio_on_off']:.3f}")
        a = w["writer_alone"]
        print(f"writer alone: {a['written']:.0f} captions of 16 cameras in {a['seconds']:.1f} s = {a['captions_per_s']:.0f} captions/s "
              f"({a['cpu_s_per_1000']:.2f} CPU s per 1,000)")
    if "size" in results:
        print("\nSize of one camera-day at 1 caption/s (86,400 captions; clip captioned by the shipped model, looped)")
        print("| clip | scene | distinct captions | segments | with single captions | segments only | one row per caption | "
              "rows / segments | thumbnails |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results["size"]["rows"]:
            print(f"| {r['clip']} | {r['kind']} | {r['distinct_captions']} of {r['clip_captions']} | {r['segments']} | "
                  f"{r['bytes_with_raw'] / 1e6:.2f} MB | {r['bytes_segments_only'] / 1e3:.1f} kB | "
                  f"{r['bytes_one_row_per_caption'] / 1e6:.2f} MB | {r['ratio_rows_to_segments']:.0f}x | "
                  f"{r['thumbnails']:,}, {r['thumbnail_bytes'] / 1e6:.1f} MB |")
    if "query" in results:
        q = results["query"]
        print(f"\nQuery: synthetic history of {q['cameras']} cameras x {q['days']} days at 1 caption/s = {q['captions']:,} captions "
              f"-> {q['segments']:,} segments, {q['raw_captions']:,} single captions kept (3 days), "
              f"{q['database_bytes'] / 1e6:.0f} MB")
        print("| query | p50 ms | p95 ms | target |")
        print("|---|---|---|---|")
        print(f"| text search over all of it ({len(QUERIES)} searches) | {q['search_p50_ms']:.1f} | {q['search_p95_ms']:.1f} | <= 200 |")
        print(f"| one-day summary of one camera (median {q['summary_segments_median']:.0f} segments) | {q['summary_p50_ms']:.1f} | "
              f"{q['summary_p95_ms']:.1f} | <= 100 |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="write,size,query")
    p.add_argument("--backend", default="auto")
    p.add_argument("--seconds", type=float, default=45, help="measured seconds per pipeline run")
    p.add_argument("--burn-in", type=float, default=15)
    p.add_argument("--rounds", type=int, default=2, help="history-on runs (each followed by an off run)")
    p.add_argument("--history-rate", type=float, default=200, help="captions/s the history writes while on")
    p.add_argument("--cameras", type=int, default=16)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "streamcap-bench-history"))
    p.add_argument("--json", default="bench_history.json")
    args = p.parse_args()
    if not (DATA / "cctv_clips" / "captions.tsv").is_file():
        print(f"skipped: {DATA}/cctv_clips not found; set STREAMCAP_DATA")
        return 0
    only = set(args.only.split(","))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        for part, run in (("size", bench_size), ("query", bench_query), ("write", bench_write)):
            if part in only:
                results[part] = run(args, Path(tmp))
    report(results)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

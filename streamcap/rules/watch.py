"""Hot reload of rule files by polling their modification times.

The rule set changes only on a successful, complete read:
- a pattern that cannot be listed (folder missing, no permission, out of
  descriptors) or that matches no file now keeps every rule in force;
- a file with errors, or one that is empty now (truncate-then-write) keeps
  its previous rules while the other files reload;
- a change is read once the files have stayed the same for `settle_s`, and
  a read during which they changed again is thrown away and done again.
Each of these says so in one log line, once per state.

Reading and compiling a large rule file takes seconds, so it happens on the
watcher's own thread (`start()`); the dispatch thread only swaps the
finished rule list in (`apply_ready()`, a dictionary pass). `poll()` does
both on the calling thread, for tools and tests.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamcap.config.schema import StreamcapConfig
from streamcap.rules.engine import RuleEngine, RulePlan, SnapshotSource
from streamcap.rules.load import RuleSource, expand_pattern, load_rule_sources, read_rules

log = logging.getLogger("streamcap.rules")

Signature = tuple[tuple[str, int, int], ...]
SETTLE_S = 1.0  # a writer (editor, `cat >`, a deploy tool) is done once its files stay unchanged this long


def file_signature(paths: Iterable[str]) -> Signature:
    """(file, mtime_ns, size) of every file the patterns match now; missing files count too,
    and so does a pattern that cannot be listed (as ("<unlisted> pattern", errno, 0))."""
    signature = []
    for pattern in paths:
        try:
            files = expand_pattern(pattern)
        except OSError as exc:
            signature.append((f"<unlisted> {pattern}", exc.errno or -1, 0))
            continue
        for name in files:
            try:
                st = os.stat(name)
                signature.append((name, st.st_mtime_ns, st.st_size))
            except OSError:
                signature.append((name, -1, -1))
    return tuple(signature)


@dataclass(frozen=True)
class RuleUpdate:
    """A finished read, waiting for the dispatch thread: the plan to apply (None: rules unchanged)."""

    plan: RulePlan | None
    summary: str


class RuleWatcher:
    """Reloads `engine`'s rules when the rule files change.

    `sources` are the rules in force with their files (as `load_rule_sources`
    returns them); without them the watcher reads the files once now.
    """

    def __init__(
        self,
        paths: Iterable[str],
        engine: RuleEngine,
        known_cameras: Iterable[str] | None = None,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sources: list[RuleSource] | None = None,
        known_concepts: Iterable[str] | None = None,
        settle_s: float = SETTLE_S,
    ):
        self.paths = [str(p) for p in paths]
        self.engine = engine
        self.known_cameras = None if known_cameras is None else list(known_cameras)
        self.known_concepts = None if known_concepts is None else tuple(known_concepts)
        self.interval_s = interval_s
        self.settle_s = min(settle_s, interval_s)
        self.clock = clock
        self._signature = file_signature(self.paths)
        self._candidate: Signature | None = None  # seen changed, waiting to settle
        self._sources = sources if sources is not None else load_rule_sources(
            self.paths, self.known_cameras, known_concepts=self.known_concepts)[0]
        self._next_check = clock() + interval_s
        self._problem: str | None = None  # the last warning, so a state is reported once
        self._ready: RuleUpdate | None = None
        self._ready_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0
        self.failed_reloads = 0

    # --- the synchronous form ---------------------------------------------------
    def poll(self) -> bool:
        """Check, read and apply on this thread; True when the rules changed."""
        update = self.check()
        return update is not None and self.apply(update)

    # --- the threaded form: read on the watcher thread, swap on the dispatch thread ---------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rules-reload", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("rules: the reload thread did not stop within %.1f s (a read in progress)", timeout_s)
            self._thread = None

    def apply_ready(self) -> bool:
        """Swap in what the watcher thread has read, if anything; True when the rules changed. Cheap."""
        if self._ready is None:
            return False
        with self._ready_lock:
            update, self._ready = self._ready, None
        return update is not None and self.apply(update)

    def _run(self) -> None:
        while not self._stop.wait(min(0.25, self.settle_s)):
            if self._ready is not None:
                continue  # the dispatch thread has not taken the last one: plan the next against what it will be
            try:
                update = self.check()
            except Exception:  # noqa: BLE001 - a reload problem keeps the rules in force
                log.exception("rules: reload failed; keeping the %d rules in force", len(self.engine.rules))
                continue
            if update is not None:
                with self._ready_lock:
                    self._ready = update

    # --- reading ------------------------------------------------------------------
    def check(self) -> RuleUpdate | None:
        """Stat the files when due; once a change has settled, read and compile it (any thread)."""
        now = self.clock()
        if now < self._next_check:
            return None
        self._next_check = now + self.interval_s
        signature = file_signature(self.paths)
        if signature == self._signature:
            self._candidate = None
            return None
        if signature != self._candidate:  # still being written, perhaps: look again once it has settled
            self._candidate = signature
            self._next_check = now + self.settle_s
            return None
        update = self._read()
        after = file_signature(self.paths)
        if after != signature:  # written to while we read it: that read may be half a file
            log.info("rules: the rule files changed while being read; reading them again")
            self._candidate = after
            self._next_check = self.clock() + self.settle_s
            return None
        # Remember this state even if it is bad, so one bad save logs once, not every poll.
        self._signature, self._candidate = signature, None
        return update

    def _read(self) -> RuleUpdate | None:
        in_force = len(self.engine.rules)
        fallback: dict[str, list[RuleSource]] = defaultdict(list)
        for source in self._sources:
            fallback[source.path].append(source)
        with _collector_paused():
            read = read_rules(self.paths, self.known_cameras, fallback, self.known_concepts)
        if read.listing_errors:
            more = f" (+{len(read.listing_errors) - 1} more)" if len(read.listing_errors) > 1 else ""
            self._warn(f"rules: {read.listing_errors[0]}{more}; keeping the {in_force} rules in force "
                       "(to remove every rule, leave a rule file that says `[]`)")
            return None
        if read.errors:
            kept = sum(1 for s in read.sources if s.path in read.failed_files)
            more = f" (+{len(read.errors) - 1} more)" if len(read.errors) > 1 else ""
            self._warn(f"rules: files with errors keep their previous rules ({kept} kept): {read.errors[0]}{more}")
        elif self._problem is not None:
            log.info("rules: the rule files read completely again")
            self._problem = None
        self._sources = read.sources
        rules = [s.rule for s in read.sources]
        plan = self.engine.plan_rules(rules)
        if plan is None:
            log.info("rules: read again, no change (%d rules)", len(rules))
            return None
        before = {c.rule.id: c for c in plan.base}
        kept_ids = {id(c) for c in plan.entries}
        now_ids = {r.id for r in rules}
        added = [r.id for r in rules if r.id not in before]
        changed = [r.id for r in rules if r.id in before and id(before[r.id]) not in kept_ids]
        removed = [rid for rid in before if rid not in now_ids]
        parts = [f"{what} {len(ids)}: {_some(ids)}" for what, ids in (("added", added), ("changed", changed), ("removed", removed)) if ids]
        return RuleUpdate(plan, f"{len(rules)} rules ({'; '.join(parts) or 'order changed'})")

    def _warn(self, message: str) -> None:
        self.failed_reloads += 1
        if message != self._problem:
            log.warning("%s", message)
        self._problem = message

    def apply(self, update: RuleUpdate) -> bool:
        """Put a read in force on the engine's thread; True when the rules changed."""
        if update.plan is None:
            return False
        self.engine.apply_rules(update.plan)
        self.reloads += 1
        log.info("rules reloaded: %s", update.summary)
        return True


@contextlib.contextmanager
def _collector_paused():
    """No cyclic garbage collection while a read builds its objects (a million for a 7,000-rule file).

    The read's objects survive long enough to trigger full collections, each of which walks every
    object while holding the GIL: measured, 0.5-0.8 s with no other thread running, i.e. captions
    stalled that long. Reference counting still frees the read's garbage as it goes.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _some(ids: list[str], most: int = 5) -> str:
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


def build_rules(config: StreamcapConfig, clock: Callable[[], float] = time.time, known_concepts: Iterable[str] | None = None,
                snapshots: SnapshotSource | None = None) -> tuple[RuleEngine, RuleWatcher | None]:
    """The rule engine for `config`, and its watcher when `rules.reload` is on.

    Bad files are logged (one line per problem) and skipped; the rest run.
    `known_concepts` are the model's concept heads (None: not checked).
    """
    cameras = list(config.cameras)
    where = [config.where(("rules", "paths", i)) for i in range(len(config.rules.paths))]
    sources, errors = load_rule_sources(config.rules.paths, cameras, known_concepts=known_concepts, where=where)
    rules = [s.rule for s in sources]
    for error in errors:
        log.error("%s", error)
    snapshot_cameras = [cid for cid, cam in config.cameras.items() if cam.snapshot]
    engine = RuleEngine(rules, cameras, clock=clock, timezone=config.timezone, snapshot_cameras=snapshot_cameras,
                        snapshots=snapshots)
    skipped = "; files with problems were skipped" if errors else ""
    log.info("rules: %d loaded, %d problems%s", len(rules), len(errors), skipped)
    watcher = None
    if config.rules.reload:
        watcher = RuleWatcher(config.rules.paths, engine, cameras, interval_s=config.rules.reload_interval_s, sources=sources,
                              known_concepts=known_concepts)
    return engine, watcher

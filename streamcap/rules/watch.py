"""Hot reload of rule files by polling their modification times.

No thread of its own: the dispatch thread calls `poll()` between captions, so
rules are swapped on the only thread that uses them and nothing needs a lock.
A file that fails to reload keeps its previous rules (other files still
reload) and one line per reload says why, so a half-typed edit never silently
drops an alarm rule.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from streamcap.config.schema import StreamcapConfig
from streamcap.rules.engine import RuleEngine, SnapshotSource
from streamcap.rules.load import RuleSource, expand_paths, load_rule_sources

log = logging.getLogger("streamcap.rules")

Signature = tuple[tuple[str, int, int], ...]


def file_signature(paths: Iterable[str]) -> Signature:
    """(file, mtime_ns, size) of every file the patterns match now; missing files count too."""
    files, _ = expand_paths(paths)
    signature = []
    for name in files:
        try:
            st = os.stat(name)
            signature.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            signature.append((name, -1, -1))
    return tuple(signature)


class RuleWatcher:
    """Reloads `engine`'s rules when the rule files change; call `poll()` often, it is cheap.

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
    ):
        self.paths = [str(p) for p in paths]
        self.engine = engine
        self.known_cameras = None if known_cameras is None else list(known_cameras)
        self.known_concepts = None if known_concepts is None else tuple(known_concepts)
        self.interval_s = interval_s
        self.clock = clock
        self._signature = file_signature(self.paths)
        self._sources = sources if sources is not None else load_rule_sources(
            self.paths, self.known_cameras, known_concepts=self.known_concepts)[0]
        self._next_check = clock() + interval_s
        self.reloads = 0
        self.failed_reloads = 0

    def poll(self) -> bool:
        """Reload if the interval has passed and a file changed; True when the rules changed."""
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval_s
        signature = file_signature(self.paths)
        if signature == self._signature:
            return False
        # Remember the new state even if it is bad, so one bad save logs once, not every poll.
        self._signature = signature
        return self.reload()

    def reload(self) -> bool:
        fallback: dict[str, list[RuleSource]] = defaultdict(list)
        for source in self._sources:
            fallback[source.path].append(source)
        sources, errors = load_rule_sources(self.paths, self.known_cameras, fallback, self.known_concepts)
        if errors:
            self.failed_reloads += 1
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            log.warning("rules: files with errors keep their previous rules: %s%s", errors[0], more)
        rules = [s.rule for s in sources]
        if rules == self.engine.rules:
            self._sources = sources
            return False
        self.engine.replace_rules(rules)
        self._sources = sources
        self.reloads += 1
        log.info("rules reloaded: %d rules (%s)", len(rules), ", ".join(r.id for r in rules) or "none")
        return True


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

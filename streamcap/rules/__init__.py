"""Alert rules: caption text in, alarms out.

    engine, watcher = build_rules(config)      # bad files logged and skipped
    alarms = engine.process(caption)           # on the dispatch thread
    watcher.poll()                             # same thread, between captions
"""
from streamcap.rules.engine import RuleEngine
from streamcap.rules.load import load_rules
from streamcap.rules.schema import Rule
from streamcap.rules.watch import RuleWatcher, build_rules

__all__ = ["Rule", "RuleEngine", "RuleWatcher", "build_rules", "load_rules"]

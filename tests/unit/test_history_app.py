"""The history in the composition root: a folder the config names must work; the default one may not."""
from __future__ import annotations

import subprocess
import sys

import pytest

from streamcap.app import build
from streamcap.config.load import load_config
from streamcap.history.store import HistoryUnavailable


class Silent:
    model_name = "fake"

    def describe(self, frames):
        return []


def test_a_named_history_folder_that_cannot_be_written_stops_the_start_in_one_line(tmp_path):
    # given a history.path under a regular file
    (tmp_path / "not-a-dir").write_text("")
    config = tmp_path / "streamcap.yaml"
    config.write_text(f"history:\n  path: {tmp_path / 'not-a-dir' / 'history'}\n")
    # when the box is built, then it refuses
    with pytest.raises(HistoryUnavailable, match="history.path .*not-a-dir/history: cannot write there"):
        build(load_config(config), captioner=Silent())
    # and `streamcap run` says so in one line, exit 2
    result = subprocess.run([sys.executable, "-m", "streamcap", "run", "-c", str(config), "--duration", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("streamcap: history.path ")
    assert sum("history.path" in line for line in result.stderr.splitlines()) == 1


def test_the_default_folder_that_cannot_be_written_runs_the_box_without_a_history(tmp_path, caplog):
    # given a config beside which .streamcap is a file, so the default .streamcap/history cannot be made
    (tmp_path / ".streamcap").write_text("")
    config = tmp_path / "streamcap.yaml"
    config.write_text("cameras: {}\n")
    # when
    app = build(load_config(config), captioner=Silent())
    # then it runs without one, says so once, and health shows why
    assert not any(p.name == "history" for p in app.pipeline.publishers.publishers)
    assert "running without a history" in caplog.text
    history = app.pipeline.metrics.health()["history"]
    assert history["state"] == "off" and ".streamcap/history: cannot write there" in history["detail"]
    assert app.pipeline.metrics.health()["status"] == "ok", "no history is news, not a fault"

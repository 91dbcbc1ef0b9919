"""The inference threads wait without spinning: a CPU shared with camera decoders and other processes stays
usable (benchmarks/bench_cpu_contention.py measures what spinning cost: 10-20x per caption under load)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _policy_seen_by_openmp(env: dict) -> str:
    """The wait policy the OpenMP runtime that torch loads says it uses (OMP_DISPLAY_ENV), in a fresh process
    that imports streamcap first, as `streamcap` and every test of it do."""
    code = "import streamcap, torch; torch.zeros(64).sum()"
    done = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO), "OMP_DISPLAY_ENV": "TRUE"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r"OMP_WAIT_POLICY = '(\w+)'", done.stdout + done.stderr)
    assert match, done.stderr[-2000:]
    return match.group(1)


def test_openmp_waits_passively_unless_the_environment_says_otherwise():
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy_seen_by_openmp(clean) == "PASSIVE"
    assert _policy_seen_by_openmp({**clean, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_onnxruntime_sessions_do_not_spin(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from streamcap.backends.onnxruntime_backend import make_session

    # given a real (tiny) model file
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    # when streamcap opens a session
    session = make_session(path)
    # then its intra-op pool sleeps between runs
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"

"""The ONNX graphs TensorRT would parse: checker, opset, op allow-list, dynamic batch, real runs."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _backend_models import KINDS, make_checkpoint

from streamcap.__main__ import main
from streamcap.backends.export import (
    GRAPHS, OPSET, TENSORRT_OPS, ExportError, cached_export, check_graph, export_model, model_hash,
)


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory, shared_data):
    directory = tmp_path_factory.mktemp(request.param)
    return export_model(make_checkpoint(directory, request.param, shared_data), directory / "onnx")


@pytest.mark.parametrize("graph", GRAPHS)
def test_graph_passes_the_checker_with_opset_17_and_tensorrt_ops_only(exported, graph):
    # when the graph is checked the way TensorRT's parser would need it
    ops = check_graph(exported.path(graph))
    # then it is opset 17, uses only allow-listed ops and has a dynamic batch axis everywhere
    model = onnx.load(str(exported.path(graph)))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert set(ops) <= TENSORRT_OPS
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def test_step_graph_uses_lstm_op_for_merge_and_decomposed_cells_for_attention(exported):
    ops = exported.meta["ops"]["step"]
    if exported.meta["decoder"] == "merge":
        assert ops["LSTM"] == 1  # nn.LSTM -> the ONNX LSTM op, which TensorRT supports
    else:
        assert "LSTM" not in ops and ops["Sigmoid"] == 6 and ops["Tanh"] >= 4  # two LSTMCells, unrolled


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_every_graph_runs_in_onnxruntime_at_batch(exported, batch):
    # given the three graphs in ONNX Runtime
    sessions = {g: ort.InferenceSession(str(exported.path(g)), providers=["CPUExecutionProvider"]) for g in GRAPHS}
    meta = exported.meta
    rng = np.random.default_rng(batch)
    # when a batch flows encoder -> prepare -> step
    (grid,) = sessions["encoder"].run(None, {"images": rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)})
    prepared = dict(zip([o.name for o in sessions["prepare"].get_outputs()], sessions["prepare"].run(None, {"grid": grid})))
    memory = [prepared[f"memory{i}"] for i in range(len(meta["memory_shapes"]))]
    feeds = {"tokens": np.full(batch, 2, dtype=np.int32)}
    feeds.update({f"state{i}": np.zeros((batch, *s), np.float32) for i, s in enumerate(meta["state_shapes"])})
    feeds.update({f"memory{i}": m for i, m in enumerate(memory)})
    logprobs, *state = sessions["step"].run(None, feeds)
    # then every tensor has the batch and the declared shapes, and the step is a distribution
    assert grid.shape == (batch, *meta["grid_shape"]) == (batch, 49, 1280)
    assert [m.shape for m in memory] == [(batch, *s) for s in meta["memory_shapes"]]
    assert [s.shape for s in state] == [(batch, *s) for s in meta["state_shapes"]]
    assert logprobs.shape == (batch, meta["vocab_size"])
    np.testing.assert_allclose(np.exp(logprobs).sum(1), 1.0, atol=1e-4)
    # and a model with a concept head says so, with one probability per concept
    if meta["concepts"]:
        concepts = prepared["concepts"]
        assert concepts.shape == (batch, len(meta["concepts"])) and ((concepts >= 0) & (concepts <= 1)).all()
    else:
        assert "concepts" not in prepared


def test_graph_with_an_op_outside_the_allow_list_is_refused(exported):
    # given an allow-list without Conv, when the encoder is checked, then it names the op
    with pytest.raises(ExportError, match="outside the TensorRT allow-list: Conv"):
        check_graph(exported.path("encoder"), allowed=TENSORRT_OPS - {"Conv"})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter announces itself
def test_graph_without_a_dynamic_batch_is_refused(tmp_path):
    # given a graph exported with a fixed batch
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(3, 4),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=OPSET, dynamo=False)
    # when checked, then the missing dynamic axis is named
    with pytest.raises(ExportError, match="x has no dynamic batch axis"):
        check_graph(path)


def test_export_is_cached_by_model_hash_and_redone_when_the_checkpoint_changes(tmp_path, shared_data):
    # given a checkpoint exported once
    checkpoint = make_checkpoint(tmp_path, "merge", shared_data, seed=1)
    cache = tmp_path / "cache"
    first = cached_export(checkpoint, cache_dir=cache)
    stamp = first.path("step").stat().st_mtime_ns
    # when asked again, then the same files are reused untouched, in the cache, never beside the checkpoint
    again = cached_export(checkpoint, cache_dir=cache)
    assert again.dir == first.dir == cache / "onnx" / first.model_hash
    assert again.path("step").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "merge.pt"]
    # when the checkpoint changes, then the hash changes and the export is redone
    make_checkpoint(tmp_path, "merge", shared_data, seed=2)
    redone = cached_export(checkpoint, cache_dir=cache)
    assert redone.model_hash == model_hash(checkpoint, "efficientnet_lite0") != first.model_hash
    assert json.loads((redone.dir / "export.json").read_text())["model_hash"] == redone.model_hash


def test_export_command_writes_checked_graphs_to_out(tmp_path, shared_data, capsys):
    checkpoint = make_checkpoint(tmp_path, "attention", shared_data)
    # when `streamcap export --model CKPT --out DIR` runs
    code = main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "out")])
    # then the three graphs and export.json are there and the command says where
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["encoder.onnx", "export.json", "prepare.onnx", "step.onnx"]
    assert str(tmp_path / "out") in capsys.readouterr().out


def test_resnet50_encoder_graph_uses_tensorrt_ops_only(tmp_path):
    import torchvision

    from streamcap.backends.export import export_encoder
    from streamcap.model.encoder import SPECS, ImageEncoder

    # given ResNet50 (random weights: the graph's ops do not depend on the values)
    net = torchvision.models.resnet50(weights=None)
    encoder = ImageEncoder(SPECS["resnet50"], torch.nn.Sequential(*list(net.children())[:-2]), net.fc).eval()
    # when exported, then it passes the same checks and gives a 7x7x2048 grid
    export_encoder(encoder, tmp_path / "encoder.onnx")
    ops = check_graph(tmp_path / "encoder.onnx")
    assert ops["Conv"] == 53 and ops["MaxPool"] == 1
    assert [d.dim_value for d in onnx.load(str(tmp_path / "encoder.onnx")).graph.output[0].type.tensor_type.shape.dim[1:]] == [49, 2048]

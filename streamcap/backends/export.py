"""ONNX export of the captioner as three graphs TensorRT and ONNX Runtime can run.

    encoder.onnx   images (B, 3, S, S) float32            -> grid (B, P, D)
    prepare.onnx   grid (B, P, D)                          -> memory0.. (B, ...) [, concepts (B, C)]
    step.onnx      tokens (B,) int32, state0.., memory0..  -> logprobs (B, V), new_state0..

The concept head runs inside prepare.onnx, so its probabilities come out of
the same graph on every backend.
Only the batch axis is dynamic. Tokens are int32 because TensorRT's native
index type is int32 (an Embedding accepts int32 indices, so no Cast is needed).

Why the legacy TorchScript exporter (`dynamo=False`): on these models it gives
single-file graphs with fewer nodes (the merge step: 21 nodes against 38 with
13 Slices from the dynamo exporter), exports in under a second instead of
4-13 s, and takes `dynamic_axes` directly. The dynamo exporter also works but
emits opset 18 and down-converts to 17, and writes weights to a side `.data`
file. If a future torch drops the legacy path, switch `dynamo=True` and give
`dynamic_shapes`; the checks below still hold the graphs to the same contract.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from streamcap.model.checkpoint import DEFAULT_MODEL, load_checkpoint
from streamcap.model.encoder import SPECS, build_encoder, input_size_for

log = logging.getLogger(__name__)

OPSET = 17  # TensorRT 10's ONNX parser supports opsets 9-20; 17 is also JetPack 5's ceiling
EXPORT_VERSION = 3  # bump when the graph layout changes; part of the cache key
GRAPHS = ("encoder", "prepare", "step")
TRACE_BATCH = 2  # a batch of 1 during tracing can bake in size-1 broadcasts

# Op types that TensorRT 10's ONNX parser supports (onnx-tensorrt operators.md)
# and that our exports actually use or may plausibly use after a torch upgrade.
TENSORRT_OPS = frozenset({
    "Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "Div", "Exp", "Expand",
    "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "LSTM", "LogSoftmax",
    "MatMul", "MaxPool", "Mul", "Pad", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceSum", "Relu", "Reshape", "Shape",
    "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
})


class ExportError(RuntimeError):
    """An exported graph breaks the contract (checker, opset, ops, dynamic batch)."""


@dataclass(frozen=True)
class OnnxModel:
    """One checked export on disk; `meta` is its export.json."""

    dir: Path
    meta: dict

    def path(self, graph: str) -> Path:
        return self.dir / f"{graph}.onnx"

    @property
    def model_hash(self) -> str:
        return self.meta["model_hash"]

    @property
    def input_size(self) -> int:
        return self.meta.get("input_size") or SPECS[self.meta["encoder"]].input_size

    @property
    def encoder_spec(self):
        """The encoder's spec at the size this export was traced at."""
        import dataclasses

        return dataclasses.replace(SPECS[self.meta["encoder"]], input_size=self.input_size)

    @property
    def cache_root(self) -> Path:
        """The cache this export lives in (<root>/onnx/<hash>): engines go beside it."""
        return self.dir.parent.parent


class _Step(nn.Module):
    """decoder.step with flat tensor arguments, as ONNX wants them."""

    def __init__(self, decoder: nn.Module, num_state: int):
        super().__init__()
        self.decoder, self.num_state = decoder, num_state

    def forward(self, tokens: torch.Tensor, *tensors: torch.Tensor):
        state, memory = tensors[: self.num_state], tensors[self.num_state :]
        logprobs, new_state = self.decoder.step(tokens, state, memory)  # (B, V), (B, H)...
        return (logprobs, *new_state)


class _Prepare(nn.Module):
    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, grid: torch.Tensor):
        memory, concepts = self.decoder.prepare(grid)
        return (*memory, concepts) if concepts is not None else tuple(memory)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_hash(model_path: str | Path, encoder_name: str, encoder_weights: str | Path | None = None,
               input_size: int | None = None) -> str:
    """Identity of an export: checkpoint bytes, encoder, its weights, its input size, exporter version."""
    parts = [_file_sha256(Path(model_path)), encoder_name, f"opset{OPSET}", f"v{EXPORT_VERSION}"]
    if input_size is not None and input_size != SPECS[encoder_name].input_size:
        parts.append(f"size{input_size}")  # the standard size keeps the key exports made before sizes could change
    if encoder_weights:
        parts.append(_file_sha256(Path(encoder_weights)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(
            module, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET,
            dynamo=False, do_constant_folding=True,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
        )


def _fix_output_dims(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Write the known static non-batch dims into the outputs (flatten leaves them symbolic)."""
    import onnx

    graph = onnx.load(str(path))
    for output in graph.graph.output:
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shapes[output.name][1:]):
            dim.Clear()
            dim.dim_value = size
    onnx.save(graph, str(path))


def check_graph(path: str | Path, allowed: frozenset[str] = TENSORRT_OPS) -> Counter:
    """onnx.checker, opset, op allow-list and a dynamic batch on every input and output."""
    import onnx

    path = Path(path)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path))
    opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
    if opsets.get("ai.onnx") != OPSET:
        raise ExportError(f"{path}: opset {opsets.get('ai.onnx')} but TensorRT export uses opset {OPSET}")
    ops = Counter(node.op_type for node in graph.graph.node)
    unsupported = sorted(set(ops) - allowed)
    if unsupported:
        raise ExportError(f"{path}: op types outside the TensorRT allow-list: {', '.join(unsupported)}")
    for value in [*graph.graph.input, *graph.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_param != "batch":
            raise ExportError(f"{path}: {value.name} has no dynamic batch axis")
        if any(not d.dim_value for d in list(dims)[1:]):
            raise ExportError(f"{path}: {value.name} has a dynamic non-batch axis")
    return ops


@torch.no_grad()
def export_encoder(encoder: nn.Module, path: Path) -> torch.Tensor:
    """images (B, 3, S, S) -> grid (B, P, D); returns the grid of the tracing batch."""
    size = encoder.spec.input_size
    images = torch.randn(TRACE_BATCH, 3, size, size)  # (B, 3, S, S)
    grid = encoder(images)  # (B, P, D)
    _export(encoder, (images,), path, ["images"], ["grid"])
    _fix_output_dims(path, {"grid": tuple(grid.shape)})
    return grid


@torch.no_grad()
def export_model(model_path: str | Path | None, out_dir: str | Path, encoder_weights: str | None = None,
                 checkpoint: tuple | None = None, input_size: int | None = None) -> OnnxModel:
    """Export encoder, prepare and step of a checkpoint into `out_dir` and check them.

    `checkpoint` is the (spec, decoder) already read from `model_path`, if the caller has it;
    `input_size` the encoder's square side (default: the checkpoint's own).
    The grid's size follows the input's, so all three graphs belong to one size.
    """
    model_path = Path(model_path) if model_path else DEFAULT_MODEL
    spec, decoder = checkpoint if checkpoint is not None else load_checkpoint(model_path)[:2]
    input_size = input_size or input_size_for(spec)
    encoder = build_encoder(spec.encoder, encoder_weights, input_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    grid = export_encoder(encoder, out / "encoder.onnx")  # (B, P, D)

    memory, concepts = decoder.prepare(grid)
    memory_names = [f"memory{i}" for i in range(len(memory))]
    concept_outputs = ["concepts"] if concepts is not None else []
    _export(_Prepare(decoder), (grid,), out / "prepare.onnx", ["grid"], memory_names + concept_outputs)

    state = decoder.init_state(memory)
    state_names = [f"state{i}" for i in range(len(state))]
    tokens = torch.full((TRACE_BATCH,), spec.vocab.start_index, dtype=torch.int32)  # (B,)
    _export(
        _Step(decoder, len(state)), (tokens, *state, *memory), out / "step.onnx",
        ["tokens", *state_names, *memory_names], ["logprobs", *[f"new_{n}" for n in state_names]],
    )

    ops = {graph: dict(check_graph(out / f"{graph}.onnx")) for graph in GRAPHS}
    meta = {
        "model_hash": model_hash(model_path, spec.encoder, encoder_weights, input_size),
        "input_size": input_size,
        "model": str(model_path),
        "encoder": spec.encoder,
        "decoder": spec.decoder.kind,
        "opset": OPSET,
        "export_version": EXPORT_VERSION,
        "torch": torch.__version__,
        "grid_shape": list(grid.shape[1:]),
        "memory_shapes": [list(m.shape[1:]) for m in memory],
        "state_shapes": [list(s.shape[1:]) for s in state],
        "vocab_size": len(spec.vocab),
        "concepts": list(spec.concept_names),
        "ops": ops,
    }
    # export.json is written last: its presence marks a complete export.
    (out / "export.json").write_text(json.dumps(meta, indent=2))
    log.info("exported %s (%s + %s decoder) to %s", model_path.name, spec.encoder, spec.decoder.kind, out)
    return OnnxModel(out, meta)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where exports and engines are kept: the config's cache dir, else $XDG_CACHE_HOME/streamcap.

    Never beside the checkpoint: the shipped model lives in the installed
    package, which a service user must not (and often cannot) write to.
    """
    if cache_dir:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamcap"


def cached_export(model_path: str | Path | None = None, encoder_weights: str | None = None,
                  cache_dir: str | Path | None = None, checkpoint: tuple | None = None,
                  input_size: int | None = None) -> OnnxModel:
    """The export of this checkpoint at this input size, made once and then reused (found by its hash)."""
    from streamcap.model.checkpoint import CheckpointError

    model_path = Path(model_path) if model_path else DEFAULT_MODEL
    if not model_path.is_file():
        raise CheckpointError(f"{model_path}: checkpoint not found")
    if checkpoint is None:
        checkpoint = load_checkpoint(model_path)[:2]
    input_size = input_size or input_size_for(checkpoint[0])
    digest = model_hash(model_path, checkpoint[0].encoder, encoder_weights, input_size)
    directory = cache_root(cache_dir) / "onnx" / digest
    meta_file = directory / "export.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("model_hash") == digest:
            return OnnxModel(directory, meta)
    log.info("exporting %s to ONNX in %s (once; later starts reuse it)", model_path.name, directory)
    return export_model(model_path, directory, encoder_weights, checkpoint, input_size)

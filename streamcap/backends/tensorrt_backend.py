"""TensorRT backend (TensorRT 10.x Python API, as on JetPack 6 and NVIDIA's x86 images).

Engines are built from the exported ONNX graphs and cached on disk under a key
of everything that makes an engine unportable: the model hash, the TensorRT
version, the GPU and its compute capability, the precision and the batch
profile. An edge box builds once (minutes on a Jetson) and then starts fast.

Inference uses torch CUDA tensors as device buffers (no pycuda): shapes go in
with `set_input_shape`, buffers with `set_tensor_address`, and the engine runs
with `execute_async_v3` on a private CUDA stream. The search stays on the CPU
(see backends/base.py); memory is uploaded once per search.

`tensorrt` is imported lazily, so this module imports on any machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from streamcap.backends.base import BackendUnavailable, SearchCaptioner
from streamcap.model.preprocess import preprocess_on
from streamcap.backends.calibration import calibration_batches, calibration_images
from streamcap.backends.export import GRAPHS, OnnxModel
from streamcap.model.decoding import DecodeOptions, Description, describe
from streamcap.model.checkpoint import CaptionModelSpec
from streamcap.model.decoder import Memory, State
from streamcap.model.encoder import SPECS

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    """The tensorrt module, or BackendUnavailable saying in one line why not."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not installed ({exc}); it comes with JetPack or NVIDIA's index") from None
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device visible to torch")
    if not trt.__version__.startswith("10."):
        raise BackendUnavailable(f"TensorRT {trt.__version__} found; this backend is written for TensorRT 10.x")
    return trt


def batch_profiles(max_batch: int, beam_size: int) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) batch per graph; the step runs B*K rows under beam search."""
    rows = max_batch * max(1, beam_size)
    return {"encoder": (1, max_batch, max_batch), "prepare": (1, max_batch, max_batch), "step": (1, rows, rows)}


def engine_cache_key(
    model_hash: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str, profiles: dict
) -> str:
    """Engines are only valid for the exact model, TensorRT, GPU, precision and profile."""
    identity = json.dumps([model_hash, trt_version, gpu_name, compute_capability, precision, profiles], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def engine_dir(onnx: OnnxModel, trt_version: str, precision: str, max_batch: int, beam_size: int) -> Path:
    major, minor = torch.cuda.get_device_capability(0)
    key = engine_cache_key(
        onnx.model_hash, trt_version, torch.cuda.get_device_name(0), f"{major}.{minor}",
        precision, batch_profiles(max_batch, beam_size),
    )
    return onnx.cache_root / "tensorrt" / key


def _make_calibrator(trt, batches, batch_size: int, cache_file: Path):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT requires the explicit base init
            self.batches = iter(batches)
            self.device_batch = None  # kept referenced until TensorRT asks for the next one

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.device_batch = torch.from_numpy(batch).cuda()  # (B, 3, S, S)
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache):
            cache_file.write_bytes(bytes(cache))

    return EntropyCalibrator()


def build_engine(trt, onnx_path: Path, engine_path: Path, precision: str, batch_range: tuple[int, int, int], calibrator=None) -> None:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in 10.x
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    low, opt, high = batch_range
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (low, *rest), (opt, *rest), (high, *rest))
    config.add_optimization_profile(profile)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: the parity reference
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see its log above)")
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)  # a crash mid-build never leaves a truncated engine


def build_engines(
    onnx: OnnxModel, precision: str, max_batch: int, beam_size: int,
    calib_dir: str | Path | None = None, calib_images: int = 256,
) -> Path:
    """Build the missing engines for this model, GPU and profile; returns their directory."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    trt = import_tensorrt()
    out = engine_dir(onnx, trt.__version__, precision, max_batch, beam_size)
    out.mkdir(parents=True, exist_ok=True)
    profiles = batch_profiles(max_batch, beam_size)
    for graph in GRAPHS:
        path = out / f"{graph}.engine"
        if path.is_file():
            continue
        # Only the encoder is quantized; the small decoder runs fp16 (int8) or as asked.
        graph_precision = precision if graph == "encoder" or precision == "fp32" else "fp16"
        calibrator = None
        if graph_precision == "int8":
            cache_file = out / "encoder.calib"
            if calib_dir is None and not cache_file.is_file():
                raise BackendUnavailable(
                    "INT8 needs calibration images once: run `streamcap build-engine --precision int8 --calib DIR`"
                )
            paths = calibration_images(calib_dir, calib_images) if calib_dir else []
            # With dynamic shapes TensorRT calibrates at the profile's opt shape, so batches are that size.
            calib_batch = profiles["encoder"][1]
            batches = calibration_batches(paths, SPECS[onnx.meta["encoder"]], calib_batch)
            calibrator = _make_calibrator(trt, batches, calib_batch, cache_file)
        log.info("building TensorRT %s engine for %s (once per model, GPU and profile)", graph_precision, graph)
        build_engine(trt, onnx.path(graph), path, graph_precision, profiles[graph], calibrator)
    (out / "engine.json").write_text(json.dumps({"model_hash": onnx.model_hash, "precision": precision,
                                                   "tensorrt": trt.__version__, "profiles": profiles}, indent=2))
    return out


class TrtEngine:
    """One deserialized engine with an execution context and its own CUDA stream."""

    def __init__(self, trt, path: Path):
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT cannot load this engine; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        to_torch = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64}
        self.dtypes = {n: to_torch[self.engine.get_tensor_dtype(n)] for n in names}
        self.stream = torch.cuda.Stream()

    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs on any device -> outputs on the GPU, by name."""
        # Inputs made on another stream (GPU preprocessing) must be finished first.
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            held = []  # device inputs must outlive the asynchronous execution
            for name in self.inputs:
                tensor = feeds[name].to("cuda", self.dtypes[name], non_blocking=True).contiguous()
                held.append(tensor)
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self.outputs:
                out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outputs[name] = out
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return outputs


class TensorRTCaptioner(SearchCaptioner):
    def __init__(self, onnx: OnnxModel, engines: Path, spec: CaptionModelSpec, options: DecodeOptions,
                 model_path: str, precision: str, max_batch: int):
        super().__init__(spec, options, model_path)
        trt = import_tensorrt()
        self.name = f"tensorrt-{precision}"
        self.max_batch, self.encoder_spec = max_batch, SPECS[spec.encoder]
        self.device = torch.device("cuda")
        self.engines = {graph: TrtEngine(trt, engines / f"{graph}.engine") for graph in GRAPHS}
        self.state_shapes = [tuple(s) for s in onnx.meta["state_shapes"]]
        self.state_names = [f"state{i}" for i in range(len(self.state_shapes))]  # as export.py names them
        self.memory_names = [f"memory{i}" for i in range(len(onnx.meta["memory_shapes"]))]
        self._memory = DeviceMemory(self.device)

    def _encode_on_device(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        grids = []
        for start in range(0, len(frames_bgr), self.max_batch):
            images = preprocess_on(frames_bgr[start : start + self.max_batch], self.encoder_spec, self.device)
            grids.append(self.engines["encoder"]({"images": images})["grid"])  # (B, P, D)
        return torch.cat(grids)

    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        return self._encode_on_device(frames_bgr).cpu()

    def decode(self, grid: torch.Tensor):
        hypotheses, concepts = [], []
        for start in range(0, grid.shape[0], self.max_batch):  # the engines' profile ends at max_batch
            chunk_hypotheses, chunk_concepts = super().decode(grid[start : start + self.max_batch])
            hypotheses += chunk_hypotheses
            if chunk_concepts is not None:
                concepts.append(chunk_concepts)
        return hypotheses, torch.cat(concepts) if concepts else None

    def describe(self, frames_bgr: list[np.ndarray]) -> list[Description]:
        if not frames_bgr:
            return []
        hypotheses, concepts = self.decode(self._encode_on_device(frames_bgr))  # the grid stays on the GPU
        return describe(self.spec.vocab, hypotheses, concepts, self.spec.concept_names)

    def prepare(self, grid: torch.Tensor) -> tuple[Memory, torch.Tensor | None]:
        out = self.engines["prepare"]({"grid": grid})
        concepts = out.get("concepts")
        return tuple(out[name].cpu() for name in self.memory_names), None if concepts is None else concepts.float().cpu()

    def init_state(self, memory: Memory) -> State:
        return tuple(torch.zeros(memory[0].shape[0], *shape) for shape in self.state_shapes)  # (B, H) each

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        feeds = {"tokens": tokens}
        feeds.update(zip(self.state_names, state))
        feeds.update(zip(self.memory_names, self._memory.get(memory)))
        out = self.engines["step"](feeds)
        logprobs = out["logprobs"].float().cpu()  # (B, V)
        return logprobs, tuple(out[f"new_{name}"].float().cpu() for name in self.state_names)  # (B, H) each

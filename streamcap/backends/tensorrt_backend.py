"""TensorRT backend (TensorRT 10 and 11 Python API, as on JetPack 6/7 and NVIDIA's x86 images).

Engines come from `streamcap.backends.tensorrt_build` (strongly typed, cached
per model, TensorRT version, GPU, precision and profile). Inference uses torch
CUDA tensors as device buffers (no pycuda). Each engine binds its inputs and
outputs once per input shape: a call copies its inputs into the bound
buffers on the device, enqueues with `execute_async_v3` on torch's current
stream (so it is ordered with the search's own kernels, with no wait), and
returns views of the bound outputs, valid until its next call. The search
runs on the GPU (`streamcap.model.search`); nothing comes back to the host
until the captions do.

`tensorrt` is imported lazily, so this module imports on any machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from streamcap.backends.base import BackendUnavailable, SearchCaptioner
from streamcap.backends.export import GRAPHS, OnnxModel
from streamcap.backends.tensorrt_build import SUPPORTED_MAJORS, major_version
from streamcap.model.checkpoint import CaptionModelSpec
from streamcap.model.decoder import Memory, State
from streamcap.model.decoding import DecodeOptions
from streamcap.model.preprocess import DeviceResizer, preprocess_on

SHAPES_KEPT = 8  # bound buffer sets per engine (a few batch sizes alternate: the chunks of a large batch)


def import_tensorrt(require_cuda: bool = True):
    """The tensorrt module, or BackendUnavailable saying in one line why not."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("not installed (it comes with JetPack, NVIDIA's containers or NVIDIA's pip index)") from None
    if major_version(trt) not in SUPPORTED_MAJORS:
        raise BackendUnavailable(f"tensorrt {trt.__version__} found; streamcap builds engines with TensorRT "
                                 f"{' or '.join(str(m) for m in SUPPORTED_MAJORS)}")
    if require_cuda and not torch.cuda.is_available():
        raise BackendUnavailable(f"tensorrt {trt.__version__}: no CUDA device visible to torch")
    return trt


def torch_dtypes(trt) -> dict:
    return {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int64: torch.int64,
            trt.int8: torch.int8, trt.bool: torch.bool}


class TrtEngine:
    """One deserialized engine and its execution context, with tensors bound once per input shape."""

    def __init__(self, trt, path: Path, device: torch.device):
        self.trt, self.device = trt, device
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT cannot load this engine; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        to_torch = torch_dtypes(trt)
        self.dtypes = {n: to_torch[self.engine.get_tensor_dtype(n)] for n in names}
        self._buffers: dict[tuple, dict[str, torch.Tensor]] = {}  # input shapes -> every bound tensor
        self._bound: tuple | None = None

    def _bind(self, shapes: tuple) -> dict[str, torch.Tensor]:
        buffers = self._buffers.get(shapes)
        if buffers is None:
            if len(self._buffers) >= SHAPES_KEPT:
                self._buffers.pop(next(iter(self._buffers)))
            buffers = {}
            for name, shape in zip(self.inputs, shapes):
                buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_input_shape(name, shape)
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                buffers[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self._buffers[shapes] = buffers
        else:
            for name, shape in zip(self.inputs, shapes):
                self.context.set_input_shape(name, shape)
        for name, tensor in buffers.items():
            self.context.set_tensor_address(name, tensor.data_ptr())
        self._bound = shapes
        return buffers

    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs on the device (any dtype) -> the bound outputs by name, valid until the next call."""
        shapes = tuple(tuple(feeds[name].shape) for name in self.inputs)
        buffers = self._buffers[shapes] if shapes == self._bound else self._bind(shapes)
        for name in self.inputs:
            buffers[name].copy_(feeds[name])
        stream = torch.cuda.current_stream().cuda_stream if self.device.type == "cuda" else 0
        if not self.context.execute_async_v3(stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return {name: buffers[name] for name in self.outputs}


class TensorRTCaptioner(SearchCaptioner):
    def __init__(self, onnx: OnnxModel, engines: Path, spec: CaptionModelSpec, options: DecodeOptions,
                 model_path: str, precision: str, max_batch: int, trt=None, device: str = "cuda", resize: str = "device"):
        super().__init__(spec, options, model_path)
        trt = trt or import_tensorrt()
        self.name = f"tensorrt-{precision}"
        self.max_batch, self.encoder_spec = max_batch, onnx.encoder_spec
        self.device = torch.device(device)
        self.engines = {graph: TrtEngine(trt, engines / f"{graph}.engine", self.device) for graph in GRAPHS}
        self.state_shapes = [tuple(s) for s in onnx.meta["state_shapes"]]
        self.state_names = [f"state{i}" for i in range(len(self.state_shapes))]  # as export.py names them
        self.memory_names = [f"memory{i}" for i in range(len(onnx.meta["memory_shapes"]))]
        self.resize = resize
        self.resizer = DeviceResizer(self.encoder_spec.input_size, self.device) if self.device.type != "cpu" else None

    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        """(B, P, D) float32 on the device, encoded in chunks the engine's profile allows."""
        grids = []
        for start in range(0, len(frames_bgr), self.max_batch):
            images = preprocess_on(frames_bgr[start : start + self.max_batch], self.encoder_spec, self.device,
                                   self.resize, self.resizer)
            grids.append(self.engines["encoder"]({"images": images})["grid"].float().clone())  # (b, P, D)
        return torch.cat(grids)

    def decode(self, grid: torch.Tensor):
        hypotheses, concepts = [], []
        for start in range(0, grid.shape[0], self.max_batch):  # the engines' profile ends at max_batch
            chunk_hypotheses, chunk_concepts = super().decode(grid[start : start + self.max_batch])
            hypotheses += chunk_hypotheses
            if chunk_concepts is not None:
                concepts.append(chunk_concepts)
        return hypotheses, torch.cat(concepts) if concepts else None

    def prepare(self, grid: torch.Tensor) -> tuple[Memory, torch.Tensor | None]:
        out = self.engines["prepare"]({"grid": grid.to(self.device)})
        concepts = out.get("concepts")
        # Copies: the search keeps the memory while the step engine runs, and the next batch rebinds these buffers.
        return tuple(out[name].clone() for name in self.memory_names), None if concepts is None else concepts.float().clone()

    def init_state(self, memory: Memory) -> State:
        return tuple(torch.zeros(memory[0].shape[0], *shape, device=self.device) for shape in self.state_shapes)  # (B, H) each

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        feeds = {"tokens": tokens}
        feeds.update(zip(self.state_names, state))
        feeds.update(zip(self.memory_names, memory))
        out = self.engines["step"](feeds)
        return out["logprobs"].float(), tuple(out[f"new_{name}"].float() for name in self.state_names)  # (R, V), (R, H)...

"""ONNX Runtime backend: the exported graphs on the CPU or a CUDA device.

On a GPU build, ONNX Runtime's TensorRT execution provider is put in front of
CUDA when present (name "onnxruntime-cuda+tensorrt"); the native TensorRT
backend is still tried first by `auto`.

The search runs in PyTorch on CPU tensors (`prepare` returns them); each step
crosses into ONNX Runtime as numpy arrays, which on the CPU are zero-copy
views of the same memory.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from streamcap.backends.base import BackendUnavailable, SearchCaptioner
from streamcap.backends.export import OnnxModel
from streamcap.model.decoding import DecodeOptions
from streamcap.model.checkpoint import CaptionModelSpec
from streamcap.model.decoder import Memory, State
from streamcap.model.preprocess import preprocess

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(path, device: str = "cpu", threads: int | None = None):
    import onnxruntime as ort

    provider = PROVIDERS[device]
    available = ort.get_available_providers()
    if provider not in available:
        raise BackendUnavailable(f"{provider} not available (onnxruntime has {', '.join(available)})")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the pipeline logs what matters; ORT's warnings are noise here
    # ORT's pool spins between runs by default: on a CPU shared with camera decoders and other processes
    # that burns the time the work needs (benchmarks/bench_cpu_contention.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    providers: list = [provider]
    if device == "cuda":
        if "TensorrtExecutionProvider" in available:
            # ONNX Runtime's own TensorRT path, with its engines cached like ours.
            cache = str(Path(path).parent.parent.parent / "ort-tensorrt")  # <cache>/onnx/<hash>/x.onnx -> <cache>
            providers.insert(0, ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache}))
        providers.append(PROVIDERS["cpu"])  # for any op the GPU providers lack
    session = ort.InferenceSession(str(path), options, providers=providers)
    if session.get_providers()[0] not in (provider, "TensorrtExecutionProvider"):
        # onnxruntime-gpu without a working CUDA silently falls back to the CPU.
        raise BackendUnavailable(f"{provider} failed to initialise (no usable CUDA device or libraries)")
    return session


class OnnxRuntimeCaptioner(SearchCaptioner):
    def __init__(
        self, onnx: OnnxModel, spec: CaptionModelSpec, options: DecodeOptions, model_path: str,
        device: str = "cpu", precision: str = "fp32", encoder_path=None,
    ):
        super().__init__(spec, options, model_path)
        if device == "cpu":
            # With ONNX Runtime doing the heavy work, torch only runs the search's small tensor ops,
            # and its intra-op threads spin against ONNX Runtime's for the same two cores: one
            # thread makes beam search 2.6x faster here (profiled: 13.0 s -> 5.0 s for 20 batches).
            torch.set_num_threads(1)
        self.onnx, self.device = onnx, device
        self.name = f"onnxruntime-{device}" + ("-int8" if precision == "int8" else "")
        self.encoder_spec = onnx.encoder_spec
        self.encoder = make_session(encoder_path or onnx.path("encoder"), device)
        if self.encoder.get_providers()[0] == "TensorrtExecutionProvider":
            self.name += "+tensorrt"
        # The decoder graphs are tiny: one thread beats two (measured on the 2-core box
        # under load: step at batch 8 0.40 ms against 1.18 ms) and leaves a core free.
        self.prepare_session = make_session(onnx.path("prepare"), device, threads=1)
        self.step_session = make_session(onnx.path("step"), device, threads=1)
        self.prepare_outputs = [o.name for o in self.prepare_session.get_outputs()]
        self.memory_names = [name for name in self.prepare_outputs if name.startswith("memory")]
        self.step_outputs = [o.name for o in self.step_session.get_outputs()]
        self.state_names = [i.name for i in self.step_session.get_inputs() if i.name.startswith("state")]
        self.state_shapes = [tuple(s) for s in onnx.meta["state_shapes"]]

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        """Preprocessed float32 (B, 3, S, S) -> grid (B, P, D)."""
        (grid,) = self.encoder.run(["grid"], {"images": np.ascontiguousarray(images, dtype=np.float32)})
        return torch.from_numpy(grid)

    def encode(self, frames_bgr: list[np.ndarray]) -> torch.Tensor:
        return self.encode_images(preprocess(frames_bgr, self.encoder_spec).numpy())  # (B, P, D)

    def prepare(self, grid: torch.Tensor) -> tuple[Memory, torch.Tensor | None]:
        outputs = self.prepare_session.run(self.prepare_outputs, {"grid": grid.float().contiguous().numpy()})
        named = dict(zip(self.prepare_outputs, outputs))
        concepts = named.get("concepts")
        return tuple(torch.from_numpy(named[n]) for n in self.memory_names), None if concepts is None else torch.from_numpy(concepts)

    def init_state(self, memory: Memory) -> State:
        batch = memory[0].shape[0]
        return tuple(torch.zeros(batch, *shape) for shape in self.state_shapes)  # (B, H) each

    def step(self, tokens: torch.Tensor, state: State, memory: Memory) -> tuple[torch.Tensor, State]:
        feeds = {"tokens": tokens.to(torch.int32).numpy()}
        feeds.update((name, s.contiguous().numpy()) for name, s in zip(self.state_names, state))
        feeds.update((name, m.contiguous().numpy()) for name, m in zip(self.memory_names, memory))
        logprobs, *new_state = self.step_session.run(self.step_outputs, feeds)
        return torch.from_numpy(logprobs), tuple(torch.from_numpy(s) for s in new_state)

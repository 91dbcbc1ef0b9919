"""Pick a backend: the first in a fixed chain that loads, saying why the others did not.

`auto` tries tensorrt -> onnxruntime-cuda -> torch-cuda -> onnxruntime-cpu ->
torch-cpu. A backend that cannot load says why in one log line and the next
one is tried; a broken checkpoint or missing encoder weights stops the search,
because every backend would fail the same way.

Precision is a wish: a backend that cannot honour it runs fp32 and says so.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from streamcap.backend_kinds import AUTO_CHAIN, BACKEND_CHOICES
from streamcap.backends.base import BackendUnavailable, SearchCaptioner
from streamcap.backends.export import OnnxModel, cached_export
from streamcap.model.checkpoint import DEFAULT_MODEL, CaptionModelSpec, CheckpointError, load_checkpoint
from streamcap.model.decoding import DecodeOptions
from streamcap.model.encoder import EncoderWeightsError, build_encoder, input_size_for

log = logging.getLogger("streamcap.backend")

CHOICES = BACKEND_CHOICES
FATAL = (CheckpointError, EncoderWeightsError)  # the model is wrong, not the backend


@dataclass
class LoadRequest:
    model_path: Path
    beam_size: int | None = None
    length_penalty: float | None = None
    precision: str = "fp32"
    max_batch: int = 8
    encoder_weights: str | None = None
    calib_dir: str | None = None
    cache_dir: str | None = None  # ONNX exports and engines; default $XDG_CACHE_HOME/streamcap
    input_size: int | None = None  # the config's model.input_size; None: the checkpoint's own
    notes: list[str] = field(default_factory=list)  # precision downgrades, TensorRT's state, for the selection line
    _exports: dict = field(default_factory=dict)

    @functools.cached_property
    def checkpoint(self) -> tuple[CaptionModelSpec, torch.nn.Module]:
        """Read once per selection, however many backends are tried."""
        spec, decoder, _ = load_checkpoint(self.model_path)
        return spec, decoder

    @property
    def spec(self) -> CaptionModelSpec:
        return self.checkpoint[0]

    @property
    def options(self) -> DecodeOptions:
        return DecodeOptions.for_model(self.spec, self.beam_size, self.length_penalty)

    def size_for(self, backend: str) -> int:
        return input_size_for(self.spec, backend, self.input_size)

    def onnx_for(self, backend: str) -> OnnxModel:
        """The ONNX export at this backend's input size, made once per selection (and cached on disk)."""
        size = self.size_for(backend)
        if size not in self._exports:
            self._exports[size] = cached_export(self.model_path, self.encoder_weights, self.cache_dir,
                                                checkpoint=self.checkpoint, input_size=size)
        return self._exports[size]


def _require_cuda() -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailable("no CUDA device visible to torch")


def load_tensorrt(request: LoadRequest, device: str = "cuda", gpu: tuple[str, str] | None = None) -> SearchCaptioner:
    """`device` and `gpu` are for the tests, which run this against a stand-in TensorRT on the CPU."""
    from streamcap.backends.tensorrt_backend import TensorRTCaptioner, import_tensorrt
    from streamcap.backends.tensorrt_build import build_engines

    trt = import_tensorrt(require_cuda=device == "cuda")  # fails fast, before any export work
    options, onnx = request.options, request.onnx_for("tensorrt")
    engines, built = build_engines(onnx, request.precision, request.max_batch, options.beam_size, request.calib_dir,
                                   trt=trt, gpu=gpu)
    request.notes.append(f"tensorrt {trt.__version__}: {'built' if built else 'cached'} {request.precision} engines")
    return TensorRTCaptioner(onnx, engines, request.spec, options, str(request.model_path),
                             request.precision, request.max_batch, trt=trt, device=device)


def load_onnxruntime(request: LoadRequest, device: str) -> SearchCaptioner:
    import onnxruntime

    from streamcap.backends.onnxruntime_backend import PROVIDERS, OnnxRuntimeCaptioner

    if PROVIDERS[device] not in onnxruntime.get_available_providers():
        raise BackendUnavailable(f"{PROVIDERS[device]} not available in this onnxruntime build")
    precision, encoder_path = request.precision, None
    onnx = request.onnx_for(f"onnxruntime-{device}")
    if precision == "int8":
        from streamcap.backends.quantize import int8_encoder_path, quantize_encoder

        encoder_path = int8_encoder_path(onnx)
        if not encoder_path.is_file() and request.calib_dir:
            quantize_encoder(onnx, request.calib_dir)
        if not encoder_path.is_file():
            request.notes.append("no int8 encoder yet (run `streamcap export --int8 --calib DIR`); running fp32")
            precision, encoder_path = "fp32", None
    elif precision != "fp32":
        request.notes.append(f"onnxruntime runs fp32 or int8, not {precision}; running fp32")
        precision = "fp32"
    return OnnxRuntimeCaptioner(onnx, request.spec, request.options, str(request.model_path),
                                device=device, precision=precision, encoder_path=encoder_path)


def load_torch(request: LoadRequest, device: str) -> SearchCaptioner:
    from streamcap.backends.torch_backend import TorchCaptioner

    if device == "cuda":
        _require_cuda()
    wants_half = request.precision == "fp16" and device == "cuda"
    if request.precision != "fp32" and not wants_half:
        request.notes.append(f"torch-{device} does not run {request.precision}; running fp32")
    spec, decoder = request.checkpoint
    encoder = build_encoder(spec.encoder, request.encoder_weights, request.size_for(f"torch-{device}"))
    return TorchCaptioner(spec, decoder, encoder, request.options, str(request.model_path), device,
                          "fp16" if wants_half else "fp32", max_batch=request.max_batch)


LOADERS = {
    "tensorrt": load_tensorrt,
    "onnxruntime-cuda": functools.partial(load_onnxruntime, device="cuda"),
    "torch-cuda": functools.partial(load_torch, device="cuda"),
    "onnxruntime-cpu": functools.partial(load_onnxruntime, device="cpu"),
    "torch-cpu": functools.partial(load_torch, device="cpu"),
}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, BackendUnavailable) else f"{type(exc).__name__}: {text}"


def load_captioner(
    model_path: str | Path | None = None,
    backend: str = "auto",
    beam_size: int | None = None,
    length_penalty: float | None = None,
    precision: str = "fp32",
    max_batch: int = 8,
    encoder_weights: str | None = None,
    calib_dir: str | None = None,
    cache_dir: str | None = None,
    input_size: int | None = None,
    loaders: dict | None = None,
) -> SearchCaptioner:
    """The first backend of `backend`'s chain that loads; raises BackendUnavailable if none does."""
    backend = str(backend)
    if backend not in CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(CHOICES)}")
    loaders = loaders or LOADERS
    request = LoadRequest(Path(model_path) if model_path else DEFAULT_MODEL, beam_size, length_penalty,
                          str(precision), max_batch, str(encoder_weights) if encoder_weights else None, calib_dir,
                          str(cache_dir) if cache_dir else None, input_size)
    skipped = []
    for name in CHOICES[backend]:
        try:
            captioner = loaders[name](request)
        except FATAL:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to load means "try the next one"
            reason = _one_line(exc)
            # Expected absences (no GPU, no TensorRT) are news, not trouble; a crash is trouble.
            level = logging.INFO if isinstance(exc, BackendUnavailable) else logging.WARNING
            log.log(level, "backend %s unavailable: %s", name, reason)
            skipped.append(f"{name}: {reason}")
            continue
        why = "; ".join(skipped + request.notes) or "first choice"
        captioner.selection = f"{captioner.name} ({backend}; {why})"
        log.info("backend: picked %s", captioner.selection)
        return captioner
    raise BackendUnavailable(f"no backend for {backend!r} could load: " + "; ".join(skipped))

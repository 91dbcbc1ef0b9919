"""TensorRT engines from the exported graphs: one builder for TensorRT 10 and 11.

Networks are strongly typed: every layer runs in the type its ONNX graph
gives it, so the precision is chosen by which graph is parsed, not by builder
flags (TensorRT 11 removed the FP16 and INT8 flags, the INT8 calibrator and
the calibration profile; strongly typed TensorRT 10 refuses them):

- fp32: the exported graphs, with TF32 off (fp32 means fp32: the parity reference);
- fp16: the same graphs converted where it is safe (`onnx_fp16`);
- int8: the encoder with explicit Q/DQ nodes calibrated on real frames
  (`quantize`, TensorRT flavour), the decoder graphs in fp16.

The two versions differ in one call here: TensorRT 10 builds a strongly
typed network only when `create_network` is given the STRONGLY_TYPED flag;
TensorRT 11 always does, and deprecates the flag. (Checked against the
10.x and 11.x Python bindings; tests/unit/test_tensorrt_build.py runs this
module against a stand-in of each.)

Engines are cached on disk under a key of everything that makes one
unportable: the export (checkpoint, encoder weights, input size), the
TensorRT version, the GPU and its compute capability, the precision and the
batch profile. An edge box builds once (minutes on a Jetson), then starts fast.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from streamcap.backend_kinds import PRECISIONS
from streamcap.backends.base import BackendUnavailable
from streamcap.backends.export import GRAPHS, OnnxModel

log = logging.getLogger(__name__)

SUPPORTED_MAJORS = (10, 11)
WORKSPACE_BYTES = 1 << 30


def major_version(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt) -> int:
    """Creation flags for a strongly typed network: the one place TensorRT 10 and 11 differ here."""
    if major_version(trt) >= 11:
        return 0  # always strongly typed; the flag is deprecated and ignored
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def batch_profiles(max_batch: int, beam_size: int) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) batch per graph; the step runs B*K rows under beam search."""
    rows = max_batch * max(1, beam_size)
    return {"encoder": (1, max_batch, max_batch), "prepare": (1, max_batch, max_batch), "step": (1, rows, rows)}


def engine_cache_key(model_hash: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str,
                     profiles: dict, input_size: int = 224) -> str:
    """Engines are only valid for the exact model, input size, TensorRT, GPU, precision and profile."""
    identity = json.dumps([model_hash, input_size, trt_version, gpu_name, compute_capability, precision, profiles], sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def gpu_identity() -> tuple[str, str]:
    """(name, compute capability) of the first CUDA device."""
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def engine_dir(onnx: OnnxModel, trt_version: str, precision: str, max_batch: int, beam_size: int,
               gpu: tuple[str, str] | None = None) -> Path:
    name, capability = gpu or gpu_identity()
    key = engine_cache_key(onnx.model_hash, trt_version, name, capability, precision,
                           batch_profiles(max_batch, beam_size), onnx.input_size)
    return onnx.cache_root / "tensorrt" / key


def graphs_for(onnx: OnnxModel, precision: str, calib_dir: str | Path | None = None, calib_images: int = 256) -> dict[str, Path]:
    """The ONNX file each engine is built from at this precision, converted or quantized once beside the export."""
    from streamcap.backends.onnx_fp16 import convert_file
    from streamcap.backends.quantize import int8_encoder_path, quantize_encoder

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return {graph: onnx.path(graph) for graph in GRAPHS}
    paths = {}
    for graph in GRAPHS:
        fp16 = onnx.dir / f"{graph}.fp16.onnx"
        if not fp16.is_file():
            log.info("converting %s to fp16 (once per export)", onnx.path(graph).name)
            convert_file(onnx.path(graph), fp16)
        paths[graph] = fp16
    if precision == "int8":
        qdq = int8_encoder_path(onnx, "tensorrt")
        if not qdq.is_file():
            if calib_dir is None:
                raise BackendUnavailable(
                    "INT8 needs calibration images once: run `streamcap build-engine --precision int8 --calib DIR`")
            quantize_encoder(onnx, calib_dir, calib_images, flavour="tensorrt")
        paths["encoder"] = qdq  # only the encoder is quantized; the decoder runs fp16
    return paths


def build_engine(trt, onnx_path: Path, engine_path: Path, batch_range: tuple[int, int, int], precision: str) -> None:
    """Parse `onnx_path` into a strongly typed network and write its engine for this batch range."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: the parity reference
    low, opt, high = batch_range
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (low, *rest), (opt, *rest), (high, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see its log above)")
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)  # a crash mid-build never leaves a truncated engine


def build_engines(onnx: OnnxModel, precision: str, max_batch: int, beam_size: int, calib_dir: str | Path | None = None,
                  calib_images: int = 256, trt=None, gpu: tuple[str, str] | None = None) -> tuple[Path, bool]:
    """Build the missing engines for this model, GPU and profile: (their directory, whether any was built)."""
    from streamcap.backends.tensorrt_backend import import_tensorrt

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    trt = trt or import_tensorrt()
    out = engine_dir(onnx, trt.__version__, precision, max_batch, beam_size, gpu)
    profiles = batch_profiles(max_batch, beam_size)
    missing = [graph for graph in GRAPHS if not (out / f"{graph}.engine").is_file()]
    if not missing:
        return out, False
    out.mkdir(parents=True, exist_ok=True)
    sources = graphs_for(onnx, precision, calib_dir, calib_images)
    for graph in missing:
        log.info("tensorrt %s: building %s %s engine (once per model, GPU and profile)", trt.__version__, precision, graph)
        build_engine(trt, sources[graph], out / f"{graph}.engine", profiles[graph], precision)
    (out / "engine.json").write_text(json.dumps({
        "model_hash": onnx.model_hash, "input_size": onnx.input_size, "precision": precision, "tensorrt": trt.__version__,
        "profiles": profiles, "graphs": {graph: path.name for graph, path in sources.items()},
    }, indent=2))
    return out, True

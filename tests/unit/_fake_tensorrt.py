"""A stand-in `tensorrt` module with the Python API surface of TensorRT 10 or 11, for machines without it.

TensorRT cannot be installed here (no GPU, no NVIDIA index), so the builder
and runtime code is run against this instead: the one place a stand-in is
right. It follows the bindings of NVIDIA/TensorRT (python/src/infer/pyCore.cpp,
parsers/pyOnnx.cpp) of release/10.3 and of 11.1:

- both: Logger, Builder.create_network/create_builder_config/
  create_optimization_profile/build_serialized_network, OnnxParser.parse_from_file/
  num_errors/get_error, IBuilderConfig.set_memory_pool_limit/set_flag/clear_flag/
  get_flag/add_optimization_profile, Runtime.deserialize_cuda_engine, ICudaEngine's
  name-based tensor API, IExecutionContext.set_input_shape/get_tensor_shape/
  set_tensor_address/execute_async_v3, the DataType aliases (trt.float32, ...);
- 10 only: BuilderFlag.FP16/INT8/BF16, NetworkDefinitionCreationFlag.EXPLICIT_BATCH,
  IBuilderConfig.int8_calibrator and set_calibration_profile, IInt8EntropyCalibrator2,
  Builder.platform_has_fast_fp16;
- 11: those are gone (AttributeError, as in the real module); networks are
  always strongly typed and STRONGLY_TYPED is accepted and ignored.

Behaviour it checks as TensorRT does: a strongly typed network refuses the
precision flags; every dynamic input needs a profile covering it; an engine
only deserializes in the version that built it; executing needs every
tensor's shape and address set. An engine "runs" by reading its input
buffers at the addresses it was given (host memory here: CPU tensors),
running its ONNX graph in ONNX Runtime, and writing the outputs back at
their addresses, so a captioner over it produces real captions. Every call is
recorded in `calls` for the tests to inspect.
"""
from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path

import numpy as np

ONNX_TO_NUMPY = {1: np.float32, 10: np.float16, 6: np.int32, 7: np.int64, 3: np.int8, 9: np.bool_}


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 8


NUMPY_OF = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
            DataType.BOOL: np.bool_, DataType.INT64: np.int64}
ONNX_TO_TRT = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL, 7: DataType.INT64}


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


def make(version: str) -> types.ModuleType:
    """A `tensorrt` module of this version ("10.3.0", "11.1.0", or another to test the refusal)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []

    def record(*call):
        trt.calls.append(call)

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = Severity

        def __init__(self, min_severity=Severity.WARNING):
            self.min_severity = min_severity
            self.messages = []

        def log(self, severity, message):
            self.messages.append((severity, message))
            record("log", severity, message)

    flags = {"TF32": 6, "REFIT": 3, "SPARSE_WEIGHTS": 7, "GPU_FALLBACK": 2, "DEBUG": 1}
    if major < 11:
        flags.update({"FP16": 0, "INT8": 1 << 8, "BF16": 17, "OBEY_PRECISION_CONSTRAINTS": 11,
                      "PREFER_PRECISION_CONSTRAINTS": 12, "DIRECT_IO": 13})
    BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    creation = {"STRONGLY_TYPED": 1 if major < 11 else 0, "PREFER_AOT_PYTHON_PLUGINS": 2, "PREFER_JIT_PYTHON_PLUGINS": 3}
    if major < 11:
        creation["EXPLICIT_BATCH"] = 0
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
    precision_flags = {BuilderFlag[n] for n in ("FP16", "INT8", "BF16") if n in BuilderFlag.__members__}

    class ITensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class INetworkDefinition:
        def __init__(self, creation_flags: int):
            self.strongly_typed = major >= 11 or bool(creation_flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            self.inputs, self.outputs, self.onnx_path = [], [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_output(self, index):
            return self.outputs[index]

    class OnnxParser:
        # The ops the stand-in accepts: what our graphs use (onnx-tensorrt supports them all).
        SUPPORTED = {"Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "DequantizeLinear", "Div",
                     "Exp", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "LogSoftmax", "MatMul",
                     "MaxPool", "Mul", "Pad", "QuantizeLinear", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceSum",
                     "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Squeeze", "Sub", "Tanh",
                     "Transpose", "Unsqueeze"}

        def __init__(self, network, logger):
            self.network, self.logger, self.errors = network, logger, []

        def parse_from_file(self, model):
            import onnx

            record("parse_from_file", model)
            graph = onnx.load(model).graph
            unsupported = sorted({n.op_type for n in graph.node} - self.SUPPORTED)
            if unsupported:
                self.errors.append(f"unsupported ops: {', '.join(unsupported)}")
                return False
            initializers = {i.name for i in graph.initializer}
            for value, into in ((v, self.network.inputs) for v in graph.input if v.name not in initializers):
                dims = tuple(d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim)
                into.append(ITensor(value.name, dims, ONNX_TO_TRT[value.type.tensor_type.elem_type]))
            for value in graph.output:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim)
                self.network.outputs.append(ITensor(value.name, dims, ONNX_TO_TRT[value.type.tensor_type.elem_type]))
            self.network.onnx_path = str(model)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the binding's argument names
            record("set_shape", input, tuple(min), tuple(opt), tuple(max))
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        def __init__(self):
            self.flags, self.profiles, self.pools = set(), [], {}

        def set_memory_pool_limit(self, pool, pool_size):
            self.pools[pool] = pool_size

        def set_flag(self, flag):
            record("set_flag", flag.name)
            self.flags.add(flag)

        def clear_flag(self, flag):
            record("clear_flag", flag.name)
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

    if major < 11:
        def _set_calibrator(self, calibrator):
            record("int8_calibrator", calibrator)
        IBuilderConfig.int8_calibrator = property(lambda self: None, _set_calibrator)
        IBuilderConfig.set_calibration_profile = lambda self, profile: record("set_calibration_profile")

    class IHostMemory(bytes):
        pass

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            record("create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            record("build_serialized_network", network.onnx_path)
            if network.strongly_typed and config.flags & precision_flags:
                self.logger.log(Severity.ERROR, "precision builder flags are not allowed for strongly typed networks")
                return None
            profile = config.profiles[0] if config.profiles else None
            for tensor in network.inputs:
                if -1 in tensor.shape:
                    if profile is None or tensor.name not in profile.shapes:
                        self.logger.log(Severity.ERROR, f"{tensor.name}: dynamic input without an optimization profile")
                        return None
                    low, opt, high = profile.shapes[tensor.name]
                    fixed = all(d == -1 or d == lo == o == hi for d, lo, o, hi in zip(tensor.shape, low, opt, high))
                    if not (fixed and all(a <= b <= c for a, b, c in zip(low, opt, high))):
                        self.logger.log(Severity.ERROR, f"{tensor.name}: profile {low} {opt} {high} does not fit {tensor.shape}")
                        return None
            return IHostMemory(json.dumps({
                "version": version, "onnx": network.onnx_path, "strongly_typed": network.strongly_typed,
                "fp32_exact": BuilderFlag.TF32 not in config.flags,
                "io": [[t.name, list(t.shape), int(t.dtype), "in"] for t in network.inputs]
                      + [[t.name, list(t.shape), int(t.dtype), "out"] for t in network.outputs],
                "profile": {k: [list(s) for s in v] for k, v in (profile.shapes if profile else {}).items()},
            }).encode())

    if major < 11:
        Builder.platform_has_fast_fp16 = property(lambda self: True)
        Builder.platform_has_tf32 = property(lambda self: True)

    class IExecutionContext:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}
            self.session = None

        def set_input_shape(self, name, shape):
            record("set_input_shape", name, tuple(shape))
            low, _, high = self.engine.profile[name]
            if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            batch = next(iter(self.shapes.values()))[0]  # our graphs' outputs follow the batch of the inputs
            return tuple(batch if d == -1 else d for d in self.engine.io[name][0])

        def set_tensor_address(self, name, memory):
            record("set_tensor_address", name)
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle):
            record("execute_async_v3", stream_handle)
            import onnxruntime as ort

            inputs = [n for n, (_, _, mode) in self.engine.io.items() if mode == "in"]
            outputs = [n for n, (_, _, mode) in self.engine.io.items() if mode == "out"]
            if set(inputs) - set(self.shapes) or set(inputs + outputs) - set(self.addresses):
                return False
            if self.session is None:
                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
                options.log_severity_level = 3
                self.session = ort.InferenceSession(self.engine.onnx, options, providers=["CPUExecutionProvider"])
            feeds = {}
            for name in inputs:
                array = np.empty(self.shapes[name], dtype=NUMPY_OF[DataType(self.engine.io[name][1])])
                ctypes.memmove(array.ctypes.data, self.addresses[name], array.nbytes)
                feeds[name] = array
            for name, value in zip(outputs, self.session.run(outputs, feeds)):
                value = np.ascontiguousarray(value, dtype=NUMPY_OF[DataType(self.engine.io[name][1])])
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            return True

    class ICudaEngine:
        def __init__(self, plan):
            self.onnx = plan["onnx"]
            self.io = {name: (tuple(shape), dtype, mode) for name, shape, dtype, mode in plan["io"]}
            self.profile = {k: tuple(tuple(s) for s in v) for k, v in plan["profile"].items()}
            self.plan = plan

        @property
        def num_io_tensors(self):
            return len(self.io)

        def get_tensor_name(self, index):
            return list(self.io)[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if self.io[name][2] == "in" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType(self.io[name][1])

        def get_tensor_shape(self, name):
            return self.io[name][0]

        def create_execution_context(self):
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            plan = json.loads(bytes(serialized_engine))
            if plan["version"] != version:  # engines are not portable across TensorRT versions
                self.logger.log(Severity.ERROR, f"engine built by TensorRT {plan['version']}, this is {version}")
                return None
            return ICudaEngine(plan)

    for name, value in dict(Logger=Logger, Builder=Builder, Runtime=Runtime, OnnxParser=OnnxParser, BuilderFlag=BuilderFlag,
                            NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, MemoryPoolType=MemoryPoolType,
                            TensorIOMode=TensorIOMode, DataType=DataType, ILogger=types.SimpleNamespace(Severity=Severity),
                            float32=DataType.FLOAT, float16=DataType.HALF, int8=DataType.INT8, int32=DataType.INT32,
                            int64=DataType.INT64, bool=DataType.BOOL).items():
        setattr(trt, name, value)
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


def engine_plan(path: Path) -> dict:
    """What the stand-in builder put in an engine file (which graph, typed how, with which profile)."""
    return json.loads(Path(path).read_bytes())

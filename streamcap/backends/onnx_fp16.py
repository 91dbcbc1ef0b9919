"""FP16 copies of the exported graphs, converted where it is safe, for strongly typed TensorRT engines.

A strongly typed TensorRT network (the only kind TensorRT 11 builds) runs
each layer in the type the graph gives it, so half precision has to be in
the ONNX graph itself. This pass rewrites float32 to float16 node by node, as
onnxconverter-common's `convert_float_to_float16` does, with the exceptions
this model needs:

- kept in float32: normalisations, softmax and log-softmax, reductions and
  exponentials (sums of many small terms, or of large ones, lose the most in
  half precision), and every node of the concept head (its calibrated
  probabilities decide what a caption may say; its cost is negligible);
- inputs and outputs stay float32 (the backend feeds and reads float32, and
  the decoder's recurrent state is carried between steps at full precision);
- a Cast is inserted wherever a float32 value meets a float16 node or the
  other way round, once per value and direction; weights used only by
  float16 nodes are stored as float16 (clamped to its range).

tests/unit/test_onnx_precision.py runs the converted graphs in ONNX Runtime
on the CPU against the float32 ones, with the tolerances stated there.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP_FP32_OPS = frozenset({
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "CumSum", "TopK", "ArgMax", "ArgMin", "NonMaxSuppression", "Range",
})
KEEP_FP32_SCOPES = ("/concept_head/",)  # node-name prefixes the torch exporter gives a module's nodes
FP16_MAX = float(np.finfo(np.float16).max)


def _keeps_fp32(node) -> bool:
    return node.op_type in KEEP_FP32_OPS or any(scope in node.name for scope in KEEP_FP32_SCOPES)


def convert_to_fp16(model):
    """A float16 copy of an ONNX model (onnx.ModelProto) with float32 inputs and outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    nodes = list(graph.node)  # one wrapper per node, kept: protobuf makes new ones on every iteration
    float_values = {v.name for v in [*graph.input, *graph.output, *graph.value_info]
                    if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    initializers = {init.name: init for init in graph.initializer}
    float_values |= {name for name, init in initializers.items() if init.data_type == TensorProto.FLOAT}
    for node in nodes:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == TensorProto.FLOAT:
            float_values.add(node.output[0])

    low = {id(node): not _keeps_fp32(node) for node in nodes}
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {node.output[0]: node for node in nodes if node.op_type == "Constant"}
    graph_outputs = {o.name for o in graph.output}

    def stored_fp16(name: str) -> bool:
        """Weights and constants become float16 when every reader is a float16 node."""
        readers = consumers.get(name, [])
        return bool(readers) and name not in graph_outputs and all(low[id(r)] for r in readers)

    # Which float values are produced as float16.
    produced_fp16: set[str] = set()
    for node in nodes:
        if node.op_type == "Constant":
            if node.output[0] in float_values and stored_fp16(node.output[0]):
                produced_fp16.add(node.output[0])
        elif low[id(node)]:
            produced_fp16 |= {o for o in node.output if o in float_values}
    produced_fp16 |= {name for name in initializers if name in float_values and stored_fp16(name)}

    for name in produced_fp16 & set(initializers):
        array = numpy_helper.to_array(initializers[name])
        initializers[name].CopyFrom(numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), name))
    for name in produced_fp16 & set(constants):
        attribute = constants[name].attribute[0]
        array = numpy_helper.to_array(attribute.t)
        attribute.t.CopyFrom(numpy_helper.from_array(np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), attribute.t.name))
    for node in nodes:  # type-bearing attributes of float16 nodes
        if not low[id(node)]:
            continue
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
                produced_fp16 |= set(node.output)
            if node.op_type == "ConstantOfShape" and attribute.name == "value" and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float16), attribute.t.name))
                produced_fp16 |= set(node.output)

    new_nodes = []
    # A float16 graph output: its producer writes a float16 twin that the graph reads, and a Cast restores the output.
    for output in graph.output:
        if output.name in produced_fp16:
            twin = f"{output.name}__fp16"
            for node in nodes:
                node.output[:] = [twin if o == output.name else o for o in node.output]
                node.input[:] = [twin if i == output.name else i for i in node.input]
            float_values.add(twin)
            produced_fp16 = (produced_fp16 - {output.name}) | {twin}
            new_nodes.append(helper.make_node("Cast", [twin], [output.name], name=f"{output.name}__cast", to=TensorProto.FLOAT))

    # Casts where a value's type and a reader's expectation differ, one per value and direction.
    casts: dict[tuple[str, int], str] = {}

    def cast_of(name: str, to: int) -> str:
        if (name, to) not in casts:
            casted = f"{name}__as_{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casted], name=f"{casted}__cast", to=to))
            casts[(name, to)] = casted
        return casts[(name, to)]

    for node in nodes:
        wants = TensorProto.FLOAT16 if low[id(node)] else TensorProto.FLOAT
        for i, name in enumerate(node.input):
            if name not in float_values or node.op_type == "Cast":
                continue  # a Cast reads any type
            has = TensorProto.FLOAT16 if name in produced_fp16 else TensorProto.FLOAT
            if has != wants:
                node.input[i] = cast_of(name, wants)

    nodes = _topological([*nodes, *new_nodes], {v.name for v in graph.input} | set(initializers))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _topological(nodes: list, available: set[str]) -> list:
    """Nodes in an order where each runs after the producers of its inputs (Kahn's algorithm, stable)."""
    produced = {o for node in nodes for o in node.output}
    ready, pending, done = set(available), list(nodes), []
    while pending:
        still = []
        for node in pending:
            if all(not name or name in ready or name not in produced for name in node.input):
                done.append(node)
                ready |= set(node.output)
            else:
                still.append(node)
        if len(still) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near {still[0].name}")
        pending = still
    return done


def convert_file(source: str | Path, target: str | Path) -> Path:
    """Write the float16 copy of `source` to `target` (atomically) and check it."""
    import onnx

    model = convert_to_fp16(onnx.load(str(source)))
    onnx.checker.check_model(model, full_check=True)
    target = Path(target)
    tmp = target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)
    return target

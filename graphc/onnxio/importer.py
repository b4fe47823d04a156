"""Import an ONNX model into graphc's IR, and run any ONNX file on graphc's interpreter.

The import reads the default ONNX domain at opsets 13 to the newest one the installed onnx
defines (an older model is upgraded to 13 first, ``graphc.onnxio.load.upgrade``), in the forms
PyTorch's exporter and the ONNX model zoo write. Names survive: graph
inputs keep their names, initializers and ``Constant`` outputs become ``Const`` nodes named after
their values, and each op node's id is the name of its first output value, so an import followed
by an export keeps every value name. Two exceptions, because an IR value is named by its node:
a second output (Dropout's mask) is ``<node>.mask``, and an output that is directly a graph
input or an initializer is ``<name>_out``.

What it converts on the way in:

- the first dimension of an input may be symbolic (``batch_size``): it becomes ``batch``, and
  ``g.meta["dynamic_batch"]`` is set so that the export names that dimension again;
- ``Identity`` of a constant (PyTorch's shared BatchNormalization buffers) becomes a constant;
- the nodes graphc's export writes for one of its ops that ONNX lacks at the file's opset
  become that op again: ``Heaviside`` (``Cast(GreaterOrEqual(X, t))``), ``Gelu`` below opset
  20 and ``GroupNormalization`` below 21 (``RECOMPOSED``). They are recognized by what the op's
  own lowering writes, names included (``<y>_ge``, ``<y>.threshold``, ``<y>_square``, ...),
  with intermediate values nothing else uses; so export -> import gives back the op, whose
  values the interpreter computes as the op's (not as its rounded steps), and the export after
  it the same file. Other GreaterOrEqual + Cast (PyTorch's ``(x >= t).float()``) and other
  arithmetic import as themselves, keeping their names;
- GroupNormalization-18 (opsets 18 to 20) takes scale and bias per group: constant ones are
  repeated per channel, which is graphc's (and GroupNormalization-21's) form;
- Pad-18's ``axes`` input, when constant, is folded into pads for every axis;
- ``Shape`` and ``Size`` (static in graphc), and the shape arithmetic on their results (nodes
  whose inputs are all constants, one of them so folded: PyTorch's Gather, Unsqueeze, Concat
  for ``x.view(x.size(0), -1)``), become constants; ``g.meta["import_notes"]`` lists each
  constant so made with the nodes folded into it (``graphc compile -v`` prints them).

Quantized models import as they are written, op for op, and the interpreter computes what
their ONNX ops say (onnxruntime with graph optimizations off gives the same numbers): the QDQ
form of ``onnxruntime.quantization.quantize_static`` (QuantizeLinear / DequantizeLinear per
tensor or per axis, uint8 or int8 activations, int8 weights, int32 biases, float ops between
them), quantize_dynamic's DynamicQuantizeLinear + MatMulInteger + Cast + Mul, and files written
with QLinearConv, QLinearMatMul, ConvInteger or MatMulInteger. onnxruntime's QOperator form uses
contrib ops (``com.microsoft`` QGemm, QLinearAdd, ...) and is refused with the way to a QDQ file.

What it refuses, naming the ONNX node: ops graphc does not have (the message lists the ones it
has), attributes it cannot represent, other domains, training-mode BatchNormalization, extra
outputs that are used (BatchNormalization's running statistics), symbolic dimensions other than
the batch, a graph input an op needs as a constant (Reshape's shape) without its value (naming
the input and ``--bind``; ``run_onnx`` binds the values fed, ``graphc.onnxio.bind``), and
external data whose path leaves the model's folder (loading and the opset check are in
``graphc.onnxio.load``).

Float initializers are trainable parameters, except those used only as BatchNormalization
statistics or as settings (Dropout ratio, Clip bounds, Pad values, Reshape shapes, Resize roi
and scales, quantization scales: of QuantizeLinear, DequantizeLinear and the QLinear ops, and a
weight scale multiplied by DynamicQuantizeLinear's scale); ``Constant`` nodes are not. Integer
initializers are parameters where they are quantized weights or biases (int8 weights, int32
biases: the input of a DequantizeLinear, QLinearConv's w and bias, QLinearMatMul's or
MatMulInteger's b), as graphc's own quantize-int8 counts them, and settings elsewhere (zero
points).

>>> import numpy as np
>>> from onnx import TensorProto, helper
>>> relu = helper.make_node("Relu", ["x"], ["y"], name="/act/Relu")
>>> graph = helper.make_graph(
...     [relu], "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> print(from_onnx(model, batch=2))
graph tiny
  %x = Input # (2,3) f32
  %y = Relu(%x) # (2,3) f32
  return %y
>>> run_onnx(model, {"x": np.array([[-1.0, 0.5, 2.0]], np.float32)})
{'y': array([[0. , 0.5, 2. ]], dtype=float32)}
"""

from __future__ import annotations

import functools
import heapq
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphc import ops
from graphc.errors import GraphcError, OpError, UsageError, unknown
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.onnxio.bind import bind_inputs, graph_inputs, needed_inputs, with_bind_hint
from graphc.onnxio.convert import Converter
from graphc.onnxio.fold_shapes import ShapeFolder
from graphc.onnxio.load import (
    DEFAULT_DOMAINS,
    MIN_OPSET,
    _default_opset,
    _load,
    newest_opset,
    upgrade,
)
from graphc.onnxio.recompose import Recomposer
from graphc.ops.base import DTYPE_SHORT, FLOAT_DTYPES

# Shape arithmetic graphc has no op for (Shape, Gather, Slice, Concat, ... fold to constants).
SHAPE_OPS = ("ConstantOfShape", "Range")
# Input ports that take statistics or settings, not learned weights: a float initializer used
# only at these ports is not trainable.
# Input ports where an integer initializer is a quantized weight or bias: a parameter of the
# model (counted like graphc's own quantize-int8 counts them), unlike zero points.
QUANTIZED_WEIGHT_PORTS = {
    ("DequantizeLinear", 0), ("QLinearConv", 3), ("QLinearConv", 8), ("QLinearMatMul", 3),
    ("MatMulInteger", 1), ("ConvInteger", 1),
}
SETTING_PORTS = {
    ("BatchNormalization", 3), ("BatchNormalization", 4),
    ("Dropout", 1), ("Dropout", 2),
    ("Clip", 1), ("Clip", 2),
    ("Pad", 1), ("Pad", 2), ("Pad", 3),
    ("Reshape", 1),
    ("Resize", 1), ("Resize", 2),
    # Quantization scales are settings of the integer grid, like BatchNorm's statistics: a
    # calibration chose them, and training would have to move the integers with them.
    ("QuantizeLinear", 1), ("DequantizeLinear", 1),
    ("QLinearConv", 1), ("QLinearConv", 4), ("QLinearConv", 6),
    ("QLinearMatMul", 1), ("QLinearMatMul", 4), ("QLinearMatMul", 6),
}
# onnxruntime's contrib ops (domain com.microsoft) that its quantization tools write in the
# QOperator format, or that its optimizer leaves in a saved quantized model. graphc refuses
# them: their kernels round as onnxruntime's code does, with no ONNX text to check against.
QUANTIZED_CONTRIB_OPS = frozenset({
    "QGemm", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearConcat", "QLinearConv", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax",
    "QLinearWhere", "QLinearReduceMean", "QAttention", "QEmbedLayerNormalization",
    "DynamicQuantizeLSTM", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QuantizeLinear",
    "DequantizeLinear", "NhwcMaxPool",
})
_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")
# Attributes that have no effect on the types graphc has, dropped on import: Cast's saturate
# and round_mode apply only to float8 targets (refused, as graphc has no float8).
NO_EFFECT_ATTRS = {("Cast", "saturate"), ("Cast", "round_mode")}


@functools.cache
def supported_ops() -> tuple[str, ...]:
    """Return the ONNX op_types the import reads (``Constant`` and graphc's ONNX ops).

    >>> "Conv" in supported_ops() and "Constant" in supported_ops()
    True
    """
    # Heaviside is graphc's own op, not an ONNX one: it is read back from GreaterOrEqual + Cast.
    names = {name for name in ops.REGISTRY if onnx.defs.has(name)} | {"Constant"}
    return tuple(sorted(names))


# ----- the importer -------------------------------------------------------------------------


def _where(node: onnx.NodeProto) -> str:
    if node.name:
        return f"node {node.name!r} ({node.op_type})"
    first = node.output[0] if node.output else ""
    return f"unnamed node ({node.op_type}) producing {first!r}"


def _relocate(err: GraphcError, where: str) -> GraphcError:
    """Return ``err`` naming the ONNX node ``where`` instead of the IR line."""
    return type(err)(err.what, where=where, expected=err.expected, got=err.got, hint=err.hint)


def _dtype(elem_type: int, what: str, where: str) -> np.dtype:
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = None
    if dtype not in DTYPE_SHORT:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in (
            onnx.TensorProto.DataType.values()) else str(elem_type)
        raise GraphcError(f"{what} has a data type graphc does not have", where=where,
                          expected=", ".join(DTYPE_SHORT.values()), got=name)
    return dtype


def _attr_value(attr: onnx.AttributeProto, where: str) -> Any:
    kind = attr.type
    if kind == onnx.AttributeProto.INT:
        return int(attr.i)
    if kind == onnx.AttributeProto.FLOAT:
        return float(attr.f)
    if kind == onnx.AttributeProto.STRING:
        return attr.s.decode()
    if kind == onnx.AttributeProto.INTS:
        return tuple(int(v) for v in attr.ints)
    if kind == onnx.AttributeProto.FLOATS:
        return tuple(float(v) for v in attr.floats)
    raise OpError(f"attribute {attr.name!r} has a kind graphc cannot represent", where=where,
                  expected="int, float, string, ints or floats",
                  got=onnx.AttributeProto.AttributeType.Name(kind))


class _Importer(Recomposer, ShapeFolder, Converter):
    """The state of one import: the graph being built and ONNX value name -> IR value."""

    def __init__(self, model: onnx.ModelProto, batch: int) -> None:
        self.source = model.graph
        self.opset = _default_opset(model)
        self.batch = batch
        self.g = Graph(self.source.name or "graph")
        self.g.meta["opset"] = self.opset
        self.dynamic_batch = False
        self.values: dict[str, Value] = {}
        # Constants not yet in the graph: name -> (array or initializer, trainable). They are
        # read and added at first use, so an unused initializer costs nothing.
        self.pending: dict[str, tuple[np.ndarray | onnx.TensorProto, bool | None]] = {}
        self.initializers = {t.name for t in self.source.initializer}
        self.output_names = {o.name for o in self.source.output}
        # Initializers and their Identity aliases: the ones that may be parameters.
        self.from_initializers = set(self.initializers)
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        self.producers: dict[str, tuple[onnx.NodeProto, int]] = {}
        for node in self.source.node:
            for port, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, port))
            for k, name in enumerate(node.output):
                if name:
                    self.producers[name] = (node, k)
        self.taken = set(self.initializers) | {i.name for i in self.source.input}
        self.taken |= {out for node in self.source.node for out in node.output if out}
        # graphc's multi-node lowerings found in the file (``RECOMPOSED``): id of the last node ->
        # the nodes before it, held back until the last one decides whether they are the op.
        self.lowered: dict[int, list[onnx.NodeProto]] = {}
        self.held: set[int] = set()
        # Constants folded from shape arithmetic: name -> the folded nodes, first to last.
        self.folded: dict[str, list[str]] = {}
        self.batch_kept: dict[str, str] = {}  # folded Reshape shapes whose batch became 0
        # The ONNX node the import refused, if any (a caller may bind its inputs and retry).
        self.failed: onnx.NodeProto | None = None

    # ----- values ---------------------------------------------------------------------------

    def build(self) -> Graph:
        for tensor in self.source.initializer:
            self.pending[tensor.name] = (tensor, None)
        for info in self.source.input:
            if info.name not in self.initializers:
                self._input(info)
        order = self._sorted_nodes()
        self._find_lowered(order)
        for node in order:
            if id(node) in self.held:
                continue
            steps = self.lowered.get(id(node))
            if steps is not None and self._recompose(node, steps, _where(node)):
                continue
            for step in [*(steps or []), node]:
                where = _where(step)
                try:
                    self._node(step, where)
                except GraphcError as err:
                    self.failed = step
                    raise (err if err.where else _relocate(err, where)) from None
        for info in self.source.output:
            where = f"graph output {info.name!r}"
            value = self._value(info.name, where)
            self.g.outputs.append(value)
            declared = info.type.tensor_type.elem_type if info.type.HasField(
                "tensor_type") else 0
            got = self.g.type_of(value).dtype
            if declared and _dtype(declared, "the output", where) != got:
                raise GraphcError("the file declares another data type than graphc infers",
                                  where=where, expected=DTYPE_SHORT[got],
                                  got=DTYPE_SHORT[_dtype(declared, "the output", where)])
        self.g.verify()
        notes = [self._fold_note(name, steps) for name, steps in self.folded.items()
                 if name in self.g.nx and self.g.nx.out_degree(name)]
        if notes:
            self.g.meta["import_notes"] = notes
        if self.dynamic_batch:
            # The export names the first dimension again (N) when this is set.
            self.g.meta["dynamic_batch"] = True
        return self.g

    def _array(self, tensor: onnx.TensorProto, where: str) -> np.ndarray:
        _dtype(tensor.data_type, "the tensor", where)
        try:
            array = numpy_helper.to_array(tensor)
        except Exception as err:  # noqa: BLE001 - onnx raises several types on bad data
            raise GraphcError(f"cannot read the tensor: {err}", where=where) from None
        return np.asarray(array)

    def _trainable(self, name: str, array: np.ndarray) -> bool:
        """A float initializer is trainable unless it only feeds statistics or settings; an
        integer one is a parameter where it is a quantized weight or bias."""
        if np.dtype(array.dtype) not in FLOAT_DTYPES:
            return any((node.op_type, port) in QUANTIZED_WEIGHT_PORTS
                       for node, port in self.consumers.get(name, []))
        return self._feeds_weights(name, set())

    def _feeds_weights(self, name: str, seen: set[str]) -> bool:
        if name in self.output_names:
            return True
        seen.add(name)
        for node, port in self.consumers.get(name, []):
            if node.op_type == "Identity" and node.output and node.output[0] not in seen:
                if self._feeds_weights(node.output[0], seen):
                    return True
            elif (node.op_type, port) not in SETTING_PORTS and not self._scales_dynamically(
                    node, port):
                return True
        return False

    def _scales_dynamically(self, node: onnx.NodeProto, port: int) -> bool:
        """Return whether ``node`` is ``Mul(DynamicQuantizeLinear's y_scale, w_scale)`` with
        ``w_scale`` at ``port``: the scale of the int32 accumulator in quantize_dynamic's files,
        which makes ``w_scale`` a setting like a QuantizeLinear scale."""
        if node.op_type != "Mul" or node.domain not in DEFAULT_DOMAINS or len(node.input) != 2:
            return False
        source = self.producers.get(node.input[1 - port])
        return (source is not None and source[1] == 1
                and source[0].op_type == "DynamicQuantizeLinear"
                and source[0].domain in DEFAULT_DOMAINS)

    def _input(self, info: onnx.ValueInfoProto) -> None:
        where = f"graph input {info.name!r}"
        if not info.type.HasField("tensor_type"):
            raise GraphcError("the input is not a tensor", where=where, expected="a tensor",
                              got=info.type.WhichOneof("value") or "no type")
        ttype = info.type.tensor_type
        dtype = _dtype(ttype.elem_type, "the input", where)
        if not ttype.HasField("shape"):
            raise GraphcError("the input has no shape", where=where,
                              expected="a shape with a size for each axis", got="no shape",
                              hint="Export with a known rank (example inputs of the real "
                                   "shape).")
        shape = []
        for axis, dim in enumerate(ttype.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
                continue
            label = repr(dim.dim_param) if dim.dim_param else "an unnamed dimension"
            if axis > 0:
                raise GraphcError(f"axis {axis} of the input is symbolic", where=where,
                                  expected="a fixed size (only axis 0, the batch, may be "
                                           "symbolic)", got=label,
                                  hint="graphc shapes are static: export without dynamic_axes "
                                       f"for axis {axis}, or fix it with onnx.tools."
                                       "update_model_dims.update_inputs_outputs_dims.")
            shape.append(self.batch)
            self.dynamic_batch = True
        if info.name in self.g.nx:
            raise GraphcError("the name is defined twice", where=where,
                              expected="one input per name", got=repr(info.name))
        self.values[info.name] = self.g.add_input(info.name, shape, dtype)

    def _value(self, name: str, where: str) -> Value:
        """Return the IR value of ONNX value ``name``, adding a pending constant now."""
        if name in self.values:
            return self.values[name]
        if name not in self.pending:
            raise GraphcError(f"value {name!r} is not defined", where=where,
                              expected="a graph input, an initializer or a node output",
                              got=repr(name))
        array = self._pending_array(name)
        trainable = self.pending.pop(name)[1]
        if trainable is None:
            trainable = self._trainable(name, array)
        return self._const(name, array, trainable, where)

    def _pending_array(self, name: str) -> np.ndarray:
        """Return the array of a pending constant, reading an initializer once."""
        data, trainable = self.pending[name]
        if isinstance(data, onnx.TensorProto):
            data = self._array(data, f"initializer {name!r}")
            self.pending[name] = (data, trainable)
        return data

    def _const(self, name: str, array: np.ndarray, trainable: bool, where: str) -> Value:
        if name in self.g.nx:
            raise GraphcError("the value name is defined twice", where=where,
                              expected="each ONNX value defined once", got=repr(name))
        value = self.g.add_const(name, array, trainable=trainable, copy=False)
        self.values[name] = value
        return value

    def _const_array(self, name: str) -> np.ndarray | None:
        """Return the array of a constant ONNX value (pending or added), or ``None``."""
        if name in self.pending:
            return self._pending_array(name)
        return self.g.const_value(self.values.get(name))

    def _fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken or name in self.g.nx:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def _replace_const(self, name: str, array: np.ndarray, where: str) -> Value:
        """Return a constant holding ``array`` in place of constant ``name`` for one node.

        The name is kept when that node is the constant's only user, else a new one is made.
        """
        sole = len(self.consumers.get(name, [])) == 1 and name not in self.output_names
        trainable = name in self.from_initializers and self._trainable(name, array)
        if sole and name in self.pending:
            self.pending.pop(name)
            return self._const(name, array, trainable, where)
        return self._const(self._fresh(f"{name}_converted"), array, trainable, where)

    def _used(self, name: str) -> bool:
        return bool(name) and (name in self.consumers or name in self.output_names)

    # ----- nodes ----------------------------------------------------------------------------

    def _sorted_nodes(self) -> list[onnx.NodeProto]:
        """Return the nodes in a topological order (the file's order when it is one)."""
        nodes = list(self.source.node)
        known = set(self.initializers) | {i.name for i in self.source.input} | {""}
        waiting: dict[str, list[int]] = {}
        missing = []
        for k, node in enumerate(nodes):
            need = {n for n in node.input if n not in known}
            missing.append(len(need))
            for name in need:
                waiting.setdefault(name, []).append(k)
        ready = [k for k, m in enumerate(missing) if m == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            k = heapq.heappop(ready)
            order.append(nodes[k])
            for out in nodes[k].output:
                for j in waiting.pop(out, []):
                    missing[j] -= 1
                    if missing[j] == 0:
                        heapq.heappush(ready, j)
        if len(order) < len(nodes):
            stuck = next(n for k, n in enumerate(nodes) if missing[k] > 0)
            undefined = [n for n in stuck.input if n and n in waiting]
            raise GraphcError("the node uses a value that nothing defines (or a cycle)",
                              where=_where(stuck), expected="values defined by graph inputs, "
                              "initializers or other nodes", got=repr(undefined[0]))
        return order

    def _node(self, node: onnx.NodeProto, where: str) -> None:
        if node.domain not in DEFAULT_DOMAINS:
            raise self._other_domain(node, where)
        if not node.output or not node.output[0]:
            raise OpError("the node has no first output", where=where,
                          expected="a named first output", got="none")
        op = node.op_type
        if op not in supported_ops():
            raise self._unsupported(op, where)
        schema = self._schema(node, where)
        if op == "Constant":
            self._constant(node, where)
            return
        opdef = ops.get(op)
        reduce_axes = None
        if op in ("ReduceMean", "ReduceMax") and any(a.name == "axes" for a in node.attribute):
            node, reduce_axes = self._reduce_axes(node, where)
        attrs = self._attrs(node, schema, opdef, where)
        if op == "Identity" and self._alias(node, where):
            return
        # Converted inputs are made before the others, so that a constant only this node
        # uses can hand its name over to its converted form.
        if op == "GroupNormalization" and self.opset < 21:
            converted = self._group_norm_18(node, attrs, where)
        elif op == "Pad" and len(node.input) > 3 and node.input[3]:
            converted = self._pad_axes(node, where)
        elif reduce_axes is not None:
            converted = {1: reduce_axes}
        elif op == "Reshape" and self.dynamic_batch and len(node.input) > 1 and (
                node.input[1] in self.folded):
            converted = self._reshape_batch(node, attrs, where)
        else:
            converted = {}
        inputs = [converted[port] if port in converted else self._value(n, where) if n else None
                  for port, n in enumerate(node.input)]
        while inputs and inputs[-1] is None:
            inputs.pop()
        if self._fold_shape(node, inputs, attrs, where):
            return
        if op == "BatchNormalization":
            self._check_batchnorm(node, attrs, where)
        variadic = opdef.outputs[-1].endswith("*")
        if op == "Split" and len(inputs) < 2 and "num_outputs" not in attrs:
            # Split-13 without sizes cuts into as many equal parts as the node has outputs.
            attrs["num_outputs"] = len(node.output)
        for k, out in enumerate(node.output):
            if k >= len(opdef.outputs) and self._used(out) and not variadic:
                raise OpError(f"output {k} of {op} ({out!r}) is used, and graphc's {op} has "
                              f"{len(opdef.outputs)} output(s)", where=where,
                              expected=f"outputs 0..{len(opdef.outputs) - 1} only",
                              got=f"output {k} used")
        value = self._add(op, inputs, attrs, node.output[0], where)
        count = len(node.output) if variadic else len(opdef.outputs)
        for k, out in enumerate(node.output[1:count], start=1):
            if out:
                self.values[out] = Value(value.node, k)

    def _other_domain(self, node: onnx.NodeProto, where: str) -> OpError:
        """Return the refusal of an op outside the default domain. onnxruntime's quantized
        contrib ops get the list of such nodes in the file and the way to a file graphc reads.
        """
        got = repr(node.domain)
        hint = "graphc imports standard ONNX ops only; export without custom or contrib ops."
        if node.domain == "com.microsoft" and node.op_type in QUANTIZED_CONTRIB_OPS:
            contrib = [n for n in self.source.node if n.domain == node.domain]
            listed = ", ".join(f"{n.op_type} {n.name!r}" if n.name else f"{n.op_type} (unnamed)"
                               for n in contrib[:4])
            if len(contrib) > 4:
                listed += f", ... ({len(contrib)} in all)"
            got = f"{got} (onnxruntime contrib ops in this file: {listed})"
            hint = ("onnxruntime.quantization writes these in its QOperator format (or with "
                    "UseQDQContribOps); graphc reads its standard QDQ form: re-quantize the float "
                    "model with quantize_static(..., quant_format=QuantFormat.QDQ), 8-bit types "
                    "and no UseQDQContribOps.")
        return OpError("the op is not in the default ONNX domain", where=where,
                       expected="domain '' (ai.onnx)", got=got, hint=hint)

    def _unsupported(self, op: str, where: str) -> OpError:
        err = unknown("op", op, supported_ops(), where=where, cls=OpError)
        hint = err.hint
        if op in SHAPE_OPS:
            hint = (f"graphc shapes are static and it folds shape arithmetic to constants, "
                    f"but has no {op}: export with constant shapes (torch.flatten(x, 1), "
                    "fixed sizes, no tensors created from a shape).")
        return OpError(f"unsupported op {op!r}", where=err.where, expected=err.expected,
                       got=err.got, hint=hint)

    def _schema(self, node: onnx.NodeProto, where: str) -> onnx.defs.OpSchema:
        try:
            return onnx.defs.get_schema(node.op_type, self.opset, "")
        except onnx.defs.SchemaError:
            first = onnx.defs.get_all_schemas_with_history()
            since = min((s.since_version for s in first
                         if s.name == node.op_type and s.domain == ""), default=None)
            raise OpError(f"{node.op_type} does not exist at opset {self.opset}", where=where,
                          expected=f"opset >= {since}" if since else "an ONNX op",
                          got=self.opset) from None

    def _attrs(self, node: onnx.NodeProto, schema: onnx.defs.OpSchema, opdef: ops.OpDef,
               where: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for attr in node.attribute:
            if attr.ref_attr_name:
                raise OpError(f"attribute {attr.name!r} refers to a function attribute",
                              where=where, expected="a value", got=attr.ref_attr_name)
            if attr.name not in schema.attributes:
                raise unknown(f"attribute of {node.op_type} at opset {self.opset}", attr.name,
                              schema.attributes, where=where, cls=OpError)
            if (node.op_type, attr.name) in NO_EFFECT_ATTRS and attr.name not in opdef.attrs:
                continue
            if attr.name not in opdef.attrs:
                raise unknown(f"attribute of {node.op_type} for graphc", attr.name,
                              opdef.attrs, where=where, cls=OpError)
            attrs[attr.name] = _attr_value(attr, where)
        return attrs

    def _add(self, op: str, inputs: list[Value | None], attrs: dict[str, Any], name: str,
             where: str) -> Value:
        if name in self.g.nx or name in self.values:
            raise GraphcError("the value name is defined twice", where=where,
                              expected="each ONNX value defined once", got=repr(name))
        try:
            value = self.g.add_node(op, inputs, attrs, name=name)
        except GraphcError as err:
            raise _relocate(err, where) from None
        self.values[name] = value
        return value

    # ----- ops that need more than a one-to-one copy ----------------------------------------

    def _constant(self, node: onnx.NodeProto, where: str) -> None:
        given = list(node.attribute)
        if len(given) != 1 or given[0].name not in _CONSTANT_ATTRS:
            names = [a.name for a in given]
            raise OpError("Constant must hold one numeric tensor", where=where,
                          expected="one of the attributes " + ", ".join(_CONSTANT_ATTRS),
                          got=", ".join(names) or "none",
                          hint="String and sparse constants are not supported.")
        attr = given[0]
        if attr.name == "value":
            array = self._array(attr.t, where)
        elif attr.name == "value_float":
            array = np.array(attr.f, np.float32)
        elif attr.name == "value_floats":
            array = np.array(list(attr.floats), np.float32)
        elif attr.name == "value_int":
            array = np.array(attr.i, np.int64)
        else:
            array = np.array(list(attr.ints), np.int64)
        name = node.output[0]
        if name in self.values or name in self.pending:
            raise GraphcError("the value name is defined twice", where=where,
                              expected="each ONNX value defined once", got=repr(name))
        if name in self.output_names and name not in self.consumers:
            # A graph output must come from an op node to keep its name (a Const would be
            # exported as an initializer plus an Identity called <name>_out). Ops that use
            # the constant need the Const itself, so a used one keeps the name instead.
            const = self._const(self._fresh(f"{name}_value"), array, False, where)
            self._add("Identity", [const], {}, name, where)
            return
        self.pending[name] = (array, False)

    def _alias(self, node: onnx.NodeProto, where: str) -> bool:
        """Make ``Identity(constant)`` a constant named after its output; return if done."""
        source, out = node.input[0] if node.input else "", node.output[0]
        array = self._const_array(source) if source else None
        if array is None or out in self.output_names:
            return False
        if out in self.values or out in self.pending:
            raise GraphcError("the value name is defined twice", where=where,
                              expected="each ONNX value defined once", got=repr(out))
        trainable = False
        if source in self.from_initializers:
            self.from_initializers.add(out)
            trainable = self._trainable(out, array)
        self.pending[out] = (array, trainable)
        return True


# ----- public API ---------------------------------------------------------------------------


def _prepare(model: onnx.ModelProto | bytes | str | os.PathLike[str]
             ) -> tuple[onnx.ModelProto, int | None]:
    """Return the loaded model at a supported opset and the opset it was upgraded from."""
    return upgrade(_load(model))


def _build(proto: onnx.ModelProto, batch: int, upgraded_from: int | None,
           known: Mapping[str, Any] | None = None,
           given: tuple[str, ...] = ()) -> tuple[Graph, dict[str, np.ndarray]]:
    """Import ``proto``; when an op refuses a graph input because it needs its value (a setting:
    a shape, pads, axes), bind the input to its value in ``known`` and import again.

    Returns the graph and the inputs bound. Without a known value the refusal names the input
    and how to give its value. ``g.meta["import_notes"]`` says what was upgraded and bound
    (``given``: the inputs the caller bound before).
    """
    bound: dict[str, np.ndarray] = {}
    while True:
        importer = _Importer(bind_inputs(proto, bound) if bound else proto, batch)
        try:
            g = importer.build()
            break
        except GraphcError as err:
            names = [n for n in needed_inputs(importer.failed, proto) if n not in bound]
            fed = [n for n in names if known is not None and n in known]
            if fed:
                bound.update({n: np.asarray(known[n]) for n in fed})
                continue
            if names and "constant" in err.what:
                raise with_bind_hint(err, names[0]) from None
            raise
    notes = []
    if upgraded_from is not None:
        g.meta["upgraded_from"] = upgraded_from
        notes.append(f"upgraded opset {upgraded_from} to opset {MIN_OPSET} "
                     "(onnx.version_converter)")
    for name in (*given, *bound):
        value = g.const_value(Value(name)) if name in g.nx else None
        shown = "unused" if value is None else f"= {value.tolist()}"
        notes.append(f"bound graph input {name!r} {shown}; graphc's shapes are static")
    if notes:
        g.meta["import_notes"] = notes + list(g.meta.get("import_notes", ()))
    if bound or given:
        g.meta["bound_inputs"] = sorted({*given, *bound})
    return g, bound


def from_onnx(model: onnx.ModelProto | bytes | str | os.PathLike[str], *,
              batch: int = 1, bind: Mapping[str, Any] | None = None) -> Graph:
    """Import an ONNX model (a ModelProto, its bytes, or a path) into a graphc ``Graph``.

    A symbolic first input dimension becomes ``batch``. Errors name the ONNX node at fault.
    A model older than opset 13 is upgraded first (``g.meta["upgraded_from"]`` says from
    which opset). ``bind`` maps graph input names to values: those inputs become constants
    (``graphc.onnxio.bind``), which ops that need a setting's value (Reshape's shape) require.

    >>> from graphc.models import mlp_tiny
    >>> from graphc.onnxio.export import to_onnx
    >>> g = from_onnx(to_onnx(mlp_tiny.build()))
    >>> g.inputs, g.output_names()
    (['x'], ['y'])
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise UsageError("batch must be a positive integer", where="from_onnx",
                         expected="an int >= 1", got=repr(batch))
    proto, upgraded_from = _prepare(model)
    if bind:
        proto = bind_inputs(proto, bind, where="bind")
    return _build(proto, int(batch), upgraded_from, given=tuple(bind or ()))[0]


def _batch_of(model: onnx.ModelProto, inputs: Mapping[str, Any]) -> int:
    """Return the batch size the feeds give to inputs whose first dimension is symbolic."""
    sizes: dict[str, int] = {}
    for info in graph_inputs(model).values():
        if info.name not in inputs:
            continue
        dims = info.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            shape = np.shape(inputs[info.name])
            if shape:
                sizes[info.name] = int(shape[0])
    if len(set(sizes.values())) > 1:
        raise GraphcError("the inputs disagree on the batch size", where="run_onnx",
                          expected="one size for the symbolic first dimension",
                          got=", ".join(f"{k}: {v}" for k, v in sizes.items()))
    return next(iter(sizes.values()), 1)


def specialize(model: onnx.ModelProto | bytes | str | os.PathLike[str],
               inputs: Mapping[str, Any]) -> tuple[Graph, dict[str, Any]]:
    """Import ``model`` specialized on the values fed: return the graph and the feeds it takes.

    The batch size of a symbolic first dimension is taken from the inputs, and a graph input
    that an op needs as a constant (Reshape's shape, Pad's pads, a Reduce's axes) is bound to
    its value (``graphc.onnxio.bind``); the feeds returned leave the bound inputs out.
    """
    proto, upgraded_from = _prepare(model)
    g, bound = _build(proto, _batch_of(proto, inputs), upgraded_from, inputs)
    return g, {k: v for k, v in inputs.items() if k not in bound}


def run_onnx(model: onnx.ModelProto | bytes | str | os.PathLike[str],
             inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run an ONNX model on graphc's interpreter; return ONNX output name -> array.

    The graph is specialized on the values fed (``specialize``): the batch size of a
    symbolic first dimension, and the inputs an op needs as constants.

    >>> from graphc.models import backprop_example
    >>> from graphc.onnxio.export import to_onnx
    >>> run_onnx(to_onnx(backprop_example.build()), {"x": -2.0, "y": 5.0, "z": -4.0})
    {'f': array(-12., dtype=float32)}
    """
    proto, _ = _prepare(model)
    g, feeds = specialize(proto, inputs)
    results = run(g, feeds)
    return dict(zip([o.name for o in proto.graph.output], results.values(), strict=True))


__all__ = ["MIN_OPSET", "from_onnx", "newest_opset", "run_onnx", "specialize", "supported_ops"]

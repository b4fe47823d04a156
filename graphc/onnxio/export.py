"""Lower a graph to ONNX: checked, deterministic, readable.

The export is checker-clean, deterministic (same graph -> byte-identical file) and keeps graphc's
names: node ids become ONNX node and value names, constants become initializers named after
their parameters (``block1.conv.weight``).

>>> from graphc.models import backprop_example
>>> model = to_onnx(backprop_example.build())
>>> [n.op_type for n in model.graph.node], model.opset_import[0].version
(['Add', 'Mul'], 17)
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphc import ops
from graphc.errors import ExportError, GraphcError
from graphc.files import write_atomic
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.onnxio.order import canonical_order
from graphc.ops.base import LowerCtx, NodeView

DEFAULT_OPSET = 17
MIN_OPSET = 17
_ATTR_TYPES = {
    "int": onnx.AttributeProto.INT,
    "float": onnx.AttributeProto.FLOAT,
    "str": onnx.AttributeProto.STRING,
    "ints": onnx.AttributeProto.INTS,
    "floats": onnx.AttributeProto.FLOATS,
}


def _ir_version(opset: int) -> int:
    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


@functools.cache
def max_opset() -> int:
    """Return the newest default-domain opset that both onnx and onnxruntime support."""
    import onnxruntime as ort

    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "probe",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  ir_version=_ir_version(opset))
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any refusal means this opset is too new
            continue
        return opset
    return MIN_OPSET


def default_opset(g: Graph) -> int:
    """Return the opset to export ``g`` at: an imported model's own (kept within what graphc
    and onnxruntime support), else ``DEFAULT_OPSET``."""
    source = g.meta.get("opset")
    if source is None or source == DEFAULT_OPSET:
        return DEFAULT_OPSET
    return min(max(int(source), MIN_OPSET), max_opset())


def check_opset(opset: int) -> int:
    """Return ``opset`` if graphc can export it and onnxruntime can run it, else raise."""
    if opset == DEFAULT_OPSET:
        return opset
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        import onnxruntime as ort

        raise ExportError(f"opset {opset} cannot be exported for onnxruntime {ort.__version__}",
                          expected=f"an opset from {MIN_OPSET} to {top}", got=opset,
                          hint=f"Use --opset {DEFAULT_OPSET} (the default) or up to {top}.")
    return opset


def _value_info(name: str, ttype: Any, batch: bool) -> onnx.ValueInfoProto:
    shape: list[Any] = list(ttype.shape)
    if batch and shape:
        shape[0] = "N"
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(ttype.dtype),
                                         shape)


def _lower_default(ctx: LowerCtx, view: NodeView, opdef: ops.OpDef) -> None:
    for key in view.attrs:
        if opdef.attrs[key].since > ctx.opset:
            raise ExportError(f"attribute {key} of {opdef.name} does not exist at opset "
                              f"{ctx.opset}", expected=f"opset >= {opdef.attrs[key].since}",
                              got=ctx.opset,
                              hint=f"Export with --opset {opdef.attrs[key].since} or newer.")
    attrs = [helper.make_attribute(k, list(v) if isinstance(v, tuple) else v,
                                   attr_type=_ATTR_TYPES[opdef.attrs[k].kind])
             for k, v in view.attrs.items() if v != ()]
    node = helper.make_node(opdef.name, view.inputs, view.outputs, name=view.name)
    node.attribute.extend(attrs)
    ctx.nodes.append(node)


def _trim(names: list[str]) -> list[str]:
    while names and names[-1] == "":
        names.pop()
    return names


def to_onnx(g: Graph, opset: int | None = None, dynamic_batch: bool | None = None
            ) -> onnx.ModelProto:
    """Lower ``g`` to an ONNX model at ``opset`` (default: ``default_opset(g)``, 17 for models
    built in graphc).

    With ``dynamic_batch`` the first dimension of every input and output is named ``N``; by
    default it is named when ``g.meta["dynamic_batch"]`` says so (imported models).
    """
    if dynamic_batch is None:
        dynamic_batch = bool(g.meta.get("dynamic_batch", False))
    from graphc.version import __version__

    opset = check_opset(default_opset(g) if opset is None else opset)
    ctx = LowerCtx(opset)
    order = g.topo()
    ctx.reserve(order)
    # Only what the outputs need is written: onnxruntime computes every node of the file, and a
    # dead user of a value stops its fusions (Conv + BatchNormalization needs the Conv's only
    # user), which changes the rounding of the live outputs too.
    live = g.live()
    outputs = set(g.outputs)
    inputs, initializers = [], []
    for node in order:
        data = g.nx.nodes[node]
        if data["op"] == INPUT:
            inputs.append(_value_info(node, data["types"][0], dynamic_batch))
            continue
        if node not in live:
            continue
        if data["op"] == CONST:
            initializers.append((node, data["value"]))
            continue
        opdef = ops.get(data["op"])
        view = g.view(node)
        # Optional outputs nobody uses are left unnamed, so onnxruntime need not compute them.
        view.outputs = _trim([name if k == 0 or Value(node, k) in outputs
                              or any(user in live for user, _ in g.users(Value(node, k)))
                              else ""
                              for k, name in enumerate(view.outputs)])
        view.inputs = _trim(view.inputs)
        ctx.reserve(view.outputs)
        try:
            if opdef.lower is None:
                _lower_default(ctx, view, opdef)
            else:
                opdef.lower(ctx, view)
        except GraphcError as err:
            raise err.located(g.format_node(node)) from None
    graph_outputs = []
    for v, name in zip(g.outputs, g.output_names(), strict=True):
        if name != g.value_name(v):
            # An ONNX graph output must be produced by a node and named once.
            ctx.node("Identity", [g.value_name(v)], [name])
        graph_outputs.append(_value_info(name, g.type_of(v), dynamic_batch))
    # Filled in place: make_graph/make_model would copy every initializer twice.
    model = onnx.ModelProto(ir_version=_ir_version(opset), producer_name="graphc",
                            producer_version=__version__)
    model.opset_import.append(helper.make_opsetid("", opset))
    graph = model.graph
    graph.name = g.name
    graph.node.extend(ctx.nodes)
    graph.input.extend(inputs)
    graph.output.extend(graph_outputs)
    for name, array in initializers + ctx.initializers:
        _add_initializer(graph, name, array)
    canonical_order(graph)
    return model


def _varint_bytes(array: np.ndarray) -> int:
    """Return the bytes of ``array``'s int64 values as protobuf varints (a negative value
    takes 10); only counted up to 1024 values (longer arrays stay raw)."""
    if array.size > 1024:
        return array.nbytes
    values = array.reshape(-1).astype(np.int64).view(np.uint64).tolist()
    return sum(max(1, -(-v.bit_length() // 7)) for v in values)


def _add_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor.dims.extend(array.shape)
    if array.dtype == np.bool_ or array.dtype.byteorder == ">":
        tensor.CopyFrom(numpy_helper.from_array(array, name))
    elif array.dtype == np.int64 and _varint_bytes(array) < array.nbytes:
        # Shapes, axes and sizes: small non-negative int64 values take 1-2 bytes as the
        # varints of int64_data instead of 8 in raw_data (the same tensor for every reader).
        tensor.int64_data.extend(array.reshape(-1).tolist())
    else:
        tensor.raw_data = np.ascontiguousarray(array).tobytes()


def to_bytes(g: Graph, opset: int | None = None, dynamic_batch: bool | None = None) -> bytes:
    """Return the serialized ONNX model; the same graph always gives the same bytes."""
    return to_onnx(g, opset, dynamic_batch).SerializeToString(deterministic=True)


def check(model: onnx.ModelProto) -> None:
    """Run ``onnx.checker.check_model(full_check=True)``; raise ExportError if it complains."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"the ONNX checker rejects the model: {err}".splitlines()[0],
                          where=f"graph {model.graph.name}") from err


def save(g: Graph, path: str | os.PathLike[str], opset: int | None = None,
         dynamic_batch: bool | None = None) -> onnx.ModelProto:
    """Export ``g``, check it with the ONNX checker, and write it atomically to ``path``."""
    model = to_onnx(g, opset, dynamic_batch)
    check(model)
    write_atomic(path, model.SerializeToString(deterministic=True))
    return model

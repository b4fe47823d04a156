"""Bind graph inputs to known values: the partial evaluation behind ``--bind`` and ``run_onnx``.

graphc's shapes are static, so an op whose output shape depends on the *values* of an input
(Reshape's ``shape``, Expand's ``shape``, Pad's ``pads``, ``constant_value`` and ``axes``, the
``axes`` of ReduceSum, ReduceMean and ReduceMax, ...) needs that input as a constant. ONNX files
may feed such settings as graph inputs instead (ONNX's own node tests do, and some exporters).
``bind_inputs`` turns named graph inputs into initializers holding the given values: the model
is specialized on them, and computes what the original computes for those values.

Where the values come from:

- ``graphc compile model.onnx --bind shape=1,-1`` and ``from_onnx(model, bind={...})``: the
  user names the inputs and gives their values;
- ``run_onnx`` and ``graphc.backend``: the inputs fed. An input is bound only when an op refuses
  it as a graph input (it needs its value) and a value is fed for it; the others stay inputs.

>>> import numpy as np
>>> from onnx import TensorProto, helper
>>> node = helper.make_node("Reshape", ["x", "shape"], ["y"])
>>> graph = helper.make_graph(
...     [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
...                   helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> bound = bind_inputs(model, {"shape": [3, 2]})
>>> [i.name for i in bound.graph.input], [t.name for t in bound.graph.initializer]
(['x'], ['shape'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphc.errors import GraphcError, UsageError, unknown

# How a refusal tells the user to give an input's value.
BIND_HINT = ("{name!r} is a graph input and graphc needs its value here: give it with "
             "`graphc compile MODEL --bind {name}=V1,V2,...` or from_onnx(model, "
             "bind={{{name!r}: values}}) (run_onnx and graphc.backend bind the values fed).")


def graph_inputs(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Return the graph inputs that are not initializers, by name, in order."""
    initializers = {t.name for t in model.graph.initializer}
    return {i.name: i for i in model.graph.input if i.name not in initializers}


def _declared(info: onnx.ValueInfoProto) -> tuple[np.dtype, list[int | None] | None]:
    ttype = info.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    if not ttype.HasField("shape"):
        return dtype, None
    return dtype, [int(d.dim_value) if d.HasField("dim_value") else None for d in ttype.shape.dim]


def _as_declared(info: onnx.ValueInfoProto, value: Any, where: str) -> np.ndarray:
    """Return ``value`` in the input's declared dtype and shape, or refuse it naming both."""
    what = f"graph input {info.name!r}"
    if not info.type.HasField("tensor_type"):
        raise UsageError(f"{what} is not a tensor and cannot be bound", where=where,
                         expected="a tensor input", got=info.type.WhichOneof("value"))
    dtype, shape = _declared(info)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{what} needs numbers", where=where, expected=str(dtype),
                         got=str(array.dtype))
    with np.errstate(invalid="ignore", over="ignore"):
        cast = array.astype(dtype)
    if dtype.kind in "biu" and not np.array_equal(cast.astype(np.float64),
                                                  array.astype(np.float64)):
        raise UsageError(f"{what} holds {dtype}, and a value does not fit", where=where,
                         expected=f"{dtype} values", got=array.reshape(-1).tolist())
    if shape is None:
        return cast
    if None not in shape:
        size = int(np.prod(shape, dtype=np.int64))
        if cast.size != size:
            raise UsageError(f"{what} has another size than its value", where=where,
                             expected=f"{size} value(s) for shape {tuple(shape)}",
                             got=f"{cast.size} value(s)")
        return cast.reshape(shape)
    if cast.ndim != len(shape) or any(d is not None and d != n for d, n in zip(
            shape, cast.shape, strict=True)):
        raise UsageError(f"{what} has another shape than its value", where=where,
                         expected=str(tuple("?" if d is None else d for d in shape)),
                         got=str(cast.shape))
    return cast


def bind_inputs(model: onnx.ModelProto, values: Mapping[str, Any],
                where: str = "bind") -> onnx.ModelProto:
    """Return a copy of ``model`` in which each named graph input is an initializer holding its
    value (cast to the input's declared dtype, reshaped to its declared shape).

    Unknown names are refused with the list of the graph inputs; ``model`` is not modified.
    """
    inputs = graph_inputs(model)
    for name in values:
        if name not in inputs:
            raise unknown("graph input", name, inputs, where=where, cls=UsageError)
    arrays = {name: _as_declared(inputs[name], value, where) for name, value in values.items()}
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [i for i in bound.graph.input if i.name not in arrays]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    for name, array in arrays.items():
        bound.graph.initializer.append(numpy_helper.from_array(array, name))
    return bound


def needed_inputs(node: onnx.NodeProto | None, model: onnx.ModelProto) -> list[str]:
    """Return the graph inputs that ``node`` (an ONNX node the import refused) reads as settings:
    those at ports after the first (data) one, or the only input of a one-input node
    (ConstantOfShape's shape)."""
    if node is None:
        return []
    inputs = graph_inputs(model)
    ports = node.input[1:] if len(node.input) > 1 else node.input
    return list(dict.fromkeys(n for n in ports if n in inputs))


def with_bind_hint(err: GraphcError, name: str) -> GraphcError:
    """Return ``err`` saying that its value comes from graph input ``name`` and how to bind it
    (the name is also its ``bind_input`` attribute)."""
    bound = type(err)(err.what, where=err.where, expected=err.expected,
                      got=f"graph input {name!r}", hint=BIND_HINT.format(name=name))
    bound.bind_input = name
    return bound


__all__ = ["BIND_HINT", "bind_inputs", "graph_inputs", "needed_inputs", "with_bind_hint"]

"""Gather: pick slices of ``data`` along ``axis`` by an index tensor (ONNX opset 13+).

``output[i_0..i_{a-1}, j_0..j_{q-1}, i_{a+1}..] = data[i_0..i_{a-1}, indices[j_0..j_{q-1}],
i_{a+1}..]``, with negative indices counting from the end. Training uses it for im2col: rows of
a channel-major image picked by a constant index table, so the weight gradient of a
convolution is one matrix product. Its vjp adds each output slice back at its index
(ScatterElements with reduction ``add``), so repeated indices accumulate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    Attr,
    Example,
    OpDef,
    TensorType,
    normalize_axis,
    normalized_indices,
    rng_array,
    with_nonfinite,
)

INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.int32))


def _infer(in_types: list[TensorType | None], attrs: dict[str, Any],
           consts: list[np.ndarray | None]) -> list[TensorType]:
    data, indices = in_types[0], in_types[1]
    if np.dtype(indices.dtype) not in INDEX_DTYPES:
        raise ShapeError("Gather indices must be integers", expected="i64 or i32",
                         got=DTYPE_SHORT.get(np.dtype(indices.dtype), str(indices.dtype)))
    rank = len(data.shape)
    if rank == 0:
        raise ShapeError("Gather needs data of rank >= 1", expected="rank >= 1", got="a scalar")
    axis = normalize_axis(attrs["axis"], rank, "Gather axis")
    shape = data.shape[:axis] + tuple(indices.shape) + data.shape[axis + 1:]
    return [TensorType(tuple(shape), data.dtype)]


def _ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, indices = inputs[0], inputs[1]
    axis = normalize_axis(attrs["axis"], data.ndim, "Gather axis")
    return [np.take(data, normalized_indices(indices, data.shape[axis], axis, "Gather"),
                    axis=axis)]


def _vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dData = zeros with each output slice added at its index (ScatterElements, add)."""
    dy = grads[0]
    data, indices = ctx.in_types[0], ctx.in_types[1]
    axis = normalize_axis(ctx.attrs["axis"], len(data.shape), "Gather axis")
    count = int(np.prod(indices.shape, dtype=np.int64))
    lead, tail = data.shape[:axis], data.shape[axis + 1:]
    flat_shape = (*lead, count, *tail)
    idx = ctx.reshape(ctx.inputs[1], (1,) * len(lead) + (count,) + (1,) * len(tail))
    if np.dtype(indices.dtype) != np.int64:
        idx = ctx.op("Cast", idx, to=7)  # INT64
    idx = ctx.op("Expand", idx, ctx.const(np.array(flat_shape, np.int64), np.int64))
    zeros = ctx.op("Expand", ctx.const(0.0, data.dtype),
                   ctx.const(np.array(data.shape, np.int64), np.int64))
    return [ctx.op("ScatterElements", zeros, idx, ctx.reshape(dy, flat_shape), axis=axis,
                   reduction="add"), None]


def _examples() -> tuple[Example, ...]:
    ints = lambda v: np.array(v, np.int64)  # noqa: E731
    return (
        Example((rng_array((5, 3), seed=1), ints([[0, 4], [2, 2]])), consts=(1,),
                name="axis-0-repeats"),
        Example((rng_array((2, 6, 3), seed=2), ints([5, -1, 0, 3])), {"axis": 1},
                consts=(1,), name="axis-1-negative"),
        Example((rng_array((3, 4), seed=3), ints(2)), {"axis": -1}, consts=(1,),
                name="scalar-index"),
        Example((rng_array((4, 8), seed=4), np.array([[3, 0, 1], [1, 1, 2]], np.int32)),
                consts=(1,), name="int32-im2col-rows"),
    )


GATHER = OpDef(
    name="Gather",
    vjp=_vjp,
    doc="Pick slices of data along axis at the given indices (negative: from the end).",
    inputs=("data", "indices"),
    outputs=("output",),
    attrs={"axis": Attr("int", 0)},
    infer=_infer,
    ref=_ref,
    flops=lambda view: 0,
    examples=_examples(),
)

OPS: list[OpDef] = [with_nonfinite(GATHER, 0, 1)]

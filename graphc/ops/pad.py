"""Pad: pad (or, with negative pads, crop) every axis with a constant, a reflection or the edge.

ONNX semantics as onnxruntime computes them; mode ``wrap`` is refused (onnxruntime's CPU kernel
and the ONNX text disagree on it). The gradient crops the padding back off (constant mode) or
folds each padded position onto the element it copies (edge and reflect).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import OpError, ShapeError, unknown
from graphc.ops.base import (
    Attr,
    Example,
    OpDef,
    TensorType,
    elementwise_flops,
    nonfinite_examples,
    rng_array,
    same_dtype,
)

PAD_MODES = ("constant", "edge", "reflect")


def _shape_str(t: TensorType) -> str:
    return f"shape {t.shape}"


def _i64(ctx: Any, values: Any) -> Any:
    return ctx.const(np.array(list(values), np.int64), np.int64)


def _pad_mode(attrs: dict[str, Any]) -> str:
    mode = attrs.get("mode", "constant")
    if mode == "wrap":
        known = ", ".join(repr(m) for m in PAD_MODES)
        raise OpError("Pad mode 'wrap' is not supported", expected=f"one of {known}",
                      got="'wrap'", hint="Build the wrap-around with Slice and Concat.")
    if mode not in PAD_MODES:
        raise unknown("Pad mode", mode, PAD_MODES, cls=OpError)
    return mode


def _pad_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
               consts: list[np.ndarray | None]) -> list[TensorType]:
    data, pads_t = in_types[0], in_types[1]
    value_t = in_types[2] if len(in_types) > 2 else None
    assert data is not None and pads_t is not None
    mode = _pad_mode(attrs)
    rank = len(data.shape)
    if np.dtype(pads_t.dtype) != np.dtype(np.int64) or tuple(pads_t.shape) != (2 * rank,):
        raise ShapeError("Pad input pads has the wrong type",
                         expected=f"({2 * rank},) i64 (begin and end per axis of the data)",
                         got=str(pads_t))
    if value_t is not None:
        if value_t.size != 1:
            raise ShapeError("Pad constant_value must be a scalar", expected="shape ()",
                             got=_shape_str(value_t))
        same_dtype([data, value_t], "Pad")
    pads = consts[1] if len(consts) > 1 else None
    if pads is None:
        raise ShapeError("Pad needs constant pads to infer its output shape",
                         expected="pads from a Const or initializer", got="a computed value",
                         hint="Fold the pads computation into a constant before Pad.")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    shape = []
    for axis, size in enumerate(data.shape):
        b, e = pads[axis], pads[axis + rank]
        kept = size + min(b, 0) + min(e, 0)
        if kept < 0:
            raise ShapeError("Pad crops more than the axis holds",
                             expected=f"negative pads summing to at most {size} on axis {axis}",
                             got=[b, e])
        if mode != "constant" and kept == 0:
            raise ShapeError(f"Pad mode {mode!r} cannot pad an empty (or fully cropped) axis",
                             expected=f"size >= 1 on axis {axis} after cropping",
                             got=f"size {size}, pads {[b, e]}")
        if mode == "reflect" and max(b, e) >= kept:
            raise ShapeError("Pad mode 'reflect' needs pads smaller than the axis",
                             expected=f"pads < {kept} on axis {axis}", got=[b, e],
                             hint="Use mode 'edge', or pad in several steps.")
        shape.append(size + b + e)
    return [TensorType(tuple(shape), np.dtype(data.dtype))]


def _pad_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    data, pads = inputs[0], inputs[1]
    value = inputs[2] if len(inputs) > 2 else None
    assert data is not None and pads is not None
    mode = _pad_mode(attrs)
    rank = data.ndim
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    begin, end = pads[:rank], pads[rank:]
    # Negative pads crop; crop first, then pad what is positive.
    data = data[tuple(slice(max(0, -b), size - max(0, -e))
                      for b, e, size in zip(begin, end, data.shape, strict=True))]
    widths = [(max(0, b), max(0, e)) for b, e in zip(begin, end, strict=True)]
    if mode == "constant":
        fill = 0 if value is None else np.asarray(value).reshape(-1)[0]
        out = np.pad(data, widths, mode="constant", constant_values=fill)
    else:
        out = np.pad(data, widths, mode=mode)
    return [out.astype(data.dtype, copy=False)]


# --- gradient ---------------------------------------------------------------------------------


def _fold_matrix(mode: str, b: int, kept: int, e: int, dtype: Any) -> np.ndarray:
    """The 0/1 matrix (padded length, kept length) that maps each padded position to the kept
    element it copies under ``mode`` (edge or reflect)."""
    m = np.zeros((b + kept + e, kept), dtype=dtype)
    for i in range(b + kept + e):
        j = i - b
        if mode == "edge":
            j = min(max(j, 0), kept - 1)
        else:
            j = -j if j < 0 else (2 * (kept - 1) - j if j >= kept else j)
        m[i, j] = 1
    return m


def _pad_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Constant mode: crop dY back (Pad with the pads negated); the constant gets the sum of dY
    over the padding. Edge and reflect: fold each padded axis back onto the elements it copies
    (a MatMul with a 0/1 matrix), then undo any crop with zeros."""
    dy = grads[0]
    mode = _pad_mode(ctx.attrs)
    shape = tuple(ctx.in_types[0].shape)
    rank = len(shape)
    pads_value = ctx.g.const_value(ctx.inputs[1])
    if pads_value is None:
        raise OpError("the Pad gradient needs constant pads", got="a computed value")
    pads = [int(p) for p in np.asarray(pads_value).reshape(-1)]
    if mode == "constant":
        dx = ctx.op("Pad", dy, _i64(ctx, [-p for p in pads]), mode="constant")
        out = [dx, None]
        if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
            total = ctx.op("ReduceSum", dy, keepdims=0)
            kept = ctx.op("ReduceSum", dx, keepdims=0)
            out.append(ctx.reshape(ctx.op("Sub", total, kept), ctx.in_types[2].shape))
        return out
    dtype = ctx.out_types[0].dtype
    grad = dy
    for axis in range(rank):
        b, e = max(pads[axis], 0), max(pads[axis + rank], 0)
        if not (b or e):
            continue
        kept = shape[axis] + min(pads[axis], 0) + min(pads[axis + rank], 0)
        perm = [a for a in range(rank) if a != axis] + [axis]
        moved = ctx.op("Transpose", grad, perm=perm)
        folded = ctx.op("MatMul", moved, ctx.const(_fold_matrix(mode, b, kept, e, dtype), dtype))
        grad = ctx.op("Transpose", folded, perm=[int(i) for i in np.argsort(perm)])
    uncrop = [max(-p, 0) for p in pads]
    if any(uncrop):
        grad = ctx.op("Pad", grad, _i64(ctx, uncrop), mode="constant")
    return [grad] + [None] * (len(ctx.inputs) - 1)


def _pad_examples() -> tuple[Example, ...]:
    x = rng_array((1, 2, 4, 5), seed=21)
    pads = np.array([0, 1, 2, 1, 0, 2, 1, 3], dtype=np.int64)
    return (
        Example((x, pads, np.array(0.5, dtype=np.float32)), {"mode": "constant"}, (1, 2),
                "constant"),
        Example((x, np.array([0, 0, -1, 2, 0, 1, 1, -2], dtype=np.int64)), {}, (1,),
                "constant-crop"),
        Example((x, np.array([0, 0, 3, 1, 0, 0, 1, 4], dtype=np.int64)), {"mode": "reflect"},
                (1,), "reflect"),
        Example((x, pads), {"mode": "edge"}, (1,), "edge"),
    )


PAD = OpDef(
    name="Pad",
    vjp=_pad_vjp,
    doc="Pad (or, with negative pads, crop) every axis with a constant, reflection or edge.",
    inputs=("data", "pads", "constant_value?"),
    outputs=("output",),
    attrs={"mode": Attr("str", "constant")},
    infer=_pad_infer,
    ref=_pad_ref,
    nonfinite=nonfinite_examples(_pad_examples(), 0, 1, 2, 3),
    examples=_pad_examples(),
    flops=elementwise_flops(1),
)

OPS: list[OpDef] = [PAD]

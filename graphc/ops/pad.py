"""Pad: pad (or, with negative pads, crop) every axis with a constant, the edge, a reflection,
a mirror or a wrap-around.

Modes, on an axis holding ``a b c d`` padded by 2 on each side:

- ``constant``: ``0 0 | a b c d | 0 0`` (or ``constant_value``);
- ``edge``: ``a a | a b c d | d d``;
- ``reflect``: ``c b | a b c d | c b`` (mirrored about the edge cell, which is not repeated);
- ``symmetric``: ``b a | a b c d | d c`` (mirrored with the edge cell repeated; the course's
  mirror padding, numpy's ``np.pad(mode="symmetric")``); not an ONNX mode: a graphc mode;
- ``wrap``: ``c d | a b c d | a b`` (the axis repeated periodically).

ONNX semantics as onnxruntime computes them: negative pads crop first, then the rest is padded.
``symmetric`` is exported as Slice and Concat nodes per padded axis (exact), and so is ``wrap``
below opset 19 (where ONNX's Pad has no wrap mode). The gradient crops the padding back off
(constant mode) or folds each padded position onto the element it copies (the other modes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import OpError, ShapeError, unknown
from graphc.ops.base import (
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    nonfinite_examples,
    rng_array,
    same_dtype,
)

PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")
# The first opset whose ONNX Pad has the mode; graphc lowers the others to Slice + Concat.
ONNX_PAD_MODES = {"constant": 1, "edge": 1, "reflect": 1, "wrap": 19}


def _shape_str(t: TensorType) -> str:
    return f"shape {t.shape}"


def _i64(ctx: Any, values: Any) -> Any:
    return ctx.const(np.array(list(values), np.int64), np.int64)


def _pad_mode(attrs: dict[str, Any]) -> str:
    mode = attrs.get("mode", "constant")
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
    if rank == 0:
        # onnxruntime's Pad kernel refuses a scalar ("Input tensor has no dimensions").
        raise ShapeError("Pad of a scalar is not supported", expected="data of rank >= 1",
                         got="shape ()", hint="A scalar has no axis to pad: use Identity.")
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
        return [np.pad(data, widths, mode="constant", constant_values=fill)
                .astype(data.dtype, copy=False)]
    out = data
    for axis, (b, e) in enumerate(widths):
        if b or e:
            out = np.take(out, source_index(mode, b, out.shape[axis], e), axis=axis)
    return [np.ascontiguousarray(out)]


# --- gradient ---------------------------------------------------------------------------------


def source_index(mode: str, begin: int, kept: int, end: int) -> np.ndarray:
    """Return, for each position of an axis of ``kept`` cells padded by ``begin`` and ``end``
    under ``mode`` (not constant), the cell it copies; pads longer than the axis repeat the
    pattern, as ``np.pad`` does.

    >>> source_index("symmetric", 2, 3, 4).tolist()
    [1, 0, 0, 1, 2, 2, 1, 0, 0]
    """
    i = np.arange(-begin, kept + end)
    if mode == "edge":
        return np.clip(i, 0, kept - 1)
    if mode == "wrap":
        return i % kept
    if mode == "symmetric":
        period = i % (2 * kept)
        return np.where(period < kept, period, 2 * kept - 1 - period)
    if kept == 1:  # reflect of one cell
        return np.zeros_like(i)
    period = i % (2 * kept - 2)
    return np.where(period < kept, period, 2 * kept - 2 - period)


def _fold_matrix(mode: str, b: int, kept: int, e: int, dtype: Any) -> np.ndarray:
    """The 0/1 matrix (padded length, kept length) that maps each padded position to the kept
    element it copies under ``mode`` (any mode but constant)."""
    source = source_index(mode, b, kept, e)
    m = np.zeros((source.size, kept), dtype=dtype)
    m[np.arange(source.size), source] = 1
    return m


def runs(source: np.ndarray) -> list[tuple[int, int, int]]:
    """Split a source index into maximal runs of consecutive cells, each ``(first, last,
    step)`` with step +1 or -1: one Slice of the axis each.

    >>> runs(np.array([1, 0, 0, 1, 2, 2, 1]))
    [(1, 0, -1), (0, 2, 1), (2, 1, -1)]
    """
    out = []
    i = 0
    while i < source.size:
        j = i + 1
        step = int(source[j] - source[i]) if j < source.size else 1
        if step not in (1, -1):
            step = 1
        else:
            while j < source.size and source[j] - source[j - 1] == step:
                j += 1
        out.append((int(source[i]), int(source[j - 1]), step))
        i = j
    return out


def _lower(ctx: LowerCtx, view: NodeView) -> None:
    """A Pad node when ONNX has the mode at this opset; otherwise crop with one Slice, then
    per padded axis one Slice per run of the source index and a Concat (exact copies)."""
    mode = view.full_attrs["mode"]
    if ONNX_PAD_MODES.get(mode, ctx.opset + 1) <= ctx.opset:
        attrs = {"mode": mode} if "mode" in view.attrs else {}
        ctx.node("Pad", view.inputs, view.outputs, **attrs)
        return
    shape = view.in_types[0].shape
    rank = len(shape)
    pads = [int(p) for p in np.asarray(view.consts[1]).reshape(-1)]
    name, current = view.name, view.inputs[0]

    def ints(base: str, values: list[int]) -> str:
        return ctx.const(f"{name}.{base}", np.array(values, np.int64))

    def emit(op: str, inputs: list[str], base: str, last: bool, **attrs: Any) -> str:
        if last:
            ctx.node(op, inputs, view.outputs[:1], **attrs)
            return view.outputs[0]
        out = ctx.fresh(f"{name}_{base}")
        ctx.node(op, inputs, [out], **attrs)
        return out

    padded_axes = [a for a in range(rank) if pads[a] > 0 or pads[a + rank] > 0]
    kept = [size + min(pads[a], 0) + min(pads[a + rank], 0) for a, size in enumerate(shape)]
    cropped = [a for a in range(rank) if pads[a] < 0 or pads[a + rank] < 0]
    if cropped:
        starts = [max(0, -pads[a]) for a in cropped]
        ends = [starts[i] + kept[a] for i, a in enumerate(cropped)]
        current = emit("Slice", [current, ints("crop_starts", starts), ints("crop_ends", ends),
                                 ints("crop_axes", cropped)], "crop", not padded_axes)
    if not cropped and not padded_axes:
        emit("Identity", [current], "copy", True)
    for k, axis in enumerate(padded_axes):
        b, e = max(pads[axis], 0), max(pads[axis + rank], 0)
        pieces = []
        for first, last, step in runs(source_index(mode, b, kept[axis], e)):
            if step == 1 and (first, last) == (0, kept[axis] - 1):
                pieces.append(current)
                continue
            # A negative end counts from the axis end; with step -1, -kept - 1 is "before 0".
            stop = last + 1 if step == 1 else last - 1 - kept[axis]
            pieces.append(emit("Slice", [current, ints("starts", [first]), ints("ends", [stop]),
                                         ints("axes", [axis]), ints("steps", [step])],
                               f"axis{axis}_slice", False))
        current = emit("Concat", pieces, f"axis{axis}", k == len(padded_axes) - 1, axis=axis)


def _pad_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Constant mode: crop dY back (Pad with the pads negated); the constant gets the sum of dY
    over the padding. Other modes: fold each padded axis back onto the elements it copies
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
        Example((x, np.array([0, 0, 3, 1, 0, 0, 4, 5], dtype=np.int64)), {"mode": "symmetric"},
                (1,), "symmetric"),
        Example((x, np.array([0, 1, -1, 2, 0, 0, 7, -1], dtype=np.int64)),
                {"mode": "symmetric"}, (1,), "symmetric-crop-long-pads"),
        Example((x, np.array([0, 0, 2, 6, 0, 1, 5, 1], dtype=np.int64)), {"mode": "wrap"}, (1,),
                "wrap"),
        Example((x, np.array([1, 0, -2, 1, 0, 0, 1, -1], dtype=np.int64)), {"mode": "wrap"},
                (1,), "wrap-crop"),
        Example((rng_array((2, 3, 6), seed=22), np.array([0, 0, 2, 0, 0, 3], dtype=np.int64)),
                {"mode": "symmetric"}, (1,), "1d-symmetric"),
        Example((rng_array((1, 2, 3, 3, 4), seed=23),
                 np.array([0, 0, 1, 2, 1, 0, 0, 2, 0, 3], dtype=np.int64)), {"mode": "symmetric"},
                (1,), "3d-symmetric"),
    )


PAD = OpDef(
    name="Pad",
    vjp=_pad_vjp,
    doc="Pad (or, with negative pads, crop) every axis: constant, edge, reflect, symmetric "
        "(mirror repeating the edge) or wrap.",
    lower=_lower,
    inputs=("data", "pads", "constant_value?"),
    outputs=("output",),
    attrs={"mode": Attr("str", "constant")},
    infer=_pad_infer,
    ref=_pad_ref,
    nonfinite=nonfinite_examples(_pad_examples(), 0, 1, 2, 3, 4, 6, 8, 9),
    examples=_pad_examples(),
    flops=elementwise_flops(1),
)

OPS: list[OpDef] = [PAD]

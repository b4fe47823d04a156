"""Ops that read or change a tensor's shape: Shape, Size, Squeeze, Unsqueeze, Slice, Split
(ONNX opset 13+ semantics; Shape's ``start``/``end`` from opset 15, Split's ``num_outputs``
from opset 18).

graphc's shapes are static, so the settings these ops take as inputs (axes, starts, ends, steps,
split sizes) must be constants. Shape and Size depend only on their input's static type: the
ONNX import folds them, and the shape arithmetic after them (Gather, Unsqueeze, Concat, ...), to
constants, which is how PyTorch's ``x.view(x.size(0), -1)`` becomes a Reshape to a constant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    normalize_axis,
    rng_array,
    type_of,
    with_nonfinite,
)

I64 = np.dtype(np.int64)


def _ints(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _const_ints(consts: list[np.ndarray | None], in_types: list[TensorType | None], port: int,
                what: str) -> list[int] | None:
    """Return the 1-D int64 constant at ``port`` as a list (``None`` if the port is absent),
    or raise ShapeError for a computed value or another type."""
    if port >= len(in_types) or in_types[port] is None:
        return None
    value = consts[port] if port < len(consts) else None
    if value is None:
        raise ShapeError(f"{what} must be a constant", expected="an int64 initializer",
                         got="a computed value",
                         hint="graphc shapes are static: give it as a constant.")
    if value.dtype != I64 or value.ndim != 1:
        raise ShapeError(f"{what} must be a 1-D int64 tensor", expected="(k,) i64",
                         got=str(in_types[port] or type_of(value)))
    return [int(v) for v in value]


def _reshape_back_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """The gradient of a reshape is the gradient reshaped back (the axes input gets none)."""
    return [ctx.reshape(grads[0], ctx.in_types[0].shape), None]


# --- Shape, Size ------------------------------------------------------------------------------


def _shape_range(rank: int, start: int, end: int | None) -> tuple[int, int]:
    """Return Shape's ``[start, end)`` clamped to ``0..rank`` (negative: from the end)."""
    def clamp(k: int) -> int:
        return min(max(k + rank if k < 0 else k, 0), rank)

    return clamp(start), clamp(rank if end is None else end)


def _shape_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    start, end = _shape_range(len(in_types[0].shape), attrs["start"], attrs["end"])
    return [TensorType((max(0, end - start),), I64)]


def _shape_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    start, end = _shape_range(x.ndim, attrs["start"], attrs["end"])
    return [_ints(x.shape[start:end]).reshape(-1)]


SHAPE = OpDef(
    name="Shape",
    doc="The input's shape as a 1-D int64 tensor (dimensions start..end-1, clamped).",
    inputs=("data",),
    outputs=("shape",),
    attrs={"start": Attr("int", 0, since=15), "end": Attr("int", None, since=15)},
    infer=_shape_infer,
    ref=_shape_ref,
    examples=(
        Example((rng_array((2, 3, 4), seed=1),), name="whole"),
        Example((rng_array((2, 3, 4, 5), seed=2),), {"start": 1, "end": -1}, name="start-end"),
        Example((rng_array((2, 3), seed=3),), {"start": -5, "end": 9}, name="clamped"),
        Example((_ints([[1, 2]]),), name="int64"),
    ),
    flops=lambda view: 0,
    vjp=None,
)


def _size_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                consts: list[np.ndarray | None]) -> list[TensorType]:
    return [TensorType((), I64)]


def _size_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.array(inputs[0].size, dtype=np.int64)]


SIZE = OpDef(
    name="Size",
    doc="The number of elements of the input as an int64 scalar.",
    inputs=("data",),
    outputs=("size",),
    attrs={},
    infer=_size_infer,
    ref=_size_ref,
    examples=(
        Example((rng_array((2, 3, 4), seed=4),), name="3d"),
        Example((np.array(1.5, np.float32),), name="scalar"),
    ),
    flops=lambda view: 0,
    vjp=None,
)


# --- Squeeze, Unsqueeze -----------------------------------------------------------------------


def _squeeze_axes(shape: tuple[int, ...], axes: list[int] | None) -> tuple[int, ...]:
    if axes is None:
        return tuple(k for k, d in enumerate(shape) if d == 1)
    rank = len(shape)
    norm = [normalize_axis(a, rank, "Squeeze axis") for a in axes]
    if len(set(norm)) != len(norm):
        raise ShapeError("Squeeze axes repeat an axis", expected="distinct axes", got=axes)
    for a in norm:
        if shape[a] != 1:
            raise ShapeError(f"Squeeze axis {a} has size {shape[a]}", expected="axes of size 1",
                             got=f"shape {shape}")
    return tuple(sorted(norm))


def _squeeze_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    axes = _squeeze_axes(x.shape, _const_ints(consts, in_types, 1, "Squeeze axes"))
    return [TensorType(tuple(d for k, d in enumerate(x.shape) if k not in axes), x.dtype)]


def _squeeze_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    given = None if len(inputs) < 2 or inputs[1] is None else [int(a) for a in inputs[1]]
    return [np.squeeze(x, axis=_squeeze_axes(x.shape, given)).copy()]


SQUEEZE = OpDef(
    name="Squeeze",
    doc="Remove the given axes of size 1 (axes absent: every axis of size 1).",
    inputs=("data", "axes?"),
    outputs=("squeezed",),
    attrs={},
    infer=_squeeze_infer,
    ref=_squeeze_ref,
    examples=(
        Example((rng_array((2, 1, 3, 1), seed=5), _ints([1])), consts=(1,), name="one-axis"),
        Example((rng_array((1, 3, 1, 4), seed=6), _ints([-2, 0])), consts=(1,),
                name="negative-axes"),
        Example((rng_array((1, 3, 1, 4), seed=7),), name="all-ones"),
        Example((_ints([[5]]), _ints([0, 1])), consts=(1,), name="int64-to-scalar"),
    ),
    flops=lambda view: 0,
    vjp=_reshape_back_vjp,
)


def _unsqueeze_shape(shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    rank = len(shape) + len(axes)
    norm = [normalize_axis(a, rank, "Unsqueeze axis") for a in axes]
    if len(set(norm)) != len(norm):
        raise ShapeError("Unsqueeze axes repeat an axis", expected="distinct axes", got=axes)
    rest = iter(shape)
    return tuple(1 if k in norm else next(rest) for k in range(rank))


def _unsqueeze_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                     consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    axes = _const_ints(consts, in_types, 1, "Unsqueeze axes")
    return [TensorType(_unsqueeze_shape(x.shape, axes), x.dtype)]


def _unsqueeze_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, axes = inputs
    return [x.reshape(_unsqueeze_shape(x.shape, [int(a) for a in axes]))]


UNSQUEEZE = OpDef(
    name="Unsqueeze",
    doc="Insert axes of size 1 at the given positions of the output.",
    inputs=("data", "axes"),
    outputs=("expanded",),
    attrs={},
    infer=_unsqueeze_infer,
    ref=_unsqueeze_ref,
    examples=(
        Example((rng_array((2, 3), seed=8), _ints([0])), consts=(1,), name="front"),
        Example((rng_array((2, 3), seed=9), _ints([-1, 1])), consts=(1,), name="two-axes"),
        # PyTorch's view(x.size(0), -1): a gathered dimension (a scalar) made 1-D.
        Example((np.array(4, np.int64), _ints([0])), consts=(1,), name="int64-scalar"),
    ),
    flops=lambda view: 0,
    vjp=_reshape_back_vjp,
)


# --- Slice ------------------------------------------------------------------------------------


def _slice_indices(shape: tuple[int, ...], starts: list[int], ends: list[int],
                   axes: list[int] | None, steps: list[int] | None) -> list[np.ndarray]:
    """Return, for every axis, the input positions that Slice keeps (ONNX's clamping)."""
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError("Slice starts, ends, axes and steps differ in length",
                         expected="one length", got=f"{len(starts)}, {len(ends)}, "
                                                    f"{len(axes)}, {len(steps)}")
    norm = [normalize_axis(a, rank, "Slice axis") for a in axes]
    if len(set(norm)) != len(norm):
        raise ShapeError("Slice axes repeat an axis", expected="distinct axes", got=axes)
    keep = [np.arange(d, dtype=np.int64) for d in shape]
    for axis, start, end, step in zip(norm, starts, ends, steps, strict=True):
        if step == 0:
            raise ShapeError("Slice step is 0", expected="a nonzero step", got=steps)
        n = shape[axis]
        start = start + n if start < 0 else start
        end = end + n if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), n), min(max(end, 0), n)
        else:
            start, end = min(max(start, 0), n - 1), min(max(end, -1), n - 1)
        keep[axis] = np.arange(start, end, step, dtype=np.int64)
    return keep


def _slice_settings(in_types: list[TensorType | None], consts: list[np.ndarray | None]
                    ) -> list[np.ndarray]:
    starts = _const_ints(consts, in_types, 1, "Slice starts")
    ends = _const_ints(consts, in_types, 2, "Slice ends")
    axes = _const_ints(consts, in_types, 3, "Slice axes")
    steps = _const_ints(consts, in_types, 4, "Slice steps")
    return _slice_indices(in_types[0].shape, starts, ends, axes, steps)


def _slice_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    keep = _slice_settings(in_types, consts)
    return [TensorType(tuple(len(k) for k in keep), in_types[0].dtype)]


def _slice_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    keep = _slice_settings([None if a is None else type_of(a) for a in inputs], list(inputs))
    return [x[np.ix_(*keep)] if x.ndim else x.copy()]


def _slice_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX is dY at the kept positions and 0 elsewhere: a Pad for unit steps, else dY scattered
    into zeros at the kept positions' flat indices (each position is kept at most once)."""
    dy = grads[0]
    x = ctx.in_types[0]
    consts = [ctx.g.const_value(v) for v in ctx.inputs]
    keep = _slice_settings(ctx.in_types, consts)
    contiguous = all(len(k) < 2 or k[1] - k[0] == 1 for k in keep)
    if contiguous and all(len(k) for k in keep):
        pads = [int(k[0]) for k in keep] + [d - int(k[-1]) - 1 for k, d in zip(keep, x.shape,
                                                                              strict=True)]
        if not any(pads):
            return [dy, None, None, None, None]
        return [ctx.op("Pad", dy, ctx.const(_ints(pads), np.int64), mode="constant"),
                None, None, None, None]
    flat = np.arange(x.size, dtype=np.int64).reshape(x.shape)[np.ix_(*keep)].reshape(-1)
    zeros = ctx.op("Expand", ctx.const(0.0, x.dtype), ctx.const(_ints([x.size]), np.int64))
    scattered = ctx.op("ScatterElements", zeros, ctx.const(flat, np.int64),
                       ctx.reshape(dy, (flat.size,)), axis=0)
    return [ctx.reshape(scattered, x.shape), None, None, None, None]


def _slice_examples() -> tuple[Example, ...]:
    x = rng_array((4, 5, 6), seed=10)
    return (
        Example((x, _ints([1, 0]), _ints([3, -1])), consts=(1, 2), name="first-axes"),
        Example((x, _ints([-4]), _ints([100]), _ints([2])), consts=(1, 2, 3),
                name="clamped-end"),
        Example((x, _ints([0, 5]), _ints([10, 0]), _ints([1, 2]), _ints([2, -2])),
                consts=(1, 2, 3, 4), name="steps-negative"),
        Example((x, _ints([-1]), _ints([-7]), _ints([-2]), _ints([-1])), consts=(1, 2, 3, 4),
                name="reverse"),
        # PyTorch's chunk and narrow of a shape: x.shape[1:] as a slice of a Shape output.
        Example((_ints([2, 3, 4]), _ints([1]), _ints([9223372036854775807])), consts=(1, 2),
                name="int64-to-max"),
    )


SLICE = OpDef(
    name="Slice",
    doc="Take starts..ends by steps along the given axes (ONNX clamping, negative from the end).",
    inputs=("data", "starts", "ends", "axes?", "steps?"),
    outputs=("output",),
    attrs={},
    infer=_slice_infer,
    ref=_slice_ref,
    examples=_slice_examples(),
    flops=lambda view: 0,
    vjp=_slice_vjp,
)


# --- Split ------------------------------------------------------------------------------------


def _split_sizes(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> tuple[int, list[int]]:
    x = in_types[0]
    rank = len(x.shape)
    if rank == 0:
        raise ShapeError("Split needs an input of rank >= 1", expected="rank >= 1",
                         got="a scalar")
    axis = normalize_axis(attrs["axis"], rank, "Split axis")
    n = x.shape[axis]
    split = _const_ints(consts, in_types, 1, "Split split")
    count = attrs["num_outputs"]
    if (split is None) == (count is None):
        raise ShapeError("Split needs either the split input or num_outputs",
                         expected="exactly one of them",
                         got="both" if split is not None else "neither")
    if split is not None:
        if any(s < 0 for s in split) or sum(split) != n:
            raise ShapeError(f"Split sizes do not add up to axis {axis}'s size",
                             expected=f"sizes >= 0 with sum {n}", got=split)
        return axis, split
    if count < 1 or count > n:
        raise ShapeError("Split num_outputs is out of range", expected=f"1 to {n}", got=count)
    # ONNX 18: parts of ceil(n / count), the last one smaller when count does not divide n.
    part = -(-n // count)
    sizes = [min(part, n - k * part) for k in range(count)]
    if sizes[-1] <= 0:
        raise ShapeError(f"Split of {n} into {count} parts of {part} leaves an empty part",
                         expected="num_outputs that ceil-divides the axis", got=count)
    return axis, sizes


def _split_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    axis, sizes = _split_sizes(in_types, attrs, consts)
    return [TensorType(x.shape[:axis] + (s,) + x.shape[axis + 1:], x.dtype) for s in sizes]


def _split_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    types = [None if a is None else type_of(a) for a in inputs]
    axis, sizes = _split_sizes(types, attrs, list(inputs))
    return [part.copy() for part in np.split(x, np.cumsum(sizes)[:-1], axis=axis)]


def _split_lower(ctx: LowerCtx, view: NodeView) -> None:
    """Name every output (ONNX counts them); below opset 18, num_outputs becomes the split
    sizes as a constant input."""
    names = [view.outputs[k] if k < len(view.outputs) and view.outputs[k] else
             ctx.fresh(f"{view.name}.outputs_{k}") for k in range(len(view.out_types))]
    attrs: dict[str, Any] = {"axis": view.full_attrs["axis"]} if "axis" in view.attrs else {}
    inputs = list(view.inputs[:1])
    if len(view.inputs) > 1 and view.inputs[1]:
        inputs.append(view.inputs[1])
    elif ctx.opset >= 18:
        attrs["num_outputs"] = view.full_attrs["num_outputs"]
    else:
        axis = normalize_axis(view.full_attrs["axis"], len(view.in_types[0].shape), "Split axis")
        sizes = _ints([t.shape[axis] for t in view.out_types])
        inputs.append(ctx.const(view.name + ".split", sizes))
    ctx.node("Split", inputs, names, **attrs)


def _split_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX is the outputs' gradients joined along the axis (zeros for an unused output)."""
    axis = normalize_axis(ctx.attrs["axis"], len(ctx.in_types[0].shape), "Split axis")
    parts = []
    for grad, t in zip(grads, ctx.out_types, strict=True):
        if grad is None:
            grad = ctx.op("Expand", ctx.const(0.0, t.dtype), ctx.const(_ints(t.shape), np.int64))
        parts.append(grad)
    joined = parts[0] if len(parts) == 1 else ctx.op("Concat", *parts, axis=axis)
    return [joined, None]


def _split_examples() -> tuple[Example, ...]:
    return (
        Example((rng_array((2, 6, 3), seed=11), _ints([1, 3, 2])), {"axis": 1}, consts=(1,),
                name="sizes"),
        # PyTorch's chunk(3, dim=-1) at opset 18 and later.
        Example((rng_array((2, 3, 8), seed=12),), {"axis": -1, "num_outputs": 3},
                name="num-outputs-uneven"),
        Example((rng_array((4, 2), seed=13),), {"num_outputs": 2}, name="num-outputs-even"),
        Example((_ints([[1, 2, 3, 4]]), _ints([3, 1])), {"axis": 1}, consts=(1,),
                name="int64"),
    )


SPLIT = OpDef(
    name="Split",
    doc="Cut the input along axis into parts of the given sizes, or into num_outputs parts.",
    inputs=("input", "split?"),
    outputs=("outputs*",),
    attrs={"axis": Attr("int", 0), "num_outputs": Attr("int", None, since=18)},
    infer=_split_infer,
    ref=_split_ref,
    examples=_split_examples(),
    lower=_split_lower,
    flops=elementwise_flops(0),
    vjp=_split_vjp,
)


OPS: list[OpDef] = [
    with_nonfinite(SHAPE, 0),
    with_nonfinite(SIZE, 0),
    with_nonfinite(SQUEEZE, 0, 2),
    with_nonfinite(UNSQUEEZE, 0, 1),
    with_nonfinite(SLICE, 0, 2, 3),
    with_nonfinite(SPLIT, 0, 1),
]

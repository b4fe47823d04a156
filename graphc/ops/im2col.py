"""Im2Col: the patches a convolution reads, as the columns of one matrix (a graphc op), for 1, 2
or 3 spatial axes.

For X of shape (N, C, *S) (S = (L), (H, W) or (D, H, W)) and a window (``kernel_shape``,
``strides``, ``dilations``, ``pads`` as in Conv), the output has shape (C*prod(k), prod(OUT)*N):
row ``(c, *tap)``, column ``(*o, n)`` holds the padded X[n, c, o*s + tap*d - begin] (per
spatial axis). A Conv is then one matrix product, ``W.reshape(O, C*prod(k)) @ cols``, whose
output is channel-major (O, *OUT, N). Training lowers the Conv of a trained weight this way, so
that the forward product and the weight gradient (``dY @ cols^T``) share the columns and run as
two large Gemms.

Not an ONNX op: it is lowered to Transpose (X to channel-major, so one entry is a row of N
contiguous values), Pad, Reshape and one Gather of rows with a constant index table. Its vjp
adds every column entry back to the cell it was read from: the same Gather of rows with the
inverse table (a cell is read by at most prod(k) taps; missing taps read an extra zero row),
then a ReduceSum over the taps.
"""

from __future__ import annotations

import math
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
    need_float,
    rng_array,
    with_nonfinite,
)
from graphc.ops.window import Window, all_tap_slices, need_spatial, window


def _win(x_shape: tuple[int, ...], attrs: dict[str, Any]) -> Window:
    kernel = tuple(attrs["kernel_shape"])
    k = len(x_shape) - 2
    if len(kernel) != k or min(kernel) < 1:
        raise ShapeError("Im2Col kernel_shape needs one positive size per spatial axis",
                         expected=f"{k} values >= 1", got=list(kernel))
    return window("Im2Col", tuple(x_shape[2:]), kernel, attrs)


def _padded_size(x_shape: tuple[int, ...], win: Window) -> tuple[int, ...]:
    return tuple(size + b + max(e, 0)
                 for size, b, e in zip(x_shape[2:], win.begin, win.end, strict=True))


def _grid(*sizes: int) -> list[np.ndarray]:
    return np.meshgrid(*(np.arange(s) for s in sizes), indexing="ij", sparse=True)


def gather_table(c: int, win: Window, padded: tuple[int, ...]) -> np.ndarray:
    """Row of the channel-major padded X, (C*prod(padded), N), that each column entry reads:
    shape (C*prod(k), prod(OUT))."""
    k = win.rank
    grids = _grid(c, *win.kernel, *win.out)
    rows = grids[0]
    for axis in range(k):
        tap, out = grids[1 + axis], grids[1 + k + axis]
        rows = rows * padded[axis] + out * win.strides[axis] + tap * win.dilations[axis]
    taps, outs = math.prod(win.kernel), math.prod(win.out)
    return np.ascontiguousarray(rows.reshape(c * taps, outs), dtype=np.int64)


def _readers(win: Window, axis: int, size: int, tap: int) -> np.ndarray:
    """For each input position along ``axis``, the output position whose window reads it
    through ``tap`` (``o * stride + tap * dilation - begin = position``), or -1."""
    span = np.arange(size) + win.begin[axis] - tap * win.dilations[axis]
    out = np.where(span % win.strides[axis] == 0, span // win.strides[axis], -1)
    out[(span < 0) | (out >= win.out[axis])] = -1
    return out


def scatter_table(x_shape: tuple[int, ...], win: Window) -> np.ndarray:
    """For each input cell (c, *position) and tap, the row of the columns reshaped to
    (C*prod(k)*prod(OUT), N) that reads it, or the extra zero row C*prod(k)*prod(OUT):
    shape (C*prod(S), prod(k))."""
    c, sizes = x_shape[1], tuple(x_shape[2:])
    k = win.rank
    taps, outs = math.prod(win.kernel), math.prod(win.out)
    zero_row = c * taps * outs
    table = np.full((c, *sizes, taps), zero_row, dtype=np.int64)
    channel = np.arange(c).reshape(c, *(1,) * k)
    for t, index in enumerate(win.taps()):
        row = channel * taps + t
        ok = np.ones((1, *(1,) * k), dtype=bool)
        for axis in range(k):
            o = _readers(win, axis, sizes[axis], index[axis])
            o = o.reshape((1,) + tuple(-1 if a == axis else 1 for a in range(k)))
            row = row * win.out[axis] + o
            ok = ok & (o >= 0)
        table[..., t] = np.where(ok, row, zero_row)
    return table.reshape(c * math.prod(sizes), taps)


def _infer(in_types: list[TensorType | None], attrs: dict[str, Any],
           consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    need_float(x, "Im2Col input X")
    need_spatial("Im2Col input X", len(x.shape))
    win = _win(x.shape, attrs)
    n, c = x.shape[:2]
    return [TensorType((c * math.prod(win.kernel), math.prod(win.out) * n), x.dtype)]


def _ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    n, c, *sizes = x.shape
    win = _win(x.shape, attrs)
    k = win.rank
    xp = np.zeros((n, c, *_padded_size(x.shape, win)), x.dtype)
    xp[(slice(None), slice(None),
        *(slice(b, b + s) for b, s in zip(win.begin, sizes, strict=True)))] = x
    cols = np.empty((c, math.prod(win.kernel), *win.out, n), x.dtype)
    channel_major = (1, *range(2, 2 + k), 0)
    for t, slices in enumerate(all_tap_slices(win)):
        cols[:, t] = xp[(slice(None), slice(None), *slices)].transpose(channel_major)
    return [cols.reshape(c * math.prod(win.kernel), math.prod(win.out) * n)]


def _lower(ctx: LowerCtx, view: NodeView) -> None:
    x_shape = view.in_types[0].shape
    n, c, *sizes = x_shape
    k = len(sizes)
    win = _win(x_shape, view.full_attrs)
    size_p = _padded_size(x_shape, win)
    name = view.name
    current = ctx.fresh(name + "_chwn")
    ctx.node("Transpose", [view.inputs[0]], [current],
             perm=[1, *range(2, 2 + k), 0])
    if size_p != tuple(sizes):
        ends = [p - s - b for p, s, b in zip(size_p, sizes, win.begin, strict=True)]
        pads = np.array([0, *win.begin, 0, 0, *ends, 0], np.int64)
        padded = ctx.fresh(name + "_padded")
        ctx.node("Pad", [current, ctx.const(name + ".pads", pads)], [padded])
        current = padded
    rows = ctx.fresh(name + "_rows")
    shape_rows = np.array([c * math.prod(size_p), n], np.int64)
    ctx.node("Reshape", [current, ctx.const(name + ".rows", shape_rows)], [rows])
    picked = ctx.fresh(name + "_picked")
    ctx.node("Gather", [rows, ctx.const(name + ".table", gather_table(c, win, size_p))],
             [picked], axis=0)
    shape = np.array(_infer(list(view.in_types), view.full_attrs, [])[0].shape, np.int64)
    ctx.node("Reshape", [picked, ctx.const(name + ".shape", shape)], view.outputs)


def _vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX[c, *p, n] = sum over the taps that read (c, *p) of their column entries."""
    dcols = grads[0]
    x_shape = ctx.in_types[0].shape
    n, c, *sizes = x_shape
    k = len(sizes)
    win = _win(x_shape, ctx.attrs)
    rows = ctx.reshape(dcols, (math.prod(ctx.out_types[0].shape) // n, n))
    zero = ctx.const(np.zeros((1, n)), ctx.out_types[0].dtype)
    rows = ctx.op("Concat", rows, zero, axis=0)
    taps = ctx.op("Gather", rows, ctx.const(scatter_table(x_shape, win), np.int64), axis=0)
    summed = ctx.op("ReduceSum", taps, ctx.const(np.array([1], np.int64), np.int64), keepdims=0)
    return [ctx.op("Transpose", ctx.reshape(summed, (c, *sizes, n)),
                   perm=[k + 1, *range(k + 1)])]


def _flops(view: NodeView) -> int:
    return 0


IM2COL = OpDef(
    name="Im2Col",
    vjp=_vjp,
    doc="The patches a convolution window reads (1, 2 or 3 spatial axes), as columns "
        "(C*prod(k), prod(OUT)*N) (graphc op).",
    inputs=("X",),
    outputs=("cols",),
    attrs={
        "kernel_shape": Attr("ints", ()),
        "strides": Attr("ints", ()),
        "dilations": Attr("ints", ()),
        "pads": Attr("ints", ()),
        "auto_pad": Attr("str", "NOTSET"),
    },
    infer=_infer,
    ref=_ref,
    lower=_lower,
    flops=_flops,
    examples=(
        Example((rng_array((2, 3, 5, 5), seed=1),), {"kernel_shape": [3, 3],
                                                     "pads": [1, 1, 1, 1]}, name="same-3x3"),
        Example((rng_array((2, 2, 7, 6), seed=2),),
                {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1]},
                name="stride-2-uneven-pads"),
        Example((rng_array((1, 2, 7, 7), seed=3),),
                {"kernel_shape": [2, 3], "dilations": [2, 1], "strides": [1, 2]},
                name="dilated-valid"),
        Example((rng_array((2, 3, 9), seed=4),), {"kernel_shape": [3], "strides": [2],
                                                  "dilations": [2], "pads": [2, 1]},
                name="1d-stride-dilation-pads"),
        Example((rng_array((2, 2, 4, 3, 5), seed=5),),
                {"kernel_shape": [2, 2, 3], "strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1]},
                name="3d-stride-pads"),
        Example((rng_array((1, 2, 5, 4, 4), seed=6),),
                {"kernel_shape": [2, 3, 2], "auto_pad": "SAME_UPPER", "strides": [2, 1, 2]},
                name="3d-same-upper"),
    ),
)

OPS: list[OpDef] = [with_nonfinite(IM2COL, 0, 1, 2, 3, 4)]

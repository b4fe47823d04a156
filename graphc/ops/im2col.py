"""Im2Col: the patches a 2-D convolution reads, as the columns of one matrix (a graphc op).

For X of shape (N, C, H, W) and a window (``kernel_shape``, ``strides``, ``dilations``,
``pads`` as in Conv), the output has shape (C*kh*kw, OH*OW*N): row ``(c, ky, kx)``, column
``(oy, ox, n)`` holds the padded X[n, c, oy*sy + ky*dy - top, ox*sx + kx*dx - left]. A Conv is
then one matrix product, ``W.reshape(O, C*kh*kw) @ cols``, whose output is channel-major
(O, OH, OW, N). Training lowers the Conv of a trained weight this way, so that the forward
product and the weight gradient (``dY @ cols^T``) share the columns and run as two large Gemms.

Not an ONNX op: it is lowered to Transpose (X to channel-major, so one entry is a row of N
contiguous values), Pad, Reshape and one Gather of rows with a constant index table. Its vjp
adds every column entry back to the pixel it was read from: the same Gather of rows with the
inverse table (a pixel is read by at most kh*kw taps; missing taps read an extra zero row),
then a ReduceSum over the taps.
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
    need_float,
    rng_array,
    with_nonfinite,
)
from graphc.ops.conv import _Window, _window


def _win(x_shape: tuple[int, ...], attrs: dict[str, Any]) -> _Window:
    kernel = tuple(attrs["kernel_shape"])
    if len(kernel) != 2 or min(kernel) < 1:
        raise ShapeError("Im2Col kernel_shape needs one positive size per spatial axis",
                         expected="2 values (kH, kW) >= 1", got=list(kernel))
    return _window("Im2Col", tuple(x_shape[2:]), (kernel[0], kernel[1]), attrs)


def _padded_size(x_shape: tuple[int, ...], win: _Window) -> tuple[int, int]:
    return (x_shape[2] + win.begin[0] + max(win.end[0], 0),
            x_shape[3] + win.begin[1] + max(win.end[1], 0))


def gather_table(c: int, win: _Window, padded: tuple[int, int]) -> np.ndarray:
    """Row of the channel-major padded X, (C*Hp*Wp, N), that each column entry reads:
    shape (C*kh*kw, OH*OW)."""
    hp, wp = padded
    (kh, kw), (oh, ow) = win.kernel, win.out
    ch, ky, kx, oy, ox = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), np.arange(oh),
                                     np.arange(ow), indexing="ij", sparse=True)
    rows = (ch * hp * wp + (oy * win.strides[0] + ky * win.dilations[0]) * wp
            + ox * win.strides[1] + kx * win.dilations[1])
    return np.ascontiguousarray(rows.reshape(c * kh * kw, oh * ow), dtype=np.int64)


def _readers(win: _Window, axis: int, size: int, tap: int) -> np.ndarray:
    """For each input position along ``axis``, the output position whose window reads it
    through ``tap`` (``o * stride + tap * dilation - begin = position``), or -1."""
    span = np.arange(size) + win.begin[axis] - tap * win.dilations[axis]
    out = np.where(span % win.strides[axis] == 0, span // win.strides[axis], -1)
    out[(span < 0) | (out >= win.out[axis])] = -1
    return out


def scatter_table(x_shape: tuple[int, ...], win: _Window) -> np.ndarray:
    """For each input pixel (c, y, x) and tap (ky, kx), the row of the columns reshaped to
    (C*kh*kw*OH*OW, N) that read it, or the extra zero row C*kh*kw*OH*OW: (C*H*W, kh*kw)."""
    _, c, h, w = x_shape
    (kh, kw), (oh, ow) = win.kernel, win.out
    zero_row = c * kh * kw * oh * ow
    table = np.full((c, h, w, kh, kw), zero_row, dtype=np.int64)
    channel = np.arange(c)[:, None, None]
    for ky in range(kh):
        oy = _readers(win, 0, h, ky)[None, :, None]
        for kx in range(kw):
            ox = _readers(win, 1, w, kx)[None, None, :]
            row = ((channel * kh * kw + ky * kw + kx) * oh + oy) * ow + ox
            table[:, :, :, ky, kx] = np.where((oy >= 0) & (ox >= 0), row, zero_row)
    return table.reshape(c * h * w, kh * kw)


def _infer(in_types: list[TensorType | None], attrs: dict[str, Any],
           consts: list[np.ndarray | None]) -> list[TensorType]:
    x = in_types[0]
    need_float(x, "Im2Col input X")
    if len(x.shape) != 4:
        raise ShapeError("Im2Col needs an (N, C, H, W) input", expected="rank 4",
                         got=f"shape {x.shape}")
    win = _win(x.shape, attrs)
    n, c = x.shape[:2]
    kh, kw = win.kernel
    return [TensorType((c * kh * kw, win.out[0] * win.out[1] * n), x.dtype)]


def _ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    n, c, h, w = x.shape
    win = _win(x.shape, attrs)
    hp, wp = _padded_size(x.shape, win)
    top, left = win.begin
    xp = np.zeros((n, c, hp, wp), x.dtype)
    xp[:, :, top:top + h, left:left + w] = x
    (kh, kw), (oh, ow) = win.kernel, win.out
    (sy, sx), (dy, dx) = win.strides, win.dilations
    cols = np.empty((c, kh, kw, oh, ow, n), x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, :, ky * dy:ky * dy + sy * (oh - 1) + 1:sy,
                       kx * dx:kx * dx + sx * (ow - 1) + 1:sx]
            cols[:, ky, kx] = patch.transpose(1, 2, 3, 0)
    return [cols.reshape(c * kh * kw, oh * ow * n)]


def _lower(ctx: LowerCtx, view: NodeView) -> None:
    x_shape = view.in_types[0].shape
    n, c, h, w = x_shape
    win = _win(x_shape, view.full_attrs)
    hp, wp = _padded_size(x_shape, win)
    name = view.name
    current = ctx.fresh(name + "_chwn")
    ctx.node("Transpose", [view.inputs[0]], [current], name + "/chwn", perm=[1, 2, 3, 0])
    if (hp, wp) != (h, w):
        top, left = win.begin
        pads = np.array([0, top, left, 0, 0, hp - h - top, wp - w - left, 0], np.int64)
        padded = ctx.fresh(name + "_padded")
        ctx.node("Pad", [current, ctx.const(name + ".pads", pads)], [padded], name + "/pad")
        current = padded
    rows = ctx.fresh(name + "_rows")
    ctx.node("Reshape", [current, ctx.const(name + ".rows", np.array([c * hp * wp, n], np.int64))],
             [rows], name + "/rows")
    picked = ctx.fresh(name + "_picked")
    ctx.node("Gather", [rows, ctx.const(name + ".table", gather_table(c, win, (hp, wp)))],
             [picked], name + "/gather", axis=0)
    shape = np.array(_infer(list(view.in_types), view.full_attrs, [])[0].shape, np.int64)
    ctx.node("Reshape", [picked, ctx.const(name + ".shape", shape)], view.outputs, name)


def _vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX[c, y, x, n] = sum over the taps that read (c, y, x) of their column entries."""
    dcols = grads[0]
    x_shape = ctx.in_types[0].shape
    n, c, h, w = x_shape
    win = _win(x_shape, ctx.attrs)
    rows = ctx.reshape(dcols, (int(np.prod(ctx.out_types[0].shape)) // n, n))
    zero = ctx.const(np.zeros((1, n)), ctx.out_types[0].dtype)
    rows = ctx.op("Concat", rows, zero, axis=0)
    taps = ctx.op("Gather", rows, ctx.const(scatter_table(x_shape, win), np.int64), axis=0)
    summed = ctx.op("ReduceSum", taps, ctx.const(np.array([1], np.int64), np.int64), keepdims=0)
    return [ctx.op("Transpose", ctx.reshape(summed, (c, h, w, n)), perm=[3, 0, 1, 2])]


def _flops(view: NodeView) -> int:
    return 0


IM2COL = OpDef(
    name="Im2Col",
    vjp=_vjp,
    doc="The patches a 2-D convolution window reads, as columns (C*kh*kw, OH*OW*N) "
        "(graphc op).",
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
    ),
)

OPS: list[OpDef] = [with_nonfinite(IM2COL, 0, 1, 2)]

"""Gradient rules of Conv and ConvTranspose, for 1, 2 and 3 spatial axes.

For Conv ``Y = X (*) W + B`` with a window of strides s, dilations d and pads p:

- ``dX = ConvTranspose(dY, W)`` with the same window; ``output_padding`` restores X's size
  (the forward's floor drops up to ``s - 1`` trailing input cells, which get no gradient).
- ``dW`` is the correlation of X with dY over the batch: for one group, one matrix product
  ``dY (O, OUT*N) Im2Col(X)^T``; with groups, a grouped Conv of X^T by dY^T with strides and
  dilations swapped, cropped to the kernel.
- ``dB`` is dY summed over the batch and the spatial axes.

ConvTranspose is the transpose of that map: ``dX = Conv(dY, W)`` and ``dW`` the correlation of
dY with X. Both rules read the forward's window from ``graphc.ops.window``, so ``auto_pad`` and
``output_shape`` come out as the explicit pads they stand for.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.ops.window import Window, transpose_window, window


def _i64(ctx: Any, values: Any) -> Any:
    return ctx.const(np.array(list(values), np.int64), np.int64)


def crop_spatial(ctx: Any, value: Any, size: tuple[int, ...]) -> Any:
    """Crop the end of the spatial axes of ``value`` down to ``size`` (no-op if equal)."""
    have = ctx.type(value).shape
    extra = [h - s for h, s in zip(have[2:], size, strict=True)]
    if not any(extra):
        return value
    zeros = [0] * (len(have) + 2)
    return ctx.op("Pad", value, _i64(ctx, [*zeros, *(-e for e in extra)]), mode="constant")


def bias_grad(ctx: Any, dy: Any) -> Any:
    rank = len(ctx.type(dy).shape)
    return ctx.op("ReduceSum", dy, _i64(ctx, [0, *range(2, rank)]), keepdims=0)


def group_cross(ctx: Any, a: Any, b: Any, group: int, pads: list[int],
                strides: tuple[int, ...], dilations: tuple[int, ...]) -> Any:
    """Per group g, correlate a (N, G*A, ...) with b (N, G*B, ...) over the batch:
    out[i, g*B + j] = sum_n a[n, g*A + i] (*) b[n, g*B + j], a Conv of a^T by b^T with
    ``group`` groups; returns (A, G*B, k1', ...)."""
    n, ca, *sa = ctx.type(a).shape
    _, cb, *sb = ctx.type(b).shape
    ga, gb = ca // group, cb // group
    rest = list(range(3, 3 + len(sa)))
    a5 = ctx.reshape(a, (n, group, ga, *sa))
    at = ctx.reshape(ctx.op("Transpose", a5, perm=[2, 1, 0, *rest]), (ga, group * n, *sa))
    b5 = ctx.reshape(b, (n, group, gb, *sb))
    bt = ctx.reshape(ctx.op("Transpose", b5, perm=[1, 2, 0, *rest]), (group * gb, n, *sb))
    return ctx.op("Conv", at, bt, group=group, pads=pads, strides=list(strides),
                  dilations=list(dilations))


def _swap01(ctx: Any, value: Any) -> Any:
    rank = len(ctx.type(value).shape)
    return ctx.op("Transpose", value, perm=[1, 0, *range(2, rank)])


def _pads_of(win: Window) -> list[int]:
    return [*win.begin, *win.end]


def conv_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX = ConvTranspose(dY, W) with the forward window (output_padding makes X's size);
    dW = per-group correlation of X with dY over the batch (stride and dilation swapped),
    cropped to the kernel; dB = dY summed over batch and space."""
    dy = grads[0]
    x, w = ctx.inputs[0], ctx.inputs[1]
    xt, wt = ctx.in_types[0], ctx.in_types[1]
    kernel = tuple(int(k) for k in wt.shape[2:])
    win = window("Conv", tuple(xt.shape[2:]), kernel, ctx.attrs)
    group = int(ctx.attrs["group"])
    pads = _pads_of(win)
    out_pad = []
    for a in range(win.rank):
        full = win.strides[a] * (win.out[a] - 1) + win.extent[a] - win.begin[a] - win.end[a]
        out_pad.append(int(xt.shape[2 + a]) - full)
    # The forward floor leaves out_pad = (padded span - extent) mod stride < stride.
    assert all(0 <= p < s for p, s in zip(out_pad, win.strides, strict=True))
    dx = ctx.op("ConvTranspose", dy, w, group=group, pads=pads, strides=list(win.strides),
                dilations=list(win.dilations), output_padding=out_pad)
    if group == 1:
        dw = weight_grad_im2col(ctx, x, dy)
    else:
        dw = group_cross(ctx, x, dy, group, pads, win.dilations, win.strides)
        dw = _swap01(ctx, crop_spatial(ctx, dw, kernel))
    out = [dx, dw]
    if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
        out.append(bias_grad(ctx, dy))
    return out


def weight_grad_im2col(ctx: Any, x: Any, dy: Any) -> Any:
    """dW of an ungrouped Conv as one matrix product: dW (O, C*prod(k)) = dY (O, OUT*N) times
    Im2Col(X) (C*prod(k), OUT*N)^T. onnxruntime runs this 2-3x faster than the correlation of
    transposed tensors as a Conv (whose weights are not constants)."""
    o, c, *kernel = ctx.in_types[1].shape
    rank = len(ctx.type(dy).shape)
    attrs = {k: ctx.attrs[k] for k in ("strides", "dilations", "pads", "auto_pad")}
    cols = ctx.op("Im2Col", x, kernel_shape=list(kernel), **attrs)
    grads = ctx.op("Transpose", dy, perm=[1, *range(2, rank), 0])
    grads = ctx.reshape(grads, (o, math.prod(ctx.type(grads).shape) // o))
    return ctx.reshape(ctx.op("Gemm", grads, cols, transB=1), (o, c, *kernel))


def convt_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dX = Conv(dY, W) with the same window; dW = per-group correlation of dY with X over the
    batch (stride and dilation swapped), cropped to the kernel; dB = dY summed."""
    dy = grads[0]
    x, w = ctx.inputs[0], ctx.inputs[1]
    xt, wt = ctx.in_types[0], ctx.in_types[1]
    kernel = tuple(int(k) for k in wt.shape[2:])
    win, _ = transpose_window(tuple(xt.shape[2:]), kernel, ctx.attrs)
    group = int(ctx.attrs["group"])
    if min(win.end) < 0:
        # Cells past the full output hold zeros (and the bias): they send nothing back.
        full = [o + e for o, e in zip(win.out, win.end, strict=True)]
        dy = crop_spatial(ctx, dy, tuple(min(f, o) for f, o in zip(full, win.out, strict=True)))
        win = win._replace(end=tuple(max(e, 0) for e in win.end))
    pads = _pads_of(win)
    dx = ctx.op("Conv", dy, w, group=group, pads=pads, strides=list(win.strides),
                dilations=list(win.dilations))
    dx = crop_spatial(ctx, dx, tuple(xt.shape[2:]))
    dw = group_cross(ctx, dy, x, group, pads, win.dilations, win.strides)
    dw = _swap01(ctx, crop_spatial(ctx, dw, kernel))
    out = [dx, dw]
    if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
        out.append(bias_grad(ctx, grads[0]))
    return out

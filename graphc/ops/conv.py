"""Convolution and transposed convolution ops over 1, 2 or 3 spatial axes (N, C, L),
(N, C, H, W) and (N, C, D, H, W).

Semantics are ONNX's as onnxruntime (which runs the export) and ``onnx.reference`` compute them.
The window arithmetic (output size and pads from ``auto_pad`` and ConvTranspose's
``output_shape``) is written once, in ``graphc.ops.window``, and shared with the pools, Im2Col
and the gradient rules (``graphc.ops.conv_grad``). Cases where onnxruntime refuses or departs
from the ONNX text are refused with an OpError: ``auto_pad`` SAME with dilations and
ConvTranspose ``output_padding >= stride`` or an ``output_shape`` larger than its full output.
Pad is in ``graphc.ops.pad``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    Attr,
    Example,
    NodeView,
    OpDef,
    TensorType,
    need_float,
    need_rank,
    nonfinite_example,
    rng_array,
    same_dtype,
)
from graphc.ops.conv_grad import conv_vjp, convt_vjp
from graphc.ops.window import (
    AXES,
    Window,
    all_tap_slices,
    need_spatial,
    padded,
    transpose_window,
    window,
)

# The names other op modules (quantized convolutions) import.
_Window = Window
_window = window
_padded = padded


def _work(*arrays: np.ndarray) -> list[np.ndarray]:
    """Return the arrays in the accumulation dtype: float16 sums in float32, as onnxruntime."""
    dtype = np.result_type(arrays[0].dtype, np.float32)
    return [a.astype(dtype, copy=False) for a in arrays]


def _shape_str(t: TensorType) -> str:
    return f"shape {t.shape}"


# --- Conv -----------------------------------------------------------------------------------


def _kernel_from(op: str, attrs: dict[str, Any], w: TensorType) -> tuple[int, ...]:
    kernel = tuple(int(k) for k in w.shape[2:])
    given = tuple(attrs.get("kernel_shape") or ())
    if given and given != kernel:
        raise ShapeError(f"{op} kernel_shape does not match the weight",
                         expected=f"kernel_shape {list(kernel)} (W spatial dims)",
                         got=list(given), hint="Drop kernel_shape; it is inferred from W.")
    return kernel


def _layouts(k: int) -> tuple[str, str]:
    """The input and weight layouts for ``k`` spatial axes, for error messages."""
    axes = AXES[k][1:-1]
    kernel = ", ".join(f"k{a.strip()}" for a in axes.split(","))
    return f"(N, C, {axes})", kernel


def _conv_check(in_types: list[TensorType | None], attrs: dict[str, Any]) -> Window:
    x, w = in_types[0], in_types[1]
    b = in_types[2] if len(in_types) > 2 else None
    assert x is not None and w is not None
    k = need_spatial("Conv input X", len(x.shape))
    if len(w.shape) != k + 2:  # the message only when it is needed: this runs on every Conv
        x_layout, kernel = _layouts(k)
        need_rank(w, k + 2, f"Conv weight W (M, C/group, {kernel}) for input X {x_layout}")
    need_float(x, "Conv input X")
    same_dtype([x, w, b], "Conv")
    group = attrs["group"]
    m, cg = w.shape[0], w.shape[1]
    if group < 1 or m % group:
        raise ShapeError("Conv output channels are not divisible by group",
                         expected=f"W.shape[0] a multiple of group={group} >= 1",
                         got=f"W.shape[0] = {m}")
    if x.shape[1] != cg * group:
        raise ShapeError(
            "input channels do not match the weight",
            expected=f"X.shape[1] = W.shape[1] * group = {cg} * {group} = {cg * group}",
            got=f"X.shape[1] = {x.shape[1]}",
            hint=f"Check the weight layout (M, C/group, {_layouts(k)[1]}) and the group "
                 "attribute.",
        )
    if b is not None and tuple(b.shape) != (m,):
        raise ShapeError("Conv bias B has the wrong shape", expected=f"({m},)",
                         got=_shape_str(b))
    return window("Conv", tuple(x.shape[2:]), _kernel_from("Conv", attrs, w), attrs)


def _conv_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                consts: list[np.ndarray | None]) -> list[TensorType]:
    win = _conv_check(in_types, attrs)
    x, w = in_types[0], in_types[1]
    assert x is not None and w is not None
    return [TensorType((x.shape[0], w.shape[0], *win.out), np.dtype(x.dtype))]


def _conv_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    assert x is not None and w is not None
    n, k = x.shape[0], x.ndim - 2
    m, cg, *kernel = w.shape
    g = attrs["group"]
    win = window("Conv", x.shape[2:], tuple(kernel), attrs)
    xw, ww = _work(x, w)
    xp = padded(xw, win, 0)
    view = np.lib.stride_tricks.sliding_window_view(xp, win.extent, axis=tuple(range(2, 2 + k)))
    view = view[(slice(None), slice(None),
                 *(slice(None, (o - 1) * s + 1, s) for o, s in zip(win.out, win.strides,
                                                                   strict=True)),
                 *(slice(None, None, d) for d in win.dilations))]
    # im2col: one copy into (n, g, out, cg*taps), then one batched matmul per group.
    outs, taps = math.prod(win.out), math.prod(kernel)
    cols = view.reshape(n, g, cg, *win.out, *kernel)
    cols = cols.transpose(0, 1, *range(3, 3 + k), 2, *range(3 + k, 3 + 2 * k))
    cols = cols.reshape(n, g, outs, cg * taps)
    wm = ww.reshape(g, m // g, cg * taps).transpose(0, 2, 1)
    y = np.matmul(cols, wm).transpose(0, 1, 3, 2).reshape(n, m, *win.out)
    if b is not None:
        y = y + b.reshape(1, m, *(1,) * k)
    return [np.ascontiguousarray(y, dtype=x.dtype)]


def _conv_flops(view: NodeView) -> int:
    w, y = view.in_types[1], view.out_types[0]
    assert w is not None
    return 2 * y.size * math.prod(w.shape[1:])


# --- ConvTranspose --------------------------------------------------------------------------


def _convt_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    x, w = in_types[0], in_types[1]
    b = in_types[2] if len(in_types) > 2 else None
    assert x is not None and w is not None
    k = need_spatial("ConvTranspose input X", len(x.shape))
    if len(w.shape) != k + 2:
        x_layout, kernel = _layouts(k)
        need_rank(w, k + 2,
                  f"ConvTranspose weight W (C, M/group, {kernel}) for input X {x_layout}")
    need_float(x, "ConvTranspose input X")
    same_dtype([x, w, b], "ConvTranspose")
    group = attrs["group"]
    if group < 1 or x.shape[1] % group:
        raise ShapeError("ConvTranspose input channels are not divisible by group",
                         expected=f"X.shape[1] a multiple of group={group} >= 1",
                         got=f"X.shape[1] = {x.shape[1]}")
    if x.shape[1] != w.shape[0]:
        raise ShapeError(
            "input channels do not match the weight",
            expected=f"X.shape[1] = W.shape[0] = {w.shape[0]}", got=f"X.shape[1] = {x.shape[1]}",
            hint=f"ConvTranspose weights are laid out (C_in, C_out/group, {_layouts(k)[1]}).",
        )
    m = w.shape[1] * group
    if b is not None and tuple(b.shape) != (m,):
        raise ShapeError("ConvTranspose bias B has the wrong shape", expected=f"({m},)",
                         got=_shape_str(b))
    win, _ = transpose_window(tuple(x.shape[2:]), _kernel_from("ConvTranspose", attrs, w),
                              attrs)
    return [TensorType((x.shape[0], m, *win.out), np.dtype(x.dtype))]


def _convt_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    assert x is not None and w is not None
    n, c, *sizes = x.shape
    _, mg, *kernel = w.shape
    k = len(sizes)
    g = attrs["group"]
    cg, m = c // g, mg * g
    win, out_pad = transpose_window(tuple(sizes), tuple(kernel), attrs)
    # Every input cell times every tap: (n, g, mg*taps, cells), then scatter-add tap by tap.
    xw, ww = _work(x, w)
    taps = math.prod(kernel)
    wm = ww.reshape(g, cg, mg * taps).transpose(0, 2, 1)
    products = np.matmul(wm, xw.reshape(n, g, cg, math.prod(sizes)))
    products = products.reshape(n, m, taps, *sizes)
    # An output_shape past the full output appends zeros: allocate them too (end < 0).
    full_shape = [s * (i - 1) + (kk - 1) * d + 1 + p + max(0, -e) for s, i, kk, d, p, e in
                  zip(win.strides, sizes, kernel, win.dilations, out_pad, win.end, strict=True)]
    full = np.zeros((n, m, *full_shape), dtype=products.dtype)
    # The same slices as a Conv tap read over an input of this ConvTranspose's input size.
    spread = Window(win.kernel, win.strides, win.dilations, win.begin, win.end, tuple(sizes))
    for t, slices in enumerate(all_tap_slices(spread)):
        full[(slice(None), slice(None), *slices)] += products[:, :, t]
    y = full[(slice(None), slice(None),
              *(slice(bb, bb + o) for bb, o in zip(win.begin, win.out, strict=True)))]
    if b is not None:
        y = y + b.reshape(1, m, *(1,) * k)
    return [np.ascontiguousarray(y, dtype=x.dtype)]


def _convt_flops(view: NodeView) -> int:
    x, w = view.in_types[0], view.in_types[1]
    assert x is not None and w is not None
    return 2 * x.size * math.prod(w.shape[1:])


# --- examples -------------------------------------------------------------------------------


def _conv_examples() -> tuple[Example, ...]:
    x = rng_array((1, 4, 7, 7), seed=1)
    w = rng_array((6, 4, 3, 3), seed=2)
    b = rng_array((6,), seed=3)
    x1, w1, b1 = rng_array((2, 4, 9), seed=61), rng_array((3, 4, 3), seed=62), rng_array((3,),
                                                                                          seed=63)
    x3, w3, b3 = (rng_array((1, 2, 5, 4, 5), seed=64), rng_array((3, 2, 2, 3, 2), seed=65),
                  rng_array((3,), seed=66))
    return (
        Example((x, w), {}, (1,), "plain"),
        Example((x, w, b), {}, (1, 2), "bias"),
        Example((x, w, b), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 2), "stride2"),
        Example((x, w), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (1,), "dilation2"),
        Example((x, rng_array((6, 2, 3, 3), seed=4), b), {"group": 2, "pads": [1, 1, 1, 1]},
                (1, 2), "groups2"),
        Example((x, rng_array((4, 1, 3, 3), seed=5)), {"group": 4, "pads": [1, 1, 1, 1],
                                                       "strides": [2, 2]}, (1,), "depthwise"),
        Example((x, w, b), {"pads": [0, 1, 2, 1], "strides": [2, 1]}, (1, 2), "asym-pads"),
        Example((rng_array((2, 4, 8, 7), seed=6), w, b),
                {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (1, 2), "same-upper"),
        Example((rng_array((2, 4, 8, 7), seed=6), rng_array((6, 4, 2, 2), seed=7)),
                {"auto_pad": "SAME_LOWER"}, (1,), "same-lower"),
        Example((x, w), {"auto_pad": "VALID", "strides": [2, 2]}, (1,), "valid"),
        # 1-D (N, C, L) and 3-D (N, C, D, H, W).
        Example((x1, w1, b1), {}, (1, 2), "1d-bias"),
        Example((x1, w1, b1), {"strides": [2], "pads": [1, 2]}, (1, 2), "1d-stride-pads"),
        Example((x1, w1), {"dilations": [3], "pads": [2, 1]}, (1,), "1d-dilation"),
        Example((x1, rng_array((6, 2, 2), seed=67), rng_array((6,), seed=68)),
                {"group": 2, "strides": [3]}, (1, 2), "1d-groups2"),
        Example((x1, rng_array((4, 1, 3), seed=69)), {"group": 4, "pads": [1, 1]}, (1,),
                "1d-depthwise"),
        Example((x1, w1), {"auto_pad": "SAME_UPPER", "strides": [2]}, (1,), "1d-same-upper"),
        Example((x1, rng_array((3, 4, 2), seed=70)), {"auto_pad": "SAME_LOWER"}, (1,),
                "1d-same-lower"),
        Example((x1, w1), {"auto_pad": "VALID", "strides": [2]}, (1,), "1d-valid"),
        Example((x3, w3, b3), {"strides": [2, 1, 2], "pads": [1, 0, 1, 0, 1, 1]}, (1, 2),
                "3d-stride-pads"),
        Example((x3, w3), {"dilations": [2, 1, 2], "pads": [1, 1, 1, 1, 1, 1]}, (1,),
                "3d-dilation"),
        Example((rng_array((1, 4, 3, 4, 4), seed=71), rng_array((4, 2, 2, 2, 3), seed=72), b3[:1]
                 .repeat(4)), {"group": 2, "auto_pad": "SAME_UPPER", "strides": [1, 2, 2]},
                (1, 2), "3d-groups2-same-upper"),
    )


def _convt_examples() -> tuple[Example, ...]:
    x = rng_array((1, 4, 5, 5), seed=11)
    x1 = rng_array((2, 2, 5), seed=17)
    w1 = rng_array((2, 3, 4), seed=18)
    x3 = rng_array((1, 2, 3, 3, 2), seed=19)
    return (
        Example((x, rng_array((4, 3, 3, 3), seed=12), rng_array((3,), seed=13)),
                {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, (1, 2),
                "stride2-pads-outpad"),
        Example((x, rng_array((4, 2, 3, 3), seed=14)), {"group": 2, "strides": [1, 2]}, (1,),
                "groups2"),
        Example((x, rng_array((4, 2, 3, 2), seed=15), rng_array((2,), seed=16)),
                {"dilations": [2, 3], "pads": [0, 1, 2, 0]}, (1, 2), "dilation"),
        Example((x, rng_array((4, 2, 3, 3), seed=14)), {"auto_pad": "SAME_UPPER",
                                                        "strides": [2, 2]}, (1,), "same-upper"),
        # 1-D: SAME (odd total padding: the extra cell at the end, or at the begin for LOWER),
        # output_shape (the pads it stands for replace the explicit ones), dilation, groups.
        Example((x1, w1, rng_array((3,), seed=20)), {"strides": [2], "pads": [1, 0],
                                                     "output_padding": [1]}, (1, 2),
                "1d-stride-pads-outpad"),
        Example((x1, rng_array((2, 3, 3), seed=21)), {"auto_pad": "SAME_UPPER", "strides": [2]},
                (1,), "1d-same-upper"),
        Example((x1, w1), {"auto_pad": "SAME_LOWER", "strides": [1]}, (1,), "1d-same-lower"),
        Example((x1, w1), {"output_shape": [9], "strides": [2], "pads": [1, 1]}, (1,),
                "1d-output-shape"),
        Example((x1, w1), {"output_shape": [9], "strides": [2], "auto_pad": "SAME_UPPER"}, (1,),
                "1d-output-shape-same-upper"),
        Example((x1, rng_array((2, 2, 3), seed=22)), {"group": 2, "dilations": [2],
                                                      "strides": [3]}, (1,),
                "1d-groups2-dilation"),
        Example((x3, rng_array((2, 2, 2, 3, 2), seed=23), rng_array((2,), seed=24)),
                {"strides": [2, 1, 2], "pads": [0, 1, 1, 1, 0, 0], "output_padding": [1, 0, 0]},
                (1, 2), "3d-stride-pads-outpad"),
        # An output_shape past the full output (9 x 7 here): zeros plus the bias at the end.
        Example((rng_array((1, 1, 3, 3), seed=26), rng_array((1, 2, 3, 3), seed=27),
                 rng_array((2,), seed=28)), {"output_shape": [10, 8], "strides": [3, 2]},
                (1, 2), "output-shape-longer"),
        Example((x1, w1, rng_array((3,), seed=29)), {"output_shape": [13], "strides": [2],
                                                     "auto_pad": "SAME_LOWER"}, (1, 2),
                "1d-output-shape-longer"),
        Example((x3, rng_array((2, 1, 2, 2, 2), seed=25)),
                {"group": 2, "output_shape": [5, 4, 3], "strides": [2, 2, 1],
                 "auto_pad": "SAME_LOWER"}, (1,), "3d-groups2-output-shape"),
    )


_WINDOW_ATTRS = {
    "auto_pad": Attr("str", "NOTSET"),
    "pads": Attr("ints", ()),
    "strides": Attr("ints", ()),
}


def _conv_nonfinite() -> tuple[Example, ...]:
    x, w, b = (rng_array((1, 2, 5, 5), seed=96), rng_array((3, 2, 3, 3), seed=97),
               rng_array((3,), seed=98))
    pads = {"pads": [1, 1, 1, 1]}
    depthwise = Example((x, rng_array((2, 1, 3, 3), seed=99)), {**pads, "group": 2})
    # One special weight per output channel, at corner taps that meet the padding.
    w_special = w.copy()
    w_special[0, 0, 0, 0], w_special[1, 1, 2, 2], w_special[2, 0, 0, 2] = np.nan, np.inf, -np.inf
    one_d = Example((rng_array((2, 2, 7), seed=102), rng_array((3, 2, 3), seed=103),
                     rng_array((3,), seed=104)), {"strides": [2], "pads": [1, 1]})
    three_d = Example((rng_array((1, 2, 4, 3, 4), seed=105), rng_array((2, 2, 2, 2, 2), seed=106)),
                      {"pads": [1, 0, 1, 0, 1, 0]})
    return (nonfinite_example(Example((x, w, b), pads)),
            # Padding is zeros: a NaN or infinite weight on a padded tap gives 0 * inf = NaN.
            # onnxruntime's kernel for constant weights skips padded taps instead (its depthwise
            # kernel and weights fed as inputs do not): known difference at the border.
            Example((x, w_special, b), pads, (1, 2), "nonfinite-corner-weights",
                    onnxruntime_differs="onnxruntime skips padded taps of constant weights"),
            nonfinite_example(Example((x, w, b), pads), ports=(1,), name="nonfinite-weights"),
            nonfinite_example(Example(depthwise.inputs, depthwise.attrs, (1,)), ports=(1,),
                              name="nonfinite-depthwise-weights"),
            nonfinite_example(one_d, name="nonfinite-1d"),
            nonfinite_example(one_d, ports=(1,), name="nonfinite-1d-weights"),
            nonfinite_example(three_d, name="nonfinite-3d"))


def _convt_nonfinite() -> tuple[Example, ...]:
    example = Example((rng_array((1, 2, 4, 4), seed=100), rng_array((2, 3, 3, 3), seed=101)),
                      {"strides": [2, 2], "pads": [1, 1, 1, 1]})
    one_d = Example((rng_array((1, 2, 6), seed=107), rng_array((2, 3, 3), seed=108)),
                    {"strides": [2], "auto_pad": "SAME_UPPER"})
    three_d = Example((rng_array((1, 2, 3, 2, 3), seed=109), rng_array((2, 2, 2, 2, 2), seed=110)),
                      {"strides": [2, 1, 2], "output_shape": [5, 3, 5]})
    return (nonfinite_example(example),
            nonfinite_example(example, ports=(1,), name="nonfinite-weights"),
            nonfinite_example(one_d, name="nonfinite-1d"),
            nonfinite_example(three_d, name="nonfinite-3d"))


OPS: list[OpDef] = [
    OpDef(
        name="Conv",
        vjp=conv_vjp,
        doc="Convolution over 1, 2 or 3 spatial axes with strides, dilations, groups and "
            "padding.",
        inputs=("X", "W", "B?"),
        outputs=("Y",),
        attrs={
            **_WINDOW_ATTRS,
            "dilations": Attr("ints", ()),
            "group": Attr("int", 1),
            "kernel_shape": Attr("ints", ()),
        },
        infer=_conv_infer,
        ref=_conv_ref,
        nonfinite=_conv_nonfinite(),
        examples=_conv_examples(),
        flops=_conv_flops,
    ),
    OpDef(
        name="ConvTranspose",
        vjp=convt_vjp,
        doc="Transposed convolution over 1, 2 or 3 spatial axes with strides, dilations, "
            "groups, pads or auto_pad, output_padding and output_shape.",
        inputs=("X", "W", "B?"),
        outputs=("Y",),
        attrs={
            "auto_pad": Attr("str", "NOTSET"),
            "dilations": Attr("ints", ()),
            "group": Attr("int", 1),
            "kernel_shape": Attr("ints", ()),
            "output_padding": Attr("ints", ()),
            "output_shape": Attr("ints", ()),
            "pads": Attr("ints", ()),
            "strides": Attr("ints", ()),
        },
        infer=_convt_infer,
        ref=_convt_ref,
        nonfinite=_convt_nonfinite(),
        examples=_convt_examples(),
        flops=_convt_flops,
    ),
]

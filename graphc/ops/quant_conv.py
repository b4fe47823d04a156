"""Integer convolutions and matrix products: QLinearConv, ConvInteger, QLinearMatMul and
MatMulInteger.

Each subtracts the zero points, multiplies and accumulates in integers (int64 in numpy, reduced
to int32 with wraparound as onnxruntime's int32 accumulators), so the references are exact.
ConvInteger and MatMulInteger return the int32 accumulator. QLinearConv adds its int32 bias and
QLinearMatMul nothing, then both requantize as onnxruntime does: the multiplier
``x_scale * w_scale / y_scale`` is computed in float32 in that order, ``float32(acc) *
multiplier`` is clamped to the output range around the zero point, rounded half to even and
shifted by the output zero point. The convolutions reuse Conv's window arithmetic
(``graphc.ops.conv``): strides, dilations, group, explicit pads and ``auto_pad``.

Refused, because onnxruntime 1.32's CPU kernels are missing or reject them (an export would not
run): int8 activations with uint8 weights (QLinearConv, QLinearMatMul), an output type other
than the activation type (QLinear*), per-row ``a`` parameters (QLinearMatMul, MatMulInteger),
per-column ``b`` parameters with a batched ``b``, and a per-channel ``w_zero_point`` in
ConvInteger. QLinearConv takes per-channel ``w_scale`` and ``w_zero_point`` (zero points may
differ per channel).

Trap (measured with onnxruntime 1.32 on an AVX2 CPU without VNNI): uint8 activations times
int8 weights go through VPMADDUBSW, which saturates the sum of two adjacent products to int16,
so QLinearConv, QLinearMatMul and MatMulInteger on u8 x s8 differ from the exact result once
|w| exceeds 64 (on random full-range data, 20-60% of the outputs). Weights in [-64, 63]
(onnxruntime's ``reduce_range``) stay exact, as do depthwise QLinearConv, ConvInteger, and
u8 x u8 and s8 x s8 products. The examples use 7-bit int8 weights so they hold on every CPU.

Gradients: none (integer inputs and outputs); quantization-aware training uses
FakeQuantizeLinear around float ops (``graphc.ops.quant``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import OpError, ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    Attr,
    Example,
    NodeView,
    OpDef,
    TensorType,
    need_rank,
)
from graphc.ops.conv import _kernel_from, _padded, _window
from graphc.ops.linalg import _matmul_infer

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
QTYPES = (np.dtype(np.uint8), np.dtype(np.int8))


def _short(dtype: Any) -> str:
    return DTYPE_SHORT.get(np.dtype(dtype), str(dtype))


def _is_tensor(t: TensorType) -> bool:
    return tuple(t.shape) in ((), (1,))


def _need(t: TensorType, kinds: tuple[np.dtype, ...], what: str) -> None:
    if np.dtype(t.dtype) not in kinds:
        raise ShapeError(f"{what} has an unsupported type",
                         expected=" or ".join(_short(k) for k in kinds), got=_short(t.dtype))


def _need_per_tensor(t: TensorType | None, what: str) -> None:
    if t is not None and not _is_tensor(t):
        raise OpError(f"{what} must be per tensor", expected="a scalar or shape (1,)",
                      got=f"shape {tuple(t.shape)}",
                      hint="onnxruntime's CPU kernel takes a single value here.")


def _need_pair(scale: TensorType, zero: TensorType | None, dtype: Any, what: str,
               allowed: tuple[tuple[int, ...], ...]) -> None:
    """Check a (scale, zero point) pair: float32 scale, zero point of ``dtype``, and a shape
    that is per tensor or one of ``allowed``, the same for both."""
    if np.dtype(scale.dtype) != F32:
        raise ShapeError(f"{what} scale must be float32", expected="f32",
                         got=_short(scale.dtype))
    shapes = [tuple(scale.shape)] + ([] if zero is None else [tuple(zero.shape)])
    for shape in shapes:
        if shape not in ((), (1,), *allowed):
            want = " or ".join(["a scalar", "(1,)", *(str(a) for a in allowed)])
            raise ShapeError(f"{what} scale and zero point have the wrong shape", expected=want,
                             got=f"shape {shape}")
    if zero is not None:
        if np.dtype(zero.dtype) != np.dtype(dtype):
            raise ShapeError(f"{what} zero point has the wrong type", expected=_short(dtype),
                             got=_short(zero.dtype))
        if len(set(shapes) - {(), (1,)}) > 0 and shapes[0] != shapes[1]:
            raise ShapeError(f"{what} scale and zero point differ in shape",
                             expected=f"shape {shapes[0]}", got=f"shape {shapes[1]}")


def _need_kernel_pair(x: TensorType, w: TensorType, op: str) -> None:
    _need(x, QTYPES, f"{op} input")
    _need(w, QTYPES, f"{op} weight")
    if np.dtype(x.dtype) == np.int8 and np.dtype(w.dtype) == np.uint8:
        raise OpError(f"{op} with int8 activations and uint8 weights is not supported",
                      expected="u8 x u8, u8 x i8 or i8 x i8", got="i8 x u8",
                      hint="onnxruntime has no CPU kernel for it; quantize the weights to int8.")


def _int(value: np.ndarray | None, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Return a zero point as int64 shaped to broadcast (0 when absent)."""
    if value is None:
        return np.zeros((), np.int64)
    return np.asarray(value).astype(np.int64).reshape(shape if value.size > 1 else ())


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """Return saturate(round_half_even(float32(acc) * multiplier) + zero_point), as
    onnxruntime's MlasRequantizeOutput computes it (clamp in float, then round)."""
    dtype = np.dtype(zero_point.dtype)
    info = np.iinfo(dtype)
    z = int(np.asarray(zero_point).reshape(-1)[0])
    v = acc.astype(I32).astype(F32) * multiplier
    v = np.minimum(np.fmax(v, F32.type(info.min - z)), F32.type(info.max - z))
    return (np.rint(v).astype(np.int64) + z).astype(dtype)


def _multiplier(in_scale: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray) -> np.ndarray:
    # float32 arithmetic in onnxruntime's order: (in_scale * w_scale) / y_scale.
    a = F32.type(np.asarray(in_scale).reshape(-1)[0])
    y = F32.type(np.asarray(y_scale).reshape(-1)[0])
    return ((a * np.asarray(w_scale, F32).reshape(-1)) / y).astype(F32)


# --- matrix products --------------------------------------------------------------------------


def _product_shape(a: TensorType, b: TensorType) -> tuple[int, ...]:
    """MatMul's shape rule (batch broadcast, 1-D operands promoted) on integer operands."""
    return _matmul_infer([TensorType(a.shape, F32), TensorType(b.shape, F32)], {}, [])[0].shape


def _column_shapes(b: TensorType) -> tuple[tuple[int, ...], ...]:
    return ((b.shape[-1],),) if len(b.shape) == 2 else ()


def _qlinear_matmul_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                          consts: list[np.ndarray | None]) -> list[TensorType]:
    a, sa, za, b, sb, zb, sy, zy = in_types
    _need_kernel_pair(a, b, "QLinearMatMul")
    _need_pair(sa, za, a.dtype, "QLinearMatMul a", ())
    _need_pair(sb, zb, b.dtype, "QLinearMatMul b", _column_shapes(b))
    _need_pair(sy, zy, a.dtype, "QLinearMatMul y", ())
    return [TensorType(_product_shape(a, b), np.dtype(zy.dtype))]


def _int_matmul(a: np.ndarray, za: np.ndarray | None, b: np.ndarray,
                zb: np.ndarray | None) -> np.ndarray:
    """Return (a - za) @ (b - zb) exactly, wrapped to int32 as an int32 accumulator would."""
    columns = (b.shape[-1],) if b.ndim == 2 else ()
    acc = np.matmul(a.astype(np.int64) - _int(za), b.astype(np.int64) - _int(zb, columns))
    return np.asarray(acc).astype(I32)


def _qlinear_matmul_ref(inputs: list[np.ndarray | None],
                        attrs: dict[str, Any]) -> list[np.ndarray]:
    a, sa, za, b, sb, zb, sy, zy = inputs
    acc = _int_matmul(a, za, b, zb)
    multiplier = _multiplier(sa, sb, sy)
    return [requantize(acc, multiplier.reshape(()) if multiplier.size == 1 else multiplier, zy)]


def _matmul_integer_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                          consts: list[np.ndarray | None]) -> list[TensorType]:
    a, b = in_types[0], in_types[1]
    za = in_types[2] if len(in_types) > 2 else None
    zb = in_types[3] if len(in_types) > 3 else None
    _need(a, QTYPES, "MatMulInteger A")
    _need(b, QTYPES, "MatMulInteger B")
    _need_per_tensor(za, "MatMulInteger a_zero_point")
    for zero, x, what in ((za, a, "a_zero_point"), (zb, b, "b_zero_point")):
        if zero is not None and np.dtype(zero.dtype) != np.dtype(x.dtype):
            raise ShapeError(f"MatMulInteger {what} has the wrong type", expected=_short(x.dtype),
                             got=_short(zero.dtype))
    if zb is not None and not _is_tensor(zb) and tuple(zb.shape) not in _column_shapes(b):
        raise OpError("MatMulInteger b_zero_point must be per tensor or per column of a 2-D B",
                      expected=f"a scalar, (1,) or {_column_shapes(b) or 'nothing else'}",
                      got=f"shape {tuple(zb.shape)}")
    return [TensorType(_product_shape(a, b), I32)]


def _matmul_integer_ref(inputs: list[np.ndarray | None],
                        attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    za = inputs[2] if len(inputs) > 2 else None
    zb = inputs[3] if len(inputs) > 3 else None
    return [_int_matmul(a, za, b, zb)]


def _matmul_flops(view: NodeView) -> int:
    a = view.in_types[0]
    return 2 * view.out_types[0].size * a.shape[-1]


# --- convolutions -----------------------------------------------------------------------------


def _conv_window(op: str, x: TensorType, w: TensorType, attrs: dict[str, Any]) -> Any:
    need_rank(x, 4, f"{op} input x (N, C, H, W)")
    need_rank(w, 4, f"{op} weight w (M, C/group, kH, kW)")
    group = attrs["group"]
    m, cg = w.shape[0], w.shape[1]
    if group < 1 or m % group:
        raise ShapeError(f"{op} output channels are not divisible by group",
                         expected=f"w.shape[0] a multiple of group={group} >= 1",
                         got=f"w.shape[0] = {m}")
    if x.shape[1] != cg * group:
        raise ShapeError("input channels do not match the weight",
                         expected=f"x.shape[1] = w.shape[1] * group = {cg * group}",
                         got=f"x.shape[1] = {x.shape[1]}")
    return _window(op, x.shape[2:], _kernel_from(op, attrs, w), attrs)


def int_conv(x: np.ndarray, x_zero: np.ndarray | None, w: np.ndarray,
             w_zero: np.ndarray | None, attrs: dict[str, Any]) -> np.ndarray:
    """Return the exact integer convolution of (x - x_zero) by (w - w_zero) as int32 (wrapped).

    The padding holds real zeros, i.e. x_zero before the subtraction, as in ONNX."""
    n = x.shape[0]
    m, cg, kh, kw = w.shape
    g = attrs["group"]
    win = _window("ConvInteger", x.shape[2:], (kh, kw), attrs)
    (ho, wo), (sh, sw), (dh, dw) = win.out, win.strides, win.dilations
    xi = x.astype(np.int64) - _int(x_zero)
    wi = w.astype(np.int64) - _int(w_zero, (m, 1, 1, 1))
    view = np.lib.stride_tricks.sliding_window_view(_padded(xi, win, 0), win.extent, axis=(2, 3))
    view = view[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, ::dh, ::dw]
    cols = view.reshape(n, g, cg, ho, wo, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6)
    cols = cols.reshape(n, g, ho * wo, cg * kh * kw)
    wm = wi.reshape(g, m // g, cg * kh * kw).transpose(0, 2, 1)
    y = np.matmul(cols, wm).transpose(0, 1, 3, 2).reshape(n, m, ho, wo)
    return np.ascontiguousarray(y).astype(I32)


def _qlinear_conv_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                        consts: list[np.ndarray | None]) -> list[TensorType]:
    x, sx, zx, w, sw, zw, sy, zy = in_types[:8]
    bias = in_types[8] if len(in_types) > 8 else None
    _need_kernel_pair(x, w, "QLinearConv")
    win = _conv_window("QLinearConv", x, w, attrs)
    m = w.shape[0]
    _need_pair(sx, zx, x.dtype, "QLinearConv x", ())
    _need_pair(sw, zw, w.dtype, "QLinearConv w", ((m,),))
    _need_pair(sy, zy, x.dtype, "QLinearConv y", ())
    if bias is not None and (np.dtype(bias.dtype) != I32 or tuple(bias.shape) != (m,)):
        raise ShapeError("QLinearConv bias B must be int32 of one value per output channel",
                         expected=f"({m},) i32", got=str(bias))
    return [TensorType((x.shape[0], m, *win.out), np.dtype(zy.dtype))]


def _qlinear_conv_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, sx, zx, w, sw, zw, sy, zy = inputs[:8]
    bias = inputs[8] if len(inputs) > 8 else None
    acc = int_conv(x, zx, w, zw, attrs)
    if bias is not None:
        acc = acc + bias.astype(I32).reshape(1, -1, 1, 1)
    multiplier = _multiplier(sx, sw, sy)
    return [requantize(acc, multiplier.reshape(-1, 1, 1) if multiplier.size > 1
                       else multiplier.reshape(()), zy)]


def _conv_integer_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                        consts: list[np.ndarray | None]) -> list[TensorType]:
    x, w = in_types[0], in_types[1]
    zx = in_types[2] if len(in_types) > 2 else None
    zw = in_types[3] if len(in_types) > 3 else None
    _need(x, QTYPES, "ConvInteger input")
    _need(w, QTYPES, "ConvInteger weight")
    win = _conv_window("ConvInteger", x, w, attrs)
    _need_per_tensor(zx, "ConvInteger x_zero_point")
    _need_per_tensor(zw, "ConvInteger w_zero_point")
    for zero, t, what in ((zx, x, "x_zero_point"), (zw, w, "w_zero_point")):
        if zero is not None and np.dtype(zero.dtype) != np.dtype(t.dtype):
            raise ShapeError(f"ConvInteger {what} has the wrong type", expected=_short(t.dtype),
                             got=_short(zero.dtype))
    return [TensorType((x.shape[0], w.shape[0], *win.out), I32)]


def _conv_integer_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, w = inputs[0], inputs[1]
    zx = inputs[2] if len(inputs) > 2 else None
    zw = inputs[3] if len(inputs) > 3 else None
    return [int_conv(x, zx, w, zw, attrs)]


def _conv_flops(weight_port: int) -> Any:
    def flops(view: NodeView) -> int:
        _, cg, kh, kw = view.in_types[weight_port].shape
        return 2 * view.out_types[0].size * cg * kh * kw

    return flops


# --- examples ---------------------------------------------------------------------------------


def _ints(shape: tuple[int, ...], seed: int, dtype: Any, low: int | None = None,
          high: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    low = info.min if low is None else low
    high = info.max if high is None else high
    return np.random.default_rng(seed).integers(low, high + 1, shape).astype(dtype)


def _s7(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Int8 weights in [-64, 63]: exact on onnxruntime's VPMADDUBSW u8 x s8 path (see above)."""
    return _ints(shape, seed, np.int8, -64, 63)


def _f(value: Any) -> np.ndarray:
    return np.asarray(value, np.float32)


def _qlinear_matmul_examples() -> tuple[Example, ...]:
    u8, i8 = np.uint8, np.int8
    a = _ints((3, 16), 81, u8)
    return (
        Example((a, _f(0.02), u8(120), _ints((16, 5), 82, u8), _f(0.01), u8(128), _f(0.05),
                 u8(100)), consts=(3, 4, 5), name="u8u8"),
        Example((a, _f(0.02), u8(3), _s7((16, 4), 83), _f([0.01, 0.02, 0.005, 0.03]),
                 np.array([0, -2, 5, 1], i8), _f(0.03), u8(128)), consts=(3, 4, 5),
                name="u8s8-per-column"),
        Example((_ints((2, 3, 8), 84, i8), _f(0.05), i8(-7), _ints((8, 4), 85, i8), _f(0.02),
                 i8(3), _f(0.25), i8(-10)), consts=(3, 4, 5), name="s8s8-batched-negative-zp"),
        Example((a, _f(0.5), u8(0), _ints((16, 6), 86, u8), _f(0.5), u8(0), _f(1.0), u8(128)),
                name="saturating-runtime-parameters"),
        Example((_ints((2, 16), 87, u8), _f(0.1), u8(7), _s7((16,), 88), _f(0.01), i8(0),
                 _f(0.04), u8(60)), consts=(3,), name="u8s8-matrix-vector"),
    )


def _matmul_integer_examples() -> tuple[Example, ...]:
    u8, i8 = np.uint8, np.int8
    return (
        Example((_ints((3, 7), 91, u8), _ints((7, 4), 92, u8), u8(128), u8(3)), consts=(1, 3),
                name="u8u8"),
        Example((_ints((2, 3, 9), 93, u8), _s7((9, 5), 94), u8(0),
                 np.array([0, 1, -3, 4, -64], i8)), consts=(1, 3), name="u8s8-per-column"),
        Example((_ints((4, 6), 95, i8), _ints((6, 3), 96, i8)), name="s8s8-no-zero-points"),
        Example((_ints((5,), 97, i8), _ints((5, 2), 98, u8), i8(-4), u8(200)),
                name="s8u8-vector"),
    )


def _qlinear_conv_examples() -> tuple[Example, ...]:
    u8, i8 = np.uint8, np.int8
    x = _ints((2, 4, 7, 6), 101, u8)
    bias = _ints((6,), 102, np.int32, -2000, 2000)
    grouped = {"group": 2, "strides": [2, 2], "pads": [1, 0, 2, 1]}
    return (
        Example((x, _f(0.02), u8(128), _s7((6, 4, 3, 3), 103), _f(0.01), i8(0), _f(0.3),
                 u8(120), bias), {}, (3, 4, 5, 8), "u8s8-bias"),
        Example((x, _f(0.02), u8(10), _ints((6, 2, 3, 3), 104, u8), _f(0.004), u8(128),
                 _f(0.5), u8(64), bias), grouped, (3, 4, 5, 8), "u8u8-strided-padded-grouped"),
        Example((x, _f(0.05), u8(3), _s7((6, 4, 2, 2), 105),
                 _f([0.01, 0.02, 0.005, 0.03, 0.002, 0.04]), np.array([0, 1, -2, 3, 0, -1], i8),
                 _f(0.4), u8(90)), {"pads": [1, 1, 1, 1]}, (3, 4, 5), "u8s8-per-channel"),
        Example((_ints((1, 4, 6, 6), 106, i8), _f(0.1), i8(-5), _ints((4, 1, 3, 3), 107, i8),
                 _f(0.02), i8(2), _f(0.5), i8(-3)), {"group": 4, "pads": [1, 1, 1, 1]},
                (3, 4, 5), "s8s8-depthwise-negative-zp"),
        Example((x, _f(0.02), u8(0), _s7((3, 4, 2, 3), 108), _f(0.02), i8(0), _f(0.01), u8(128)),
                {"dilations": [2, 1], "pads": [0, 1, 2, 0]}, (3,), "saturating-dilated"),
        Example((x, _f(0.03), u8(5), _s7((5, 4, 3, 3), 109), _f(0.01), i8(0), _f(0.3), u8(40)),
                {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (3,), "same-upper"),
    )


def _conv_integer_examples() -> tuple[Example, ...]:
    u8, i8 = np.uint8, np.int8
    x = _ints((1, 4, 7, 7), 111, u8)
    return (
        Example((x, _ints((6, 4, 3, 3), 112, u8), u8(128), u8(7)), {}, (1, 3), "u8u8"),
        Example((x, _s7((6, 2, 3, 3), 113), u8(3), i8(-2)),
                {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, (1, 3),
                "u8s8-strided-padded-grouped"),
        Example((x, _s7((4, 4, 2, 2), 114)), {"dilations": [2, 2]}, (1,), "no-zero-points"),
        Example((_ints((2, 4, 6, 5), 115, i8), _ints((3, 4, 3, 2), 116, i8), i8(-9), i8(4)),
                {"auto_pad": "SAME_LOWER"}, (1, 3), "s8s8-same-lower"),
    )


# --- records ----------------------------------------------------------------------------------

_CONV_ATTRS = {
    "auto_pad": Attr("str", "NOTSET"),
    "dilations": Attr("ints", ()),
    "group": Attr("int", 1),
    "kernel_shape": Attr("ints", ()),
    "pads": Attr("ints", ()),
    "strides": Attr("ints", ()),
}

OPS: list[OpDef] = [
    OpDef(
        name="QLinearConv",
        doc="Quantized 2-D convolution: integer accumulate, int32 bias, requantize to the "
            "activation type.",
        inputs=("x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale",
                "y_zero_point", "B?"),
        outputs=("y",),
        attrs=_CONV_ATTRS,
        infer=_qlinear_conv_infer,
        ref=_qlinear_conv_ref,
        vjp=None,
        flops=_conv_flops(3),
        examples=_qlinear_conv_examples(),
    ),
    OpDef(
        name="ConvInteger",
        doc="Integer 2-D convolution of (x - x_zero_point) by (w - w_zero_point) to int32.",
        inputs=("x", "w", "x_zero_point?", "w_zero_point?"),
        outputs=("y",),
        attrs=_CONV_ATTRS,
        infer=_conv_integer_infer,
        ref=_conv_integer_ref,
        vjp=None,
        flops=_conv_flops(1),
        examples=_conv_integer_examples(),
    ),
    OpDef(
        name="QLinearMatMul",
        doc="Quantized matrix product (numpy matmul shapes), requantized to the type of a.",
        inputs=("a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
                "y_zero_point"),
        outputs=("y",),
        attrs={},
        infer=_qlinear_matmul_infer,
        ref=_qlinear_matmul_ref,
        vjp=None,
        flops=_matmul_flops,
        examples=_qlinear_matmul_examples(),
    ),
    OpDef(
        name="MatMulInteger",
        doc="Integer matrix product of (A - a_zero_point) and (B - b_zero_point) to int32.",
        inputs=("A", "B", "a_zero_point?", "b_zero_point?"),
        outputs=("Y",),
        attrs={},
        infer=_matmul_integer_infer,
        ref=_matmul_integer_ref,
        vjp=None,
        flops=_matmul_flops,
        examples=_matmul_integer_examples(),
    ),
]

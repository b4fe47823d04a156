"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and Round.

Semantics (ONNX, computed as onnxruntime's CPU kernels do; the tests check every example bit
for bit; integer types uint8 and int8, scales float32):

- ``QuantizeLinear``: ``y = saturate(round(x / scale) + zero_point)``, the division in float32,
  rounding half to even, saturation to the output type's range. The zero point is optional
  (default uint8 0); its type, else ``output_dtype`` (opset 21), else uint8 is the output type.
  NaN quantizes to the type's minimum, as onnxruntime's MAXPS/FMAXNM clamp gives it.
- ``DequantizeLinear``: ``y = float32(int32(x) - int32(zero_point)) * scale``, x int8, uint8 or
  int32 (the int32-bias pattern). The difference is taken in int32 and wraps, as onnxruntime's.
- Granularity by the scale's shape: a scalar or one element (per tensor), 1-D along ``axis``
  (per axis), or x's rank with ``ceil(D/block_size)`` on ``axis`` (blocked, opset 21). The zero
  point has the scale's shape.
- ``DynamicQuantizeLinear``: range ``[min(0, min x), max(0, max x)]``, ``scale = range / 255``
  (1 when the range is empty: the ONNX text divides 0 by 0 there, onnxruntime uses 1),
  ``zero_point = round(saturate(0 - min / scale))`` half to even, then QuantizeLinear to uint8.
- ``Round``: half to even.

Opsets: ``axis`` exists from 13, ``saturate`` from 19 (it only affects float8, so it changes
nothing here), ``block_size`` and ``output_dtype`` from 21; an explicit one is refused below
that, as for every op. From opset 28 on, QuantizeLinear and DequantizeLinear are written as
their arithmetic, because onnxruntime 1.32 has no kernel for their version 28: see
``graphc.ops.quant_lower``, which writes both ops in ONNX at every opset.

Refused: float16/bfloat16 scales and inputs (float32 only at opset 17), int32 input to
QuantizeLinear, 16-bit, 4-bit and float8 types, ``precision`` (opset 23), DequantizeLinear's
``output_dtype`` (opset 23; the output is float32).

Gradients. This IR carries a gradient only in the type of its value (autodiff checks it), so no
float gradient can cross an integer tensor, and a straight-through gradient cannot be split
into a QuantizeLinear rule and a DequantizeLinear rule: it is the vjp of FakeQuantizeLinear
(``graphc.ops.quant_fake``), which exports as the pair. Here:

- QuantizeLinear and DynamicQuantizeLinear have no gradient rule (integer outputs).
- DequantizeLinear: d/dscale = the sum of ``dY * (x - zero_point)`` over the elements sharing
  a scale (fine-tuning the scales of frozen integer weights); the integers get none. If x is
  computed (not a graph input or constant), the gradient would silently stop at the integers:
  this is refused, pointing to FakeQuantizeLinear.
- Round: derivative 0 where it exists (like Heaviside).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import GraphcError, OpError, ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    need_float,
    nonfinite_examples,
    normalize_axis,
    onnx_dtype,
    optional_inputs,
    rng_array,
)
from graphc.ops.quant_lower import (
    F32,
    Grain,
    check_since,
    emit_dequantize,
    emit_quantize,
    qrange,
)

QTYPES = (np.dtype(np.uint8), np.dtype(np.int8))


def _short(dtype: Any) -> str:
    return DTYPE_SHORT.get(np.dtype(dtype), str(dtype))


# --- granularity ------------------------------------------------------------------------------


def grain_of(op: str, x_shape: tuple[int, ...], p_shape: tuple[int, ...],
             attrs: dict[str, Any]) -> Grain:
    """Return the granularity a scale of ``p_shape`` has on x, or raise ShapeError."""
    rank = len(x_shape)
    block = int(attrs.get("block_size", 0))
    if block:
        axis = normalize_axis(int(attrs["axis"]), rank, f"{op} axis")
        want = list(x_shape)
        want[axis] = -(-x_shape[axis] // block) if block > 0 else 0
        if block < 0 or tuple(p_shape) != tuple(want):
            raise ShapeError(f"{op} blocked scale has the wrong shape",
                             expected=f"shape {tuple(want)} for block_size {block} on axis "
                                      f"{axis}", got=f"shape {tuple(p_shape)}",
                             hint="The scale has x's shape with ceil(D/block_size) on axis.")
        return Grain("block", axis, block)
    if len(p_shape) == 0 or tuple(p_shape) == (1,):
        return Grain("tensor")
    if len(p_shape) == 1:
        axis = normalize_axis(int(attrs["axis"]), rank, f"{op} axis")
        if p_shape[0] != x_shape[axis]:
            raise ShapeError(f"{op} per-axis scale does not match axis {axis}",
                             expected=f"{x_shape[axis]} values", got=p_shape[0],
                             hint="Set axis to the channel axis (1 for NCHW activations, 0 "
                                  "for Conv weights).")
        return Grain("axis", axis)
    raise ShapeError(f"{op} scale has the wrong rank", expected="a scalar, a 1-D tensor (per "
                     "axis) or x's rank with block_size (blocked)", got=f"shape {tuple(p_shape)}")


def expand(param: np.ndarray, x_shape: tuple[int, ...], grain: Grain) -> np.ndarray:
    """Return a quantization parameter shaped to broadcast against x."""
    if grain.kind == "tensor":
        return param.reshape(())
    if grain.kind == "axis":
        shape = [1] * len(x_shape)
        shape[grain.axis] = x_shape[grain.axis]
        return param.reshape(shape)
    return np.take(param, np.arange(x_shape[grain.axis]) // grain.block, axis=grain.axis)


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, dtype: Any,
             grain: Grain) -> np.ndarray:
    """Return saturate(round_half_even(x / scale) + zero_point) in ``dtype``."""
    qmin, qmax = qrange(dtype)
    s = expand(np.asarray(scale, F32), x.shape, grain)
    z = np.zeros((), np.int64) if zero_point is None else \
        expand(np.asarray(zero_point), x.shape, grain).astype(np.int64)
    v = (x.astype(F32) / s).astype(F32)
    # Clamp before rounding, NaN to the low end: onnxruntime's max(v, lo) returns lo for NaN.
    v = np.minimum(np.fmax(v, (qmin - z).astype(F32)), (qmax - z).astype(F32))
    return (np.rint(v).astype(np.int64) + z).astype(dtype)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               grain: Grain) -> np.ndarray:
    """Return float32(int32(q) - int32(zero_point)) * scale."""
    d = q.astype(np.int32)
    if zero_point is not None:
        d = d - expand(np.asarray(zero_point), q.shape, grain).astype(np.int32)
    return d.astype(F32) * expand(np.asarray(scale, F32), q.shape, grain)


# --- shape rules ------------------------------------------------------------------------------


def need_f32(t: TensorType, what: str) -> None:
    """Raise ShapeError unless ``t`` is float32 (the only scale type at opset 17)."""
    if np.dtype(t.dtype) != F32:
        raise ShapeError(f"{what} must be float32", expected="f32", got=_short(t.dtype),
                         hint="float16 scales need opset 19; Cast to float32 first.")


def _check_zero_point(op: str, z: TensorType, s: TensorType, kinds: tuple[np.dtype, ...],
                      x_dtype: Any = None) -> None:
    if np.dtype(z.dtype) not in kinds:
        raise ShapeError(f"{op} zero point has an unsupported type",
                         expected=" or ".join(_short(k) for k in kinds), got=_short(z.dtype))
    if x_dtype is not None and np.dtype(z.dtype) != np.dtype(x_dtype):
        raise ShapeError(f"{op} zero point and x differ in type", expected=_short(x_dtype),
                         got=_short(z.dtype))
    per_tensor = {(), (1,)}
    if tuple(z.shape) != tuple(s.shape) and not {tuple(z.shape), tuple(s.shape)} <= per_tensor:
        raise ShapeError(f"{op} zero point and scale differ in shape",
                         expected=f"shape {tuple(s.shape)}", got=f"shape {tuple(z.shape)}")


_OUTPUT_DTYPES = {0: None, 2: np.dtype(np.uint8), 3: np.dtype(np.int8)}


def _quantized_type(op: str, z: TensorType | None, attrs: dict[str, Any]) -> np.dtype:
    code = int(attrs.get("output_dtype", 0))
    if code not in _OUTPUT_DTYPES:
        raise OpError(f"{op} output_dtype is not supported", expected="2 (uint8) or 3 (int8)",
                      got=code)
    chosen = _OUTPUT_DTYPES[code]
    if z is None:
        return chosen or np.dtype(np.uint8)
    if chosen is not None and chosen != np.dtype(z.dtype):
        raise ShapeError(f"{op} output_dtype and zero point disagree", expected=_short(chosen),
                         got=_short(z.dtype))
    return np.dtype(z.dtype)


def check_quantize(op: str, in_types: list[TensorType | None],
                   attrs: dict[str, Any]) -> tuple[Grain, np.dtype]:
    """Check QuantizeLinear's inputs; return the granularity and the output type."""
    x, s, z = optional_inputs(in_types, 3)
    need_f32(x, f"{op} input x")
    need_f32(s, f"{op} scale")
    grain = grain_of(op, x.shape, s.shape, attrs)
    if z is not None:
        _check_zero_point(op, z, s, QTYPES)
    return grain, _quantized_type(op, z, attrs)


def _quantize_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                    consts: list[np.ndarray | None]) -> list[TensorType]:
    _, dtype = check_quantize("QuantizeLinear", in_types, attrs)
    return [TensorType(in_types[0].shape, dtype)]


def _dequantize_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                      consts: list[np.ndarray | None]) -> list[TensorType]:
    x, s, z = optional_inputs(in_types, 3)
    kinds = (*QTYPES, np.dtype(np.int32))
    if np.dtype(x.dtype) not in kinds:
        raise ShapeError("DequantizeLinear input x has an unsupported type",
                         expected="u8, i8 or i32", got=_short(x.dtype))
    need_f32(s, "DequantizeLinear scale")
    grain_of("DequantizeLinear", x.shape, s.shape, attrs)
    if z is not None:
        _check_zero_point("DequantizeLinear", z, s, kinds, x.dtype)
    return [TensorType(x.shape, F32)]


def _dynamic_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                   consts: list[np.ndarray | None]) -> list[TensorType]:
    need_f32(in_types[0], "DynamicQuantizeLinear input x")
    return [TensorType(in_types[0].shape, np.dtype(np.uint8)), TensorType((), F32),
            TensorType((), np.dtype(np.uint8))]


def _round_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    need_float(in_types[0], "Round input")
    return [in_types[0]]


# --- references -------------------------------------------------------------------------------


def _quantize_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, s, z = optional_inputs(inputs, 3)
    grain = grain_of("QuantizeLinear", x.shape, s.shape, attrs)
    dtype = np.dtype(z.dtype) if z is not None else \
        _OUTPUT_DTYPES[int(attrs.get("output_dtype", 0))] or np.dtype(np.uint8)
    return [quantize(x, s, z, dtype, grain)]


def _dequantize_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x, s, z = optional_inputs(inputs, 3)
    return [dequantize(x, s, z, grain_of("DequantizeLinear", x.shape, s.shape, attrs))]


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (y, scale, zero_point) of DynamicQuantizeLinear, as onnxruntime computes them."""
    lo = np.minimum(F32.type(0), x.min()) if x.size else F32.type(0)
    hi = np.maximum(F32.type(0), x.max()) if x.size else F32.type(0)
    scale = F32.type(1) if hi == lo else F32.type((hi - lo) / F32.type(255))
    start = F32.type(F32.type(0) - lo / scale)
    zero_point = np.uint8(np.rint(min(max(start, F32.type(0)), F32.type(255))))
    y = quantize(x, scale, zero_point, np.uint8, Grain("tensor"))
    return y, np.asarray(scale, F32), np.asarray(zero_point, np.uint8)


def _dynamic_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return list(dynamic_quantize(inputs[0]))


def _round_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [np.rint(inputs[0])]


# --- lowering ---------------------------------------------------------------------------------


def _lower_quantize(ctx: LowerCtx, view: NodeView) -> None:
    check_since(ctx, view, QUANTIZE_ATTRS, "QuantizeLinear")
    grain = grain_of("QuantizeLinear", view.in_types[0].shape, view.in_types[1].shape,
                     view.full_attrs)
    emit_quantize(ctx, view, view.inputs, view.outputs[0], np.dtype(view.out_types[0].dtype),
                  view.name, grain)


def _lower_dequantize(ctx: LowerCtx, view: NodeView) -> None:
    check_since(ctx, view, DEQUANTIZE_ATTRS, "DequantizeLinear")
    grain = grain_of("DequantizeLinear", view.in_types[0].shape, view.in_types[1].shape,
                     view.full_attrs)
    emit_dequantize(ctx, view, view.inputs, view.in_types[0], view.outputs[0], view.name, grain)


def _lower_dynamic(ctx: LowerCtx, view: NodeView) -> None:
    # All three outputs are required by the ONNX schema: name the ones nobody reads.
    outputs = [name or ctx.fresh(f"{view.name}_unused{k}")
               for k, name in enumerate(view.outputs + [""] * (3 - len(view.outputs)))]
    ctx.node("DynamicQuantizeLinear", view.inputs, outputs)


# --- gradients --------------------------------------------------------------------------------


def as_float(ctx: Any, value: Any) -> Any:
    """Add a Cast of ``value`` to float32."""
    return ctx.op("Cast", value, to=onnx_dtype(F32))


def ir_like_x(ctx: Any, value: Any, x_shape: tuple[int, ...], grain: Grain) -> Any:
    """Return IR nodes making a parameter broadcast against x (as ``_like_x`` does in ONNX)."""
    if grain.kind == "tensor":
        return value
    if grain.kind == "axis":
        shape = [1] * len(x_shape)
        shape[grain.axis] = x_shape[grain.axis]
        return ctx.reshape(value, shape)
    index = np.arange(x_shape[grain.axis], dtype=np.int64) // grain.block
    return ctx.op("Gather", value, ctx.const(index, np.int64), axis=grain.axis)


def sum_to_param(ctx: Any, value: Any, x_shape: tuple[int, ...], p_shape: tuple[int, ...],
                 grain: Grain) -> Any:
    """Sum an x-shaped gradient over the elements that share each parameter."""
    rank = len(x_shape)
    if grain.kind == "tensor":
        return ctx.reshape(ctx.op("ReduceSum", value, keepdims=0), p_shape)
    if grain.kind == "axis":
        others = [k for k in range(rank) if k != grain.axis]
        if not others:
            return value
        return ctx.op("ReduceSum", value, ctx.const(np.array(others, np.int64), np.int64),
                      keepdims=0)
    axis, block = grain.axis, grain.block
    count = p_shape[axis]
    extra = count * block - x_shape[axis]
    if extra:
        pads = [0] * (2 * rank)
        pads[rank + axis] = extra
        value = ctx.op("Pad", value, ctx.const(np.array(pads, np.int64), np.int64),
                       mode="constant")
    value = ctx.reshape(value, (*x_shape[:axis], count, block, *x_shape[axis + 1:]))
    return ctx.op("ReduceSum", value, ctx.const(np.array([axis + 1], np.int64), np.int64),
                  keepdims=0)


def _dequantize_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """d/dscale = sum of dY * (x - zero_point) per scale; none for the integer inputs."""
    x, scale, zp = optional_inputs(ctx.inputs, 3)
    if ctx.g.const_value(x) is None and x.node not in ctx.g.inputs:
        raise GraphcError(
            "the gradient cannot pass through the integer input of DequantizeLinear",
            expected="x a graph input or a constant", got=f"x computed by {x.node!r}",
            hint="The derivative of QuantizeLinear -> DequantizeLinear is 0 between rounding "
                 "steps; for quantization-aware training write FakeQuantizeLinear (same "
                 "export, straight-through gradient).")
    x_shape, p_shape = ctx.in_types[0].shape, ctx.in_types[1].shape
    grain = grain_of("DequantizeLinear", x_shape, p_shape, ctx.attrs)
    i32 = onnx_dtype(np.int32)
    d = ctx.op("Cast", x, to=i32)
    if zp is not None:
        d = ctx.op("Sub", d, ir_like_x(ctx, ctx.op("Cast", zp, to=i32), x_shape, grain))
    term = ctx.op("Mul", grads[0], as_float(ctx, d))
    return [None, sum_to_param(ctx, term, x_shape, p_shape, grain), None]


def _round_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Round is piecewise constant: its derivative is 0 wherever it exists."""
    return [None]


# --- examples ---------------------------------------------------------------------------------


def tie_inputs(scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Return inputs at x/scale = k + 0.5 for even and odd k, and beyond both ends of the
    range (ties included)."""
    qmin, qmax = qrange(dtype)
    halves = np.array([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5], np.float32)
    ends = np.array([qmin - zero_point - 0.5, qmin - zero_point - 1.5, qmin - zero_point - 40,
                     qmax - zero_point + 0.5, qmax - zero_point - 0.5, qmax - zero_point + 40],
                    np.float32)
    return (np.concatenate([halves, ends]) * np.float32(scale)).astype(np.float32)


def f32(value: Any) -> np.ndarray:
    """Return ``value`` as a float32 array."""
    return np.asarray(value, np.float32)


def _quantize_examples() -> tuple[Example, ...]:
    x = rng_array((3, 5), seed=31, low=-2.0, high=2.0)
    per_axis = rng_array((2, 3, 4), seed=32, low=-3.0, high=3.0)
    per_axis[0, :, 0] = np.array([2.5, 1.5, -0.25], np.float32) * np.array([0.5, 0.25, 0.1],
                                                                          np.float32)
    return (
        Example((tie_inputs(0.5, 128, np.uint8), f32(0.5), np.uint8(128)), {}, (1, 2), "ties-u8"),
        Example((tie_inputs(0.25, -3, np.int8), f32(0.25), np.int8(-3)), {}, (1, 2),
                "ties-i8-negative-zp"),
        Example((tie_inputs(0.5, 0, np.uint8), f32(0.5)), {}, (1,), "ties-no-zero-point"),
        Example((x, f32(0.01), np.uint8(100)), {}, (1, 2), "saturating"),
        Example((per_axis, f32([0.5, 0.25, 0.1]), np.array([-5, 0, 7], np.int8)), {"axis": 1},
                (1, 2), "per-axis-i8"),
        Example((per_axis, f32([0.02, 0.05, 0.01, 0.03]), np.array([0, 128, 250, 3], np.uint8)),
                {"axis": -1}, (1, 2), "per-axis-last-u8"),
        Example((x, f32([0.02]), np.array([120], np.uint8)), {}, (), "runtime-parameters"),
    )


def _dequantize_examples() -> tuple[Example, ...]:
    u8 = np.array([[0, 1, 127, 128], [200, 254, 255, 3]], np.uint8)
    i8 = np.array([-128, -127, -1, 0, 1, 126, 127], np.int8)
    weights = np.random.default_rng(41).integers(-128, 128, (4, 3, 2, 2)).astype(np.int8)
    bias = np.array([-(2**31), 2**31 - 1, 16777217, -5, 0, 7], np.int32)
    return (
        Example((u8, f32(0.05), np.uint8(128)), {}, (1, 2), "u8"),
        Example((i8, f32(0.125), np.int8(-5)), {}, (1, 2), "i8-negative-zp"),
        Example((u8, f32(0.3)), {}, (1,), "no-zero-point"),
        Example((bias, f32(1e-4)), {}, (1,), "i32-bias"),
        Example((weights, f32([0.1, 0.02, 0.3, 0.004]), np.array([-3, 0, 5, 127], np.int8)),
                {"axis": 0}, (1, 2), "per-axis-weights"),
        Example((bias, f32([1e-4, 2e-3, 0.5, 1.0, 3.0, 1e-6])), {"axis": 0}, (1,),
                "i32-bias-per-channel"),
        Example((u8, f32([0.1]), np.array([7], np.uint8)), {}, (), "runtime-parameters"),
    )


def _dynamic_examples() -> tuple[Example, ...]:
    def tie(k: int) -> np.ndarray:
        # With min -1, max 255 / (k + 0.5) - 1 makes 0 - min / scale = k + 0.5 exactly.
        return f32([-1.0, 255.0 / (k + 0.5) - 1.0, 0.3, -0.7])

    return (
        Example((rng_array((4, 6), seed=51, low=-1.0, high=3.0),), name="mixed"),
        Example((rng_array((5,), seed=52, low=1.0, high=2.0),), name="all-positive"),
        Example((rng_array((2, 3), seed=53, low=-2.0, high=-1.0),), name="all-negative"),
        Example((np.zeros((3, 2), np.float32),), name="all-zero-scale-one"),
        Example((tie(10),), name="zero-point-tie-even"),
        Example((tie(11),), name="zero-point-tie-odd"),
    )


def _round_examples() -> tuple[Example, ...]:
    ties = f32([-3.5, -2.5, -1.5, -0.5, -0.0, 0.5, 1.5, 2.5, 3.5, 0.49999997, 1e7 + 1])
    return (
        Example((rng_array((2, 3, 4), seed=71, low=-5.0, high=5.0),), name="3d"),
        Example((ties,), name="ties"),
        Example((ties.astype(np.float64) + 2.0,), name="ties-f64"),
    )


# --- records ----------------------------------------------------------------------------------

QUANTIZE_ATTRS = {
    "axis": Attr("int", 1, since=13),
    "block_size": Attr("int", 0, since=21),
    "output_dtype": Attr("int", 0, since=21),
    "saturate": Attr("int", 1, since=19),
}
DEQUANTIZE_ATTRS = {"axis": Attr("int", 1, since=13), "block_size": Attr("int", 0, since=21)}

OPS: list[OpDef] = [
    OpDef(
        name="QuantizeLinear",
        doc="Quantize: saturate(round_half_even(x / scale) + zero_point) to uint8 or int8.",
        inputs=("x", "y_scale", "y_zero_point?"),
        outputs=("y",),
        attrs=QUANTIZE_ATTRS,
        infer=_quantize_infer,
        ref=_quantize_ref,
        lower=_lower_quantize,
        vjp=None,
        flops=elementwise_flops(3),
        nonfinite=nonfinite_examples(_quantize_examples(), 0, 1, 3, 4),
        examples=_quantize_examples(),
    ),
    OpDef(
        name="DequantizeLinear",
        doc="Dequantize: (x - zero_point) * scale from uint8, int8 or int32 to float32.",
        inputs=("x", "x_scale", "x_zero_point?"),
        outputs=("y",),
        attrs=DEQUANTIZE_ATTRS,
        infer=_dequantize_infer,
        ref=_dequantize_ref,
        lower=_lower_dequantize,
        vjp=_dequantize_vjp,
        flops=elementwise_flops(2),
        examples=_dequantize_examples(),
    ),
    OpDef(
        name="DynamicQuantizeLinear",
        doc="Quantize to uint8 with scale and zero point computed from the input's range.",
        inputs=("x",),
        outputs=("y", "y_scale", "y_zero_point"),
        attrs={},
        infer=_dynamic_infer,
        ref=_dynamic_ref,
        lower=_lower_dynamic,
        vjp=None,
        flops=elementwise_flops(5),
        nonfinite=(
            # +inf only: with -inf or NaN the quantization parameters are undefined (docs/ops.md).
            Example((np.array([[np.inf, 1.0, -2.0, 0.5]], np.float32),), name="plus-inf"),
        ),
        examples=_dynamic_examples(),
    ),
    OpDef(
        name="Round",
        doc="Round to the nearest integer, halves to even (derivative 0).",
        inputs=("X",),
        outputs=("Y",),
        attrs={},
        infer=_round_infer,
        ref=_round_ref,
        vjp=_round_vjp,
        flops=elementwise_flops(1),
        nonfinite=nonfinite_examples(_round_examples(), 0, 2),
        examples=_round_examples(),
    ),
]

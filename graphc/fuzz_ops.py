"""How ``graphc.fuzz`` applies each op: operands drawn among the values so far, attributes
within the op's valid range; and the ops it leaves out, with the reason (``LEFT_OUT``).

A generator takes a ``Ctx``, adds the op's node (and its constant operands) through the
builder, records each new value with ``ctx.add(tensor, exact, bound)`` and returns True; it
returns False, adding nothing, when no value built so far fits the op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from graphc.dsl import GraphBuilder, Tensor
from graphc.ops.base import ONNX_DTYPES

F32 = np.dtype(np.float32)
# Values up to this magnitude are finite on every runtime, with room for a few more ops.
FINITE = 1e30
INF = math.inf


@dataclass
class Slot:
    """A value built so far: its tensor, whether every runtime computes its exact bits, and the
    largest magnitude it can have (``inf``: it may hold NaN or infinities)."""

    tensor: Tensor
    exact: bool
    bound: float
    const: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return self.tensor.shape

    @property
    def dtype(self) -> np.dtype:
        return self.tensor.dtype

    @property
    def finite(self) -> bool:
        return self.bound < FINITE


class Ctx:
    """What an op generator sees: the builder, the values so far, the opset and the draws."""

    def __init__(self, draw: Callable[..., Any], builder: GraphBuilder, opset: int,
                 seed: int) -> None:
        self.draw = draw
        self.b = builder
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.slots: list[Slot] = []

    # ----- draws (structure goes through hypothesis, so that it shrinks) -------------------

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(list(options)))

    def flag(self) -> bool:
        return self.draw(st.booleans())

    # ----- values ---------------------------------------------------------------------------

    def pick(self, ok: Callable[[Slot], bool] = lambda s: True,
             dtypes: Sequence[Any] | None = (F32,)) -> Slot | None:
        """Draw a value satisfying ``ok`` (of one of ``dtypes``), the newest ones first, so that
        shrinking leads to chains."""
        found = [s for s in reversed(self.slots)
                 if (dtypes is None or s.dtype in [np.dtype(d) for d in dtypes]) and ok(s)]
        if not found:
            return None
        return found[self.int(0, len(found) - 1)]

    def array(self, shape: Sequence[int], low: float = -1.0, high: float = 1.0,
              dtype: Any = np.float32) -> np.ndarray:
        """Return seeded uniform values (integers for integer dtypes, ``high`` included)."""
        if np.dtype(dtype).kind in "iu":
            return self.rng.integers(int(low), int(high) + 1, size=tuple(shape)).astype(dtype)
        return self.rng.uniform(low, high, size=tuple(shape)).astype(dtype)

    def const(self, value: Any, dtype: Any = None) -> Tensor:
        array = np.asarray(value, dtype=dtype)
        return self.b.const(array, name="k", dtype=array.dtype)

    def ints(self, values: Sequence[int]) -> Tensor:
        return self.const(np.asarray(values, dtype=np.int64))

    def add(self, tensor: Tensor, exact: bool, bound: float) -> Slot:
        slot = Slot(tensor, exact, bound if bound < FINITE else math.inf)
        self.slots.append(slot)
        return slot

    def const_slot(self, shape: Sequence[int], low: float = -1.0, high: float = 1.0) -> Slot:
        """A float32 constant operand (exact)."""
        array = self.array(shape, low, high)
        return Slot(self.const(array), True, max(abs(low), abs(high)), const=True)


I64, I32, U8, I8, BOOL, F64 = (np.dtype(d) for d in (np.int64, np.int32, np.uint8, np.int8,
                                                      np.bool_, np.float64))
# Dtypes of the values ops that only move data (Transpose, Concat, Gather, ...) read.
MOVABLE = (F32, I64, I32, BOOL, U8)
NUMERIC = (F32, I64, I32)

# Ops of the op set the generator never applies, and why.
LEFT_OUT = {
    "QLinearConv": "its requantization rounds a float product that onnxruntime computes in "
                   "another order: results one step apart are not a bug; tests/test_quant_ops.py "
                   "checks it on exact cases",
    "QLinearMatMul": "as QLinearConv",
}


def _size(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _exp_bound(b: float) -> float:
    return math.exp(b) if b < 80 else INF


def _mul_bound(*bounds: float) -> float:
    out = 1.0
    for b in bounds:
        out = INF if b == INF else out * b
    return out


def _partner_shape(c: Ctx, shape: Sequence[int]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape``: some leading axes dropped, some axes 1."""
    keep = c.int(0, len(shape))
    tail = list(shape[len(shape) - keep:])
    return tuple(1 if d > 1 and c.int(0, 2) == 0 else d for d in tail)


def _broadcasts(a: Sequence[int], b: Sequence[int]) -> bool:
    try:
        np.broadcast_shapes(tuple(a), tuple(b))
    except ValueError:
        return False
    return True


def _operand(c: Ctx, a: Slot, ok: Callable[[Slot], bool] = lambda s: True) -> Slot:
    """A second operand for ``a``: a value of its dtype whose shape broadcasts with it, or a
    constant of a shape that broadcasts to it."""
    if c.flag():
        other = c.pick(lambda s: s is not a and _broadcasts(s.shape, a.shape) and ok(s)
                       and _size(np.broadcast_shapes(s.shape, a.shape)) <= 4096,
                       dtypes=(a.dtype,))
        if other is not None:
            return other
    shape = _partner_shape(c, a.shape)
    if a.dtype == F32:
        return c.const_slot(shape)
    if a.dtype == BOOL:
        return Slot(c.const(c.array(shape, 0, 1, np.int64).astype(bool)), True, 1.0, const=True)
    return Slot(c.const(c.array(shape, -3, 3, a.dtype)), True, 3.0, const=True)


# ----- elementwise ------------------------------------------------------------------------


def _unary(op: str, *, exact_in: bool = False, exact_out: bool = False,
           bound: Callable[[float], float] = lambda b: b, dtypes: Sequence[np.dtype] = (F32,),
           finite_in: bool = False, attrs: Callable[[Ctx], dict] = lambda c: {}
           ) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        x = c.pick(lambda s: (s.exact or not exact_in) and (s.finite or not finite_in), dtypes)
        if x is None:
            return False
        y = c.b.op(op, x.tensor, **attrs(c))
        c.add(y, x.exact and exact_out, bound(x.bound) if x.finite else INF)
        return True

    return gen


def _binary(op: str, *, exact_b: bool = False, exact_a: bool = False,
            bound: Callable[[float, float], float] = lambda a, b: a + b,
            dtypes: Sequence[np.dtype] = (F32,)) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        a = c.pick(lambda s: s.exact or not exact_a, dtypes)
        if a is None:
            return False
        other = _operand(c, a, lambda s: s.exact or not exact_b)
        x, y = (a, other) if c.int(0, 3) else (other, a)
        if (exact_a and not x.exact) or (exact_b and not y.exact):
            x, y = y, x
        out = c.b.op(op, x.tensor, y.tensor)
        exact = x.exact and y.exact
        if x.dtype.kind in "iu" and bound(x.bound, y.bound) > 2**30:
            return False
        c.add(out, exact, bound(x.bound, y.bound))
        return True

    return gen


def _pow(c: Ctx) -> bool:
    a = c.pick(lambda s: s.exact)
    if a is None:
        return False
    if c.flag():
        exponent = Slot(c.const(c.array(_partner_shape(c, a.shape), -2, 3, np.int64)), True, 3)
    else:
        exponent = _operand(c, a, lambda s: s.exact)
        if not exponent.exact:
            return False
    c.add(c.b.op("Pow", a.tensor, exponent.tensor), False, INF)
    return True


def _variadic(op: str) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        a = c.pick(dtypes=(F32,))
        if a is None:
            return False
        operands = [a]
        for _ in range(c.int(0, 2)):
            shape = np.broadcast_shapes(*(s.shape for s in operands))
            operands.append(_operand(c, a, lambda s, shape=shape: _broadcasts(s.shape, shape)))
            if not _broadcasts(operands[-1].shape, shape):
                operands.pop()
        out = c.b.op(op, *(s.tensor for s in operands))
        exact = all(s.exact for s in operands) and (op in ("Max", "Min") or len(operands) == 1)
        bounds = [s.bound for s in operands]
        c.add(out, exact, sum(bounds) if op == "Sum" else max(bounds))
        return True

    return gen


def _compare(op: str) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        a = c.pick(lambda s: s.exact, NUMERIC)
        if a is None:
            return False
        b = _operand(c, a, lambda s: s.exact)
        if not b.exact:
            return False
        c.add(c.b.op(op, a.tensor, b.tensor), True, 1.0)
        return True

    return gen


def _logic(op: str) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        a = c.pick(dtypes=(BOOL,))
        if a is None:
            return False
        if op == "Not":
            c.add(c.b.op(op, a.tensor), True, 1.0)
            return True
        c.add(c.b.op(op, a.tensor, _operand(c, a).tensor), True, 1.0)
        return True

    return gen


def _where(c: Ctx) -> bool:
    cond = c.pick(dtypes=(BOOL,))
    if cond is None:
        return False
    x = c.pick(lambda s: _broadcasts(s.shape, cond.shape), (F32, I64))
    if x is None:
        return False
    both = np.broadcast_shapes(cond.shape, x.shape)
    y = _operand(c, x, lambda s: _broadcasts(s.shape, both))
    if not _broadcasts(y.shape, both):
        return False
    c.add(c.b.op("Where", cond.tensor, x.tensor, y.tensor), x.exact and y.exact,
          max(x.bound, y.bound))
    return True


def _clip(c: Ctx) -> bool:
    x = c.pick()
    if x is None:
        return False
    low = float(np.float32(c.choice([-2.0, -0.5, 0.0])))
    high = float(np.float32(c.choice([0.0, 0.5, 1.5])))
    # A missing bound is the dtype's lowest or largest finite value, so an infinity becomes
    # +-3.4e38, on which the runtimes' float32 intermediates (a normalization's squares, a sum)
    # overflow where graphc's float64 ones do not: a value that may be infinite is clipped on
    # both sides.
    which = c.int(0, 3) if x.finite else 3
    lo = c.const(np.float32(low)) if which & 1 else None
    hi = c.const(np.float32(high)) if which & 2 else None
    args = [x.tensor, lo, hi] if hi is not None else [x.tensor, lo] if lo is not None \
        else [x.tensor]
    # Clip passes NaN: only a finite value clipped on both sides is bounded by the bounds.
    bound = max(abs(low), abs(high)) if which == 3 and x.finite else x.bound
    c.add(c.b.op("Clip", *args), x.exact, bound)
    return True


def _dropout(c: Ctx) -> bool:
    x = c.pick(dtypes=(F32,))
    if x is None:
        return False
    args = [x.tensor]
    if c.flag():
        args.append(c.const(np.float32(c.choice([0.0, 0.25, 0.5]))))
    if c.flag():
        args += [None] * (2 - len(args)) + [c.const(np.bool_(False))]
    if c.flag():
        y, mask = _two_outputs(c, "Dropout", args, {})
        c.add(y, x.exact, x.bound)
        c.add(mask, True, 1.0)
    else:
        c.add(c.b.op("Dropout", *args), x.exact, x.bound)
    return True


def _cast(c: Ctx) -> bool:
    x = c.pick(lambda s: s.exact, (F32, I64, I32, BOOL))
    if x is None:
        return False
    if x.dtype == F32:
        options = [F64, BOOL] + ([I64, I32] if x.bound < 2**30 else [])
        options += [np.dtype(np.float16)] if x.bound < 60000 else []
    else:
        options = [F32, I64] if x.dtype != I64 else [F32, I32]
    to = c.choice(options)
    y = c.b.op("Cast", x.tensor, to=ONNX_DTYPES[to])
    if to in (F64, np.dtype(np.float16)):
        # Only Cast reads float64 and float16 values here: back to float32.
        y = c.b.op("Cast", y, to=ONNX_DTYPES[F32])
    c.add(y, True, 1.0 if to == BOOL else x.bound)
    return True


# ----- linear algebra -----------------------------------------------------------------------


def _matmul(c: Ctx) -> bool:
    a = c.pick(lambda s: 1 <= len(s.shape) <= 4)
    if a is None:
        return False
    k = a.shape[-1]
    n = c.int(1, 5)
    if len(a.shape) == 1:
        shapes = [(k,), (k, n)]
    else:
        batch = _partner_shape(c, a.shape[:-2]) if c.flag() else ()
        shapes = [(*batch, k, n), (k,)]
    other = c.pick(lambda s: s is not a and s.shape in shapes)
    b = other if other is not None and c.flag() else c.const_slot(c.choice(shapes))
    c.add(c.b.op("MatMul", a.tensor, b.tensor), False, _mul_bound(a.bound, b.bound, k))
    return True


def _gemm(c: Ctx) -> bool:
    a = c.pick(lambda s: len(s.shape) == 2)
    if a is None:
        return False
    trans_a, trans_b = c.int(0, 1), c.int(0, 1)
    m, k = a.shape[::-1] if trans_a else a.shape
    n = c.int(1, 5)
    b = c.const_slot((n, k) if trans_b else (k, n))
    attrs = {"transA": trans_a, "transB": trans_b}
    alpha = beta = 1.0
    if c.flag():
        alpha = attrs["alpha"] = c.choice([0.5, -1.0, 2.0])
    args = [a.tensor, b.tensor]
    cb = 0.0
    if c.flag():
        if c.flag():
            beta = attrs["beta"] = c.choice([0.0, 0.5, 2.0])
        args.append(c.const_slot(c.choice([(n,), (1, n), (m, 1), (m, n), ()])).tensor)
        cb = abs(beta)
    bound = abs(alpha) * _mul_bound(a.bound, b.bound, k) + cb
    c.add(c.b.op("Gemm", *args, **attrs), False, bound)
    return True


# ----- convolutions and pools ---------------------------------------------------------------


def _spatial(c: Ctx, finite: bool = False, dtypes: Sequence[np.dtype] = (F32,),
             ok: Callable[[Slot], bool] = lambda s: True) -> Slot | None:
    return c.pick(lambda s: 3 <= len(s.shape) <= 5 and (s.finite or not finite) and ok(s),
                  dtypes)


def _source(c: Ctx, s: Slot) -> str:
    """Return the node that computes ``s``, looking through Identity and Dropout (which
    onnxruntime removes before its other graph optimizations)."""
    value = s.tensor.value
    while c.b.graph.op(value.node) in ("Identity", "Dropout") and value.out == 0:
        value = c.b.graph.in_values(value.node)[0]
    return value.node


# The ops past which onnxruntime's QDQPropagationTransformer copies a DequantizeLinear. At
# opset 21 the QuantizeLinear it inserts for a DequantizeLinear with an int8 zero point fails
# onnxruntime's own type inference ("output_dtype INT8 does not match y_zero_point type UINT8"),
# so a valid file makes no session (onnxruntime issue 25526): they do not read such a value.
QDQ_PROPAGATING = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice")
# graphc's ops whose ONNX form begins with one of those: Im2Col (a Transpose), SpaceToDepth in
# CRD mode below opset 28 (a Reshape).
QDQ_PROPAGATING_LOWERED = ("Im2Col", "SpaceToDepth")


def _int8_dequantized_at_21(c: Ctx, s: Slot) -> bool:
    node = _source(c, s)
    graph = c.b.graph
    if c.opset < 21 or graph.op(node) != "DequantizeLinear":
        return False
    zp = graph.in_values(node)[2:]
    return bool(zp) and zp[0] is not None and graph.type_of(zp[0]).dtype == I8


def _window(c: Ctx, sizes: Sequence[int], *, pool: bool = False, dilations: bool = True,
            same: bool = True) -> dict:
    """Draw kernel_shape, strides, dilations and pads (or auto_pad) that leave every output
    axis at least 1 long. Pools keep their pads below the kernel and, with auto_pad SAME,
    their stride at most the kernel (onnxruntime refuses the negative pads otherwise)."""
    auto = c.choice(["NOTSET"] * 3 + ["VALID"] + (["SAME_UPPER", "SAME_LOWER"] if same else []))
    kernel, dil, pads_begin, pads_end, stride = [], [], [], [], []
    for size in sizes:
        k = c.int(1, 3)
        dl = c.int(1, 2) if dilations and auto in ("NOTSET", "VALID") else 1
        eff = (k - 1) * dl + 1
        top = k - 1 if pool else 2
        pb, pe = (c.int(0, top), c.int(0, top)) if auto == "NOTSET" else (0, 0)
        if eff > size + pb + pe:
            k, dl, eff = 1, 1, 1
            if pool:
                pb = pe = 0
        kernel.append(k)
        dil.append(dl)
        pads_begin.append(pb)
        pads_end.append(pe)
        stride.append(c.int(1, eff if pool and auto.startswith("SAME") else 3))
    attrs: dict = {"kernel_shape": kernel}
    if any(s > 1 for s in stride) or c.flag():
        attrs["strides"] = stride
    if any(x > 1 for x in dil):
        attrs["dilations"] = dil
    if auto != "NOTSET":
        attrs["auto_pad"] = auto
    elif any(pads_begin + pads_end) or c.flag():
        attrs["pads"] = pads_begin + pads_end
    return attrs


def _ceil_mode(c: Ctx, sizes: Sequence[int], attrs: dict) -> None:
    """Draw ceil_mode, except where it would add a last window that starts past the input and
    its begin padding: onnxruntime and ONNX's reference drop that window, onnx's shape inference
    counts it, and the checker then rejects the file (with no auto_pad only)."""
    if "auto_pad" in attrs or not c.flag():
        return
    for size, _, stride, _, begin, span in _window_axes(sizes, attrs):
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + begin:
            return
    attrs["ceil_mode"] = 1


def _window_axes(sizes: Sequence[int], attrs: dict) -> Iterator[tuple[int, ...]]:
    """Yield, per spatial axis of a pooling, its size, kernel, stride, dilation, begin padding
    and the span the windows' starts cover (padded size minus the window's extent)."""
    d = len(sizes)
    kernel = attrs["kernel_shape"]
    strides = attrs.get("strides", [1] * d)
    dil = attrs.get("dilations", [1] * d)
    pads = attrs.get("pads", [0] * (2 * d))
    for k in range(d):
        extent = (kernel[k] - 1) * dil[k] + 1
        yield (sizes[k], kernel[k], strides[k], dil[k], pads[k],
               sizes[k] + pads[k] + pads[k + d] - extent)


def _windows_hold_input(sizes: Sequence[int], attrs: dict) -> bool:
    """Return whether every pooling window holds an input cell. A dilated window can step over
    a short input and its padding: ONNX does not say what such a window gives (onnxruntime's
    MaxPool gives -3.4e38, on which float32 intermediates downstream overflow where graphc's
    float64 ones do not; ONNX's reference gives 0, or NaN for AveragePool)."""
    for size, kernel, stride, dil, begin, span in _window_axes(sizes, attrs):
        out = (-(-span // stride) if attrs.get("ceil_mode") else span // stride) + 1
        for o in range(out):
            cells = o * stride - begin + dil * np.arange(kernel)
            if not ((cells >= 0) & (cells < size)).any():
                return False
    return True


def _conv(c: Ctx) -> bool:
    x = _spatial(c)
    if x is None:
        return False
    n_in = x.shape[1]
    group = c.choice([g for g in range(1, n_in + 1) if n_in % g == 0])
    m = group * c.int(1, 3)
    attrs = _window(c, x.shape[2:])
    kernel = attrs["kernel_shape"]
    if not c.flag():
        del attrs["kernel_shape"]
    if group > 1:
        attrs["group"] = group
    w = c.const_slot((m, n_in // group, *kernel))
    args = [x.tensor, w.tensor]
    if c.flag():
        args.append(c.const_slot((m,)).tensor)
    fan = n_in // group * _size(kernel)
    c.add(c.b.op("Conv", *args, **attrs), False, _mul_bound(x.bound, fan) + 1)
    return True


def _conv_transpose(c: Ctx) -> bool:
    x = _spatial(c, finite=True)
    if x is None:
        return False
    n_in = x.shape[1]
    group = c.choice([g for g in range(1, n_in + 1) if n_in % g == 0])
    m = group * c.int(1, 2)
    sizes = x.shape[2:]
    kernel = [c.int(1, 3) for _ in sizes]
    strides = [c.int(1, 3) for _ in sizes]
    dil = [c.int(1, 2) for _ in sizes]
    attrs: dict = {"strides": strides}
    if any(v > 1 for v in dil):
        attrs["dilations"] = dil
    if group > 1:
        attrs["group"] = group
    if c.flag():
        attrs["kernel_shape"] = kernel
    full = [s * (n - 1) + (k - 1) * dl + 1 for s, n, k, dl in zip(strides, sizes, kernel, dil,
                                                                 strict=True)]
    how = c.choice(["pads", "pads", "same"])
    if how == "pads":
        pads = [c.int(0, 1) for _ in range(2 * len(sizes))]
        outpad = [c.int(0, s - 1) for s in strides]
        if any(f + op - pb - pe < 1 for f, op, pb, pe in
               zip(full, outpad, pads[:len(sizes)], pads[len(sizes):], strict=True)):
            pads = [0] * (2 * len(sizes))
        attrs["pads"] = pads
        if any(outpad):
            attrs["output_padding"] = outpad
    else:
        # Not output_shape: onnx's shape inference gives ConvTranspose with output_shape the
        # wrong rank, so the checker rejects every such file.
        attrs["auto_pad"] = c.choice(["SAME_UPPER", "SAME_LOWER"])
    w = c.const_slot((n_in, m // group, *kernel))
    args = [x.tensor, w.tensor]
    if c.flag():
        args.append(c.const_slot((m,)).tensor)
    fan = n_in * _size(kernel)
    c.add(c.b.op("ConvTranspose", *args, **attrs), False, _mul_bound(x.bound, fan) + 1)
    return True


def _maxpool(c: Ctx) -> bool:
    x = _spatial(c, finite=True, dtypes=(F32, U8), ok=lambda s: not _int8_dequantized_at_21(c, s))
    if x is None:
        return False
    attrs = _window(c, x.shape[2:], pool=True)
    _ceil_mode(c, x.shape[2:], attrs)
    if "auto_pad" not in attrs and not _windows_hold_input(x.shape[2:], attrs):
        return False
    if x.dtype == F32 and c.int(0, 2) == 0:
        if c.flag():
            attrs["storage_order"] = 1
        y = _two_outputs(c, "MaxPool", [x.tensor], attrs)
        c.add(y[0], x.exact, x.bound)
        c.add(y[1], x.exact, 2.0**40)
        return True
    c.add(c.b.op("MaxPool", x.tensor, **attrs), x.exact, x.bound)
    return True


def _two_outputs(c: Ctx, op: str, args: list, attrs: dict) -> tuple:
    """Add a node and return its first two outputs (an optional second output is only made
    when asked for, as an output nobody reads is left unnamed)."""
    from graphc.dsl import Tensor
    from graphc.ir import Value

    y = c.b.op(op, *args, **attrs)
    return y, Tensor(c.b, Value(y.value.node, 1))


def _avgpool(c: Ctx) -> bool:
    x = _spatial(c)
    if x is None:
        return False
    attrs = _window(c, x.shape[2:], pool=True, dilations=c.opset >= 19)
    _ceil_mode(c, x.shape[2:], attrs)
    if "auto_pad" not in attrs and not _windows_hold_input(x.shape[2:], attrs):
        return False
    if c.flag():
        attrs["count_include_pad"] = 1
    c.add(c.b.op("AveragePool", x.tensor, **attrs), False, x.bound)
    return True


def _global(op: str) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        x = _spatial(c, finite=op == "GlobalMaxPool")
        if x is None:
            return False
        c.add(c.b.op(op, x.tensor), x.exact and op == "GlobalMaxPool", x.bound)
        return True

    return gen


def _im2col(c: Ctx) -> bool:
    x = _spatial(c, ok=lambda s: not _int8_dequantized_at_21(c, s))
    if x is None:
        return False
    attrs = _window(c, x.shape[2:])
    c.add(c.b.op("Im2Col", x.tensor, **attrs), x.exact, x.bound)
    return True


# ----- normalization and softmax --------------------------------------------------------------


def _epsilon(c: Ctx) -> float:
    return c.choice([1e-3, 1e-2, 0.5])


def _batchnorm(c: Ctx) -> bool:
    x = c.pick(lambda s: 2 <= len(s.shape) <= 5)
    if x is None:
        return False
    ch = x.shape[1]
    stats = [c.const_slot((ch,), -1, 1), c.const_slot((ch,), -1, 1), c.const_slot((ch,), -1, 1),
             c.const_slot((ch,), 0.1, 2)]
    attrs = {"epsilon": 1e-5} if c.flag() else {}
    c.add(c.b.op("BatchNormalization", x.tensor, *(s.tensor for s in stats), **attrs), False,
          _mul_bound(x.bound + 1, 1 / math.sqrt(0.1)) + 1)
    return True


def _layernorm(c: Ctx) -> bool:
    x = c.pick(lambda s: len(s.shape) >= 1)
    if x is None:
        return False
    rank = len(x.shape)
    axis = c.int(-rank, rank - 1)
    norm = x.shape[axis % rank:]
    args = [x.tensor, c.const_slot(norm).tensor]
    if c.flag():
        args.append(c.const_slot(_partner_shape(c, norm)).tensor)
    attrs = {"axis": axis, "epsilon": _epsilon(c)}
    bound = 2 * math.sqrt(_size(norm)) + 1 if x.finite else INF
    # onnxruntime gives NaN for the Mean of a set holding an infinity (ONNX: the infinity).
    outputs = c.int(1, 3) if x.finite else 1
    if outputs == 1:
        c.add(c.b.op("LayerNormalization", *args, **attrs), False, bound)
        return True
    y = c.b.op("LayerNormalization", *args, **attrs)
    from graphc.dsl import Tensor
    from graphc.ir import Value

    c.add(y, False, bound)
    c.add(Tensor(c.b, Value(y.value.node, outputs - 1)), False,
          x.bound if outputs == 2 else 1 / math.sqrt(1e-3))
    return True


def _instancenorm(c: Ctx) -> bool:
    x = _spatial(c)
    if x is None:
        return False
    ch = x.shape[1]
    bound = 2 * math.sqrt(_size(x.shape[2:])) + 1 if x.finite else INF
    c.add(c.b.op("InstanceNormalization", x.tensor, c.const_slot((ch,)).tensor,
                 c.const_slot((ch,)).tensor, epsilon=_epsilon(c)), False, bound)
    return True


def _groupnorm(c: Ctx) -> bool:
    x = _spatial(c)
    if x is None:
        return False
    ch = x.shape[1]
    groups = c.choice([g for g in range(1, ch + 1) if ch % g == 0])
    bound = 2 * math.sqrt(_size(x.shape[1:])) + 1 if x.finite else INF
    c.add(c.b.op("GroupNormalization", x.tensor, c.const_slot((ch,)).tensor,
                 c.const_slot((ch,)).tensor, num_groups=groups, epsilon=_epsilon(c)),
          False, bound)
    return True


def _softmax(op: str) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        x = c.pick(lambda s: len(s.shape) >= 1)
        if x is None:
            return False
        rank = len(x.shape)
        y = c.b.op(op, x.tensor, axis=c.int(-rank, rank - 1))
        bound = 1.0 if op == "Softmax" else 2 * x.bound + math.log(_size(x.shape)) + 1
        c.add(y, False, bound if x.finite else INF)
        return True

    return gen


# ----- reductions -------------------------------------------------------------------------------


def _reduce(op: str) -> Callable[[Ctx], bool]:
    def gen(c: Ctx) -> bool:
        dtypes = (F32, I64, I32) if op != "ReduceMean" else (F32,)
        x = c.pick(lambda s: (op != "ReduceMax" or s.finite) and len(s.shape) >= 1, dtypes)
        if x is None:
            return False
        rank = len(x.shape)
        attrs = {}
        if c.flag():
            attrs["keepdims"] = 0
        args = [x.tensor]
        axes: list[int] = list(range(rank))
        if c.int(0, 3):
            picked = {c.int(0, rank - 1) for _ in range(c.int(1, rank))}
            axes = sorted(picked)
            args.append(c.ints([a - rank if c.flag() else a for a in axes]))
        elif c.flag():
            attrs["noop_with_empty_axes"] = 1
            args.append(c.ints([]))
            axes = []
        n = _size([x.shape[a] for a in axes])
        exact = x.exact and (op == "ReduceMax" or n <= 1)
        bound = x.bound * n if op == "ReduceSum" else x.bound
        if x.dtype.kind in "iu" and bound > 2**30:
            return False
        c.add(c.b.op(op, *args, **attrs), exact, bound)
        return True

    return gen


def _cumsum(c: Ctx) -> bool:
    x = c.pick(lambda s: len(s.shape) >= 1, (F32, I64, I32))
    if x is None:
        return False
    rank = len(x.shape)
    axis = c.int(-rank, rank - 1)
    attrs = {k: 1 for k in ("exclusive", "reverse") if c.flag()}
    length = x.shape[axis]
    bound = x.bound * length
    if x.dtype.kind in "iu" and bound > 2**30:
        return False
    c.add(c.b.op("CumSum", x.tensor, c.const(np.int64(axis)), **attrs),
          x.exact and length <= 2, bound)
    return True


# ----- moving data ------------------------------------------------------------------------------


def _mover(op: str, build: Callable[[Ctx, Slot], tuple[list, dict] | None],
           dtypes: Sequence[np.dtype] = MOVABLE, min_rank: int = 0
           ) -> Callable[[Ctx], bool]:
    """An op that only moves or copies elements: its output is as exact and bounded as its
    input."""

    def gen(c: Ctx) -> bool:
        x = c.pick(lambda s: len(s.shape) >= min_rank and not (
            op in QDQ_PROPAGATING + QDQ_PROPAGATING_LOWERED
            and _int8_dequantized_at_21(c, s)), dtypes)
        if x is None:
            return False
        made = build(c, x)
        if made is None:
            return False
        args, attrs = made
        c.add(c.b.op(op, x.tensor, *args, **attrs), x.exact, x.bound)
        return True

    return gen


def _factor(c: Ctx, size: int) -> list[int]:
    dims = []
    while size > 1 and len(dims) < 4:
        divisors = [d for d in range(1, size + 1) if size % d == 0]
        d = c.choice(divisors)
        dims.append(d)
        size //= d
    if size > 1:
        dims.append(size)
    return dims or [c.choice([1])] * c.int(0, 2)


def _reshape(c: Ctx, x: Slot) -> tuple[list, dict]:
    dims = _factor(c, _size(x.shape))
    if dims and c.flag():
        dims[c.int(0, len(dims) - 1)] = -1
    for k in range(min(len(dims), len(x.shape))):
        if dims[k] == x.shape[k] and c.int(0, 3) == 0:
            dims[k] = 0
    return [c.ints(dims)], {}


def _flatten(c: Ctx, x: Slot) -> tuple[list, dict]:
    rank = len(x.shape)
    return [], {"axis": c.int(-rank, rank)}


def _transpose(c: Ctx, x: Slot) -> tuple[list, dict]:
    perm = list(range(len(x.shape)))
    return [], ({"perm": _permutation(c, perm)} if c.int(0, 3) else {})


def _blocks(c: Ctx, x: Slot, depth_to_space: bool) -> tuple[list, dict] | None:
    """SpaceToDepth / DepthToSpace attributes that fit x (NCHW; onnxruntime has them for
    float32 and uint8 only): a blocksize dividing H and W, or whose square divides C."""
    if len(x.shape) != 4:
        return None
    _, channels, h, w = x.shape
    sizes = [b for b in (1, 2, 3) if (channels % (b * b) == 0 if depth_to_space
                                      else h % b == 0 and w % b == 0)]
    attrs: dict = {"blocksize": c.choice(sizes)}
    if c.flag():
        attrs["mode"] = c.choice(["DCR", "CRD"])
    return [], attrs


def _permutation(c: Ctx, items: list[int]) -> list[int]:
    items = list(items)
    out = []
    while items:
        out.append(items.pop(c.int(0, len(items) - 1)))
    return out


def _squeeze(c: Ctx, x: Slot) -> tuple[list, dict] | None:
    ones = [k for k, d in enumerate(x.shape) if d == 1]
    if not ones:
        return None
    if c.flag():
        return [], {}
    rank = len(x.shape)
    axes = sorted({c.choice(ones) for _ in range(c.int(1, len(ones)))})
    return [c.ints([a - rank if c.flag() else a for a in axes])], {}


def _unsqueeze(c: Ctx, x: Slot) -> tuple[list, dict] | None:
    out_rank = len(x.shape) + c.int(1, 2)
    if out_rank > 6:
        return None
    axes = sorted({c.int(0, out_rank - 1) for _ in range(out_rank - len(x.shape))})
    if len(axes) != out_rank - len(x.shape):
        return None
    return [c.ints([a - out_rank if c.flag() else a for a in axes])], {}


def _slice(c: Ctx, x: Slot) -> tuple[list, dict] | None:
    rank = len(x.shape)
    axes = sorted({c.int(0, rank - 1) for _ in range(c.int(1, rank))})
    starts, ends, steps = [], [], []
    for a in axes:
        d = x.shape[a]
        step = c.choice([1, 1, 2, 3, -1, -2])
        if step > 0:
            start = c.int(-d - 1, d - 1)
            end = c.choice([c.int(-d, d + 2), 2**62])
        else:
            start = c.choice([c.int(-d, d + 1), 2**62])
            end = c.choice([c.int(-d - 2, d - 1), -(2**62)])
        if not len(range(d)[start:end:step]):
            start, end = (0, d) if step > 0 else (d - 1, -d - 1)
        starts.append(start)
        ends.append(end)
        steps.append(step)
    args = [c.ints(starts), c.ints(ends)]
    # Without axes, ONNX slices the first len(starts) axes.
    if c.flag() or any(s != 1 for s in steps) or axes != list(range(len(axes))):
        args.append(c.ints([a - rank if c.flag() else a for a in axes]))
        if c.flag() or any(s != 1 for s in steps):
            args.append(c.ints(steps))
    return args, {}


def _expand(c: Ctx, x: Slot) -> tuple[list, dict] | None:
    target = [d if d > 1 else c.choice([1, 2, 3]) for d in x.shape]
    lead = [c.int(1, 3) for _ in range(c.int(0, 2))]
    shape = lead + [1 if c.int(0, 3) == 0 else t for t in target]
    if _size(np.broadcast_shapes(tuple(shape), x.shape)) > 4096:
        return None
    return [c.ints(shape)], {}


def _gather(c: Ctx, x: Slot) -> tuple[list, dict] | None:
    rank = len(x.shape)
    axis = c.int(-rank, rank - 1)
    d = x.shape[axis]
    shape = tuple(c.int(1, 3) for _ in range(c.int(0, 2)))
    return [c.const(c.array(shape, -d, d - 1, np.int64))], {"axis": axis}


def _pad(c: Ctx, x: Slot) -> tuple[list, dict] | None:
    mode = c.choice(["constant", "constant", "reflect", "edge", "wrap"])
    if mode != "constant" and x.dtype == BOOL:
        return None
    pads = []
    for _ in range(2):
        for d in x.shape:
            low = -1 if d > 2 and mode in ("constant", "edge") else 0
            high = {"reflect": d - 1, "wrap": d}.get(mode, 2)
            pads.append(c.int(low, min(high, 2)))
    for k, d in enumerate(x.shape):
        if d + pads[k] + pads[k + len(x.shape)] < 1:
            pads[k] = pads[k + len(x.shape)] = 0
    args = [c.ints(pads)]
    if mode == "constant" and c.flag():
        value = np.asarray(c.choice([0, 1, 2 if x.dtype.kind == "u" else -2]), dtype=x.dtype)
        args.append(c.const(value))
    return args, {"mode": mode}


def _concat(c: Ctx) -> bool:
    x = c.pick(lambda s: len(s.shape) >= 1, MOVABLE)
    if x is None:
        return False
    rank = len(x.shape)
    axis = c.int(-rank, rank - 1)
    parts = [x]
    for _ in range(c.int(0, 2)):
        fits = c.pick(lambda s: len(s.shape) == rank and all(
            a == b for k, (a, b) in enumerate(zip(s.shape, x.shape, strict=True))
            if k != axis % rank), (x.dtype,))
        if fits is not None and c.flag():
            parts.append(fits)
            continue
        shape = list(x.shape)
        shape[axis] = c.int(1, 3)
        if x.dtype == F32:
            parts.append(c.const_slot(shape))
        else:
            parts.append(Slot(c.const(c.array(shape, 0, 1, x.dtype)), True, 1.0))
    c.add(c.b.op("Concat", *(p.tensor for p in parts), axis=axis),
          all(p.exact for p in parts), max(p.bound for p in parts))
    return True


def _split(c: Ctx) -> bool:
    x = c.pick(lambda s: len(s.shape) >= 1 and max(s.shape) >= 2, MOVABLE)
    if x is None:
        return False
    rank = len(x.shape)
    axis = c.choice([k for k in range(rank) if x.shape[k] >= 1])
    d = x.shape[axis]
    if c.opset >= 18 and c.flag():
        count = c.choice([n for n in range(1, d + 1) if d - -(-d // n) * (n - 1) >= 1])
        ys = c.b.op_outputs("Split", x.tensor, axis=axis - rank if c.flag() else axis,
                            num_outputs=count)
    else:
        sizes = []
        left = d
        while left > 0:
            sizes.append(c.int(1, left))
            left -= sizes[-1]
        ys = c.b.op_outputs("Split", x.tensor, c.ints(sizes), axis=axis)
    for y in ys:
        c.add(y, x.exact, x.bound)
    return True


def _shape(c: Ctx) -> bool:
    """Shape or Size of any value. Shape does not read a Cast: onnxruntime's basic
    optimizations rewrite Shape(Cast(v)) to read v, and when an Identity of v is a graph output
    as well, the session of the valid file fails ("Node input 'v' is not a graph input,
    initializer, or output of a previous node")."""
    x = c.pick(dtypes=None)
    if x is None:
        return False
    rank = len(x.shape)
    if c.flag():
        c.add(c.b.op("Size", x.tensor), True, float(_size(x.shape)))
        return True
    if c.b.graph.op(_source(c, x)) == "Cast":
        return False
    attrs = {}
    if c.flag():
        attrs["start"] = c.int(-rank - 1, rank)
    if c.flag():
        attrs["end"] = c.int(-rank - 1, rank + 1)
    if not x.shape[attrs.get("start", 0):attrs.get("end", rank)]:
        attrs = {}
    if rank == 0:
        return False
    c.add(c.b.op("Shape", x.tensor, **attrs), True, float(max(x.shape, default=1)))
    return True


def _scatter(c: Ctx) -> bool:
    x = c.pick(lambda s: len(s.shape) >= 1, (F32, I64))
    if x is None:
        return False
    rank = len(x.shape)
    axis = c.int(-rank, rank - 1)
    d = x.shape[axis]
    # onnxruntime's max and min reductions drop NaN (std::max); ONNX's propagate it.
    reduction = c.choice(["none", "none", "add", "mul"] + (["max", "min"] if c.opset >= 18
                                                          and x.finite else []))
    shape = [c.int(1, s) for s in x.shape]
    if reduction == "none":
        # Distinct positions along the axis: duplicates have no defined order.
        shape[axis] = min(shape[axis], d)
        pos = np.argsort(c.rng.uniform(size=[*shape[:axis % rank], d,
                                             *shape[axis % rank + 1:]]), axis=axis % rank)
        idx = np.take(pos, range(shape[axis]), axis=axis % rank)
    else:
        idx = c.array(shape, 0, d - 1, np.int64)
    idx = np.where(c.rng.uniform(size=idx.shape) < 0.3, idx - d, idx).astype(np.int64)
    updates = c.pick(lambda s: s.shape == tuple(shape) and (s.finite or reduction
                                                             not in ("max", "min")), (x.dtype,))
    if updates is None:
        updates = c.const_slot(shape) if x.dtype == F32 else \
            Slot(c.const(c.array(shape, -3, 3, x.dtype)), True, 3.0)
    y = c.b.op("ScatterElements", x.tensor, c.const(idx), updates.tensor, axis=axis,
               reduction=reduction)
    exact = x.exact and updates.exact and reduction in ("none", "max", "min")
    bound = INF if reduction in ("add", "mul") else max(x.bound, updates.bound)
    if reduction in ("add", "mul") and x.dtype.kind in "iu":
        return False
    c.add(y, exact, bound)
    return True


def _resize(c: Ctx) -> bool:
    x = c.pick(lambda s: 1 <= len(s.shape) <= 5 and _size(s.shape) <= 512)
    if x is None:
        return False
    rank = len(x.shape)
    mode = c.choice(["nearest", "nearest", "linear", "cubic"])
    if not x.finite:
        # A tap whose weight is within rounding of 0 (a coordinate a last bit away from a
        # cell) spreads a NaN or an infinity on one runtime and not on the other.
        mode = "nearest"
    spatial = list(range(rank))
    if mode != "nearest":
        if rank in (2,) or (mode == "linear" and rank in (4, 5)) or (mode == "cubic"
                                                                      and rank == 4):
            spatial = list(range(rank - 2, rank)) if rank > 2 else [0, 1]
            if mode == "linear" and rank == 5:
                spatial = [2, 3, 4]
        else:
            mode = "nearest"
    attrs: dict = {"mode": mode}
    modes = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
    if c.opset >= 19:
        modes.append("half_pixel_symmetric")
    attrs["coordinate_transformation_mode"] = c.choice(modes)
    if mode == "nearest":
        attrs["nearest_mode"] = c.choice(["round_prefer_floor", "round_prefer_ceil", "floor",
                                          "ceil"])
    if mode == "cubic":
        attrs["cubic_coeff_a"] = c.choice([-0.75, -0.5])
        if c.flag():
            attrs["exclude_outside"] = 1
    if c.flag():
        scales = [c.choice([0.5, 1.0, 1.5, 2.0, 3.0]) if k in spatial else 1.0
                  for k in range(rank)]
        if any(int(np.floor(d * s)) < 1 for d, s in zip(x.shape, scales, strict=True)):
            return False
        args = [None, c.const(np.asarray(scales, np.float32))]
    else:
        sizes = [c.int(1, 2 * d + 1) if k in spatial else d for k, d in enumerate(x.shape)]
        args = [None, None, c.ints(sizes)]
    y = c.b.op("Resize", x.tensor, *args, **attrs)
    if _size(y.shape) > 4096:
        return False
    exact = x.exact and mode == "nearest"
    c.add(y, exact, x.bound * (3 if mode == "cubic" else 1))
    return True


# ----- quantization -------------------------------------------------------------------------


def _dequantized(c: Ctx, s: Slot) -> bool:
    """Return whether ``s`` is what a DequantizeLinear or FakeQuantizeLinear gives (through
    Identity and Dropout, which onnxruntime removes). Quantizing it again is left out:
    onnxruntime's DoubleQDQPairsRemover (basic graph optimizations) turns Q1 -> DQ1 -> Q2 -> DQ2
    into one pair with a scale and zero point of its own, which changes the values (ONNX: each
    pair rounds on its own grid)."""
    return c.b.graph.op(_source(c, s)) in ("DequantizeLinear", "FakeQuantizeLinear")


def _quantize(c: Ctx) -> bool:
    x = c.pick(lambda s: s.exact and s.finite and not _dequantized(c, s))
    if x is None:
        return False
    rank = len(x.shape)
    dtype = c.choice([U8, I8])
    attrs = {}
    if rank >= 1 and c.flag():
        axis = c.int(-rank, rank - 1)
        attrs["axis"] = axis
        n = x.shape[axis]
        scale = c.array((n,), 0.01, 0.5)
        zp = c.array((n,), 0, 255, U8) if dtype == U8 else c.array((n,), -128, 127, I8)
    else:
        scale = np.float32(c.choice([0.01, 0.1, 0.25]))
        zp = np.asarray(c.choice([0, 3, 128]) if dtype == U8 else c.choice([0, -3, 5]), dtype)
    args = [x.tensor, c.const(scale)]
    if dtype == I8 or c.flag():
        args.append(c.const(zp))
    q = c.b.op("QuantizeLinear", *args, **attrs)
    c.add(q, True, 255.0)
    if c.flag():
        c.add(c.b.op("DequantizeLinear", q, *args[1:], **attrs), True, 255.0 * float(
            np.max(scale)))
    return True


def _dequantize(c: Ctx) -> bool:
    """DequantizeLinear on a grid of its own. An int8 input always gets its zero point: before
    a Transpose, onnxruntime's basic graph optimizations read int8 dequantized without one as
    uint8 (negative values become 0: -0.03 gave 0)."""
    q = c.pick(dtypes=(U8, I8))
    if q is None:
        return False
    scale = np.float32(c.choice([0.01, 0.1, 0.25]))
    args = [q.tensor, c.const(scale)]
    if q.dtype == I8 or c.flag():
        args.append(c.const(np.asarray(c.int(0, 20), q.dtype)))
    c.add(c.b.op("DequantizeLinear", *args), True, 255.0)
    return True


def _dynamic_quantize(c: Ctx) -> bool:
    x = c.pick(lambda s: s.exact and s.finite)
    if x is None:
        return False
    y, scale, zp = c.b.op_outputs("DynamicQuantizeLinear", x.tensor)
    c.add(y, True, 255.0)
    c.add(scale, True, x.bound)
    c.add(zp, True, 255.0)
    return True


def _fake_quantize(c: Ctx) -> bool:
    x = c.pick(lambda s: s.exact and s.finite and not _dequantized(c, s))
    if x is None:
        return False
    args = [x.tensor, c.const(np.float32(c.choice([0.01, 0.1, 0.25])))]
    if c.flag():
        args.append(c.const(np.uint8(c.choice([0, 128, 200]))))
    c.add(c.b.op("FakeQuantizeLinear", *args), True, 64.0)
    return True


def _matmul_integer(c: Ctx) -> bool:
    a = c.pick(lambda s: len(s.shape) == 2, (U8, I8))
    if a is None:
        return False
    k = a.shape[1]
    wdtype = c.choice([U8, I8])
    lo, hi = (0, 255) if wdtype == U8 else (-128, 127)
    if wdtype != a.dtype:
        # onnxruntime's kernels for a uint8 and an int8 operand add pairs of products in
        # saturating int16 on AVX2 without VNNI (ONNX: exact int32): weights of 7 bits keep every
        # pair in range, as its quantizer's reduce_range does.
        lo, hi = lo // 2, hi // 2
    w = c.array((k, c.int(1, 4)), lo, hi, wdtype)
    args = [a.tensor, c.const(w)]
    if c.flag():
        args.append(c.const(np.asarray(c.int(0, 10), a.dtype)))
        if c.flag():
            args.append(c.const(np.asarray(c.int(0, 10), wdtype)))
    c.add(c.b.op("MatMulInteger", *args), True, 70000.0 * k)
    return True


def _conv_integer(c: Ctx) -> bool:
    x = c.pick(lambda s: len(s.shape) == 4, (U8,))
    if x is None:
        return False
    attrs = _window(c, x.shape[2:], same=False)
    kernel = attrs["kernel_shape"]
    w = c.array((c.int(1, 3), x.shape[1], *kernel), 0, 255, U8)
    args = [x.tensor, c.const(w)]
    if c.flag():
        args.append(c.const(np.uint8(c.int(0, 10))))
        if c.flag():
            args.append(c.const(np.uint8(c.int(0, 10))))
    c.add(c.b.op("ConvInteger", *args, **attrs), True, 70000.0 * _size(w.shape[1:]))
    return True


GENERATORS: dict[str, Callable[[Ctx], bool]] = {
    # Elementwise, one input.
    "Neg": _unary("Neg", exact_out=True, dtypes=(F32, I64, I32)),
    "Abs": _unary("Abs", exact_out=True, dtypes=(F32, I64, I32)),
    "Relu": _unary("Relu", exact_out=True),
    "LeakyRelu": _unary("LeakyRelu", attrs=lambda c: {"alpha": c.choice([0.01, 0.2, 1.5])}
                        if c.flag() else {}),
    "Exp": _unary("Exp", bound=_exp_bound),
    "Log": _unary("Log", exact_in=True, bound=lambda b: INF),
    "Sqrt": _unary("Sqrt", exact_in=True, exact_out=True, bound=lambda b: INF),
    "Sigmoid": _unary("Sigmoid", bound=lambda b: 1.0),
    "Tanh": _unary("Tanh", bound=lambda b: 1.0),
    "Erf": _unary("Erf", bound=lambda b: 1.0),
    # Gelu of x below about -3 is x times 1 + erf(x / sqrt 2) (or 1 + tanh), two numbers near
    # 1 that cancel in float32: an error of a few ulps of |x| (x = -4.5: 1% of the result),
    # which the comparison allows where the bound is known (fuzz.comparison_scales).
    "Gelu": _unary("Gelu", finite_in=True,
                   attrs=lambda c: {"approximate": c.choice(["none", "tanh"])}),
    "HardSigmoid": _unary("HardSigmoid", bound=lambda b: 1.0, attrs=lambda c: {
        "alpha": c.choice([0.2, 0.5, 1.0]), "beta": c.choice([0.5, 0.0, 0.25])}),
    "HardSwish": _unary("HardSwish"),
    "Sign": _unary("Sign", exact_in=True, exact_out=True, bound=lambda b: 1.0,
                   dtypes=(F32, I64, I32)),
    "Heaviside": _unary("Heaviside", exact_in=True, exact_out=True, bound=lambda b: 1.0,
                        attrs=lambda c: {"threshold": c.choice([0.0, 0.5, -1.0])}),
    "BinarySign": _unary("BinarySign", exact_in=True, exact_out=True, bound=lambda b: 1.0),
    "Round": _unary("Round", exact_in=True, exact_out=True, bound=lambda b: b + 1),
    "Identity": _unary("Identity", exact_out=True, dtypes=MOVABLE),
    "Clip": _clip,
    "Dropout": _dropout,
    "Cast": _cast,
    # Elementwise, two inputs (broadcasting).
    "Add": _binary("Add", dtypes=NUMERIC),
    "Sub": _binary("Sub", dtypes=NUMERIC),
    "Mul": _binary("Mul", bound=_mul_bound, dtypes=NUMERIC),
    "Div": _binary("Div", exact_b=True, bound=lambda a, b: INF),
    "Pow": _pow,
    "Max": _variadic("Max"),
    "Min": _variadic("Min"),
    "Sum": _variadic("Sum"),
    "Mean": _variadic("Mean"),
    "Greater": _compare("Greater"),
    "GreaterOrEqual": _compare("GreaterOrEqual"),
    "Less": _compare("Less"),
    "LessOrEqual": _compare("LessOrEqual"),
    "Equal": _compare("Equal"),
    "Not": _logic("Not"),
    "And": _logic("And"),
    "Or": _logic("Or"),
    "Where": _where,
    # Linear algebra.
    "MatMul": _matmul,
    "Gemm": _gemm,
    # Convolutions and pools, 1 to 3 spatial axes.
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": _global("GlobalAveragePool"),
    "GlobalMaxPool": _global("GlobalMaxPool"),
    "Im2Col": _im2col,
    # Normalization.
    "BatchNormalization": _batchnorm,
    "LayerNormalization": _layernorm,
    "InstanceNormalization": _instancenorm,
    "GroupNormalization": _groupnorm,
    "Softmax": _softmax("Softmax"),
    "LogSoftmax": _softmax("LogSoftmax"),
    # Reductions.
    "ReduceSum": _reduce("ReduceSum"),
    "ReduceMean": _reduce("ReduceMean"),
    "ReduceMax": _reduce("ReduceMax"),
    "CumSum": _cumsum,
    # Shapes and data movement.
    "Reshape": _mover("Reshape", _reshape),
    "Flatten": _mover("Flatten", _flatten),
    "Transpose": _mover("Transpose", _transpose),
    "SpaceToDepth": _mover("SpaceToDepth", lambda c, x: _blocks(c, x, False), dtypes=(F32, U8),
                           min_rank=4),
    "DepthToSpace": _mover("DepthToSpace", lambda c, x: _blocks(c, x, True), dtypes=(F32, U8),
                           min_rank=4),
    "Squeeze": _mover("Squeeze", _squeeze),
    "Unsqueeze": _mover("Unsqueeze", _unsqueeze),
    "Slice": _mover("Slice", _slice, min_rank=1),
    "Expand": _mover("Expand", _expand),
    "Gather": _mover("Gather", _gather, min_rank=1),
    "Pad": _mover("Pad", _pad, dtypes=(F32, I64, I32, U8), min_rank=1),
    "Concat": _concat,
    "Split": _split,
    "Shape": _shape,
    "ScatterElements": _scatter,
    "Resize": _resize,
    # Quantization.
    "QuantizeLinear": _quantize,
    "DequantizeLinear": _dequantize,
    "DynamicQuantizeLinear": _dynamic_quantize,
    "FakeQuantizeLinear": _fake_quantize,
    "MatMulInteger": _matmul_integer,
    "ConvInteger": _conv_integer,
}
# Size is drawn by the Shape generator.
COVERED = sorted({*GENERATORS, "Size"})

__all__ = ["COVERED", "GENERATORS", "LEFT_OUT", "Ctx", "Slot"]

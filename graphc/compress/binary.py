"""Binary layers: recognizing them by value, and their exact lowerings for onnxruntime (CPU).

What the binarize pass (passes/binarize.py) and the reports share.

A layer is a Conv, a Gemm or a MatMul with a constant float32 weight W; its output channels lie
along W's axis 0 (Conv, Gemm with transB=1) or 1 (Gemm with transB=0, MatMul, whose W is
``(K, N)``). It is binary when every output channel c holds only the two values ``+a_c`` and
``-a_c`` with ``a_c > 0``: ``W = alpha * sign(W_latent)`` with ``alpha_c = mean|W_latent_c|``
(XNOR-Net), as training leaves it once the inference pipeline has folded it, and as a
BatchNormalization folded into it keeps it (a per-channel factor). Its activations are binary
when its input is a ``BinarySign`` output, possibly through MaxPool, Flatten or Reshape (which
keep values in {-1, +1}).

The stored form (``SignTable``): the signs ``W >= 0`` of every binary layer of the graph packed
8 per byte into one constant and unpacked once in the graph (graphc.compress.bits.unpack_flags),
each layer's weight a part of one Split and a Reshape of that, all folded by onnxruntime at
session creation: the file holds 1 bit per weight and a decoder paid once per graph, and the run
pays nothing for it. Per-channel constants are stored in the smallest dtype that holds them
exactly (``small_const``: thresholds in int8 or int16, alpha in float16 when exact) and Cast
back at load. The lowerings, all exact:

- ``weights``: ``W = Reshape(Split(Where(flags, 1, -1))) * alpha`` (alpha per channel),
  the layer unchanged. The folded initializer is bit for bit the original W, so the model computes
  exactly what it computed before, at fp32 speed.
- ``integer`` conv (binary input, and its output only read, through an optional
  BatchNormalization and MaxPool / Flatten / Reshape, by a BinarySign): ``QLinearConv`` on the
  activations as uint8 codes ``128 + x`` (127 for -1, 129 for +1, zero point 128, which is
  also what onnxruntime pads with) and int8 weights +-1, scales 1. The following sign is
  ``sign(a_c * acc + b_c)`` with ``acc`` the integer sum of +-1 products, ``a_c`` alpha times
  the BatchNormalization's factor and ``b_c`` the bias through it: +1 exactly when
  ``acc >= t_c = ceil(-b_c / a_c)`` (a channel with ``a_c < 0`` stores its signs negated). The
  int32 bias is ``-t_c``, the output scale 1/256 and zero point 129, so the output is 0 below
  the threshold and at least 129 from it on: the sign is a comparison with 129, which MaxPool
  keeps, and ``Clip(code, 127, 129)`` makes the next binary layer's input codes.
- ``integer`` FC (binary input): ``acc = MatMulInteger(code, W_int8, 128, 0)`` (int32), then
  ``DequantizeLinear(acc, alpha) + b`` (``float32(acc) * alpha`` per channel), or, when a
  BinarySign reads it as above, the codes ``Where(acc >= t, 129, 127)`` directly.
- the codes of a sign of a float value x (the first binary layer's input):
  ``QuantizeLinear(HardSigmoid(x, alpha=FLT_MAX, beta=1), 0.5, 127)``. The HardSigmoid is 1
  for x >= 0 (-0 and +0 included) and 0 for x <= -FLT_MIN (alpha * x <= -4), so the codes
  are 129 and 127; onnxruntime fuses it into a Conv before it, and the sign costs one kernel
  where ``Where(x >= 0, 129, 127)`` took two (4-6% of a digits cnn's time at batch 1 on an
  AVX2 EPYC). Only a negative subnormal x (above -2.2e-39) or a NaN is coded otherwise.

The sums of +-1 products are exact integers; float32 would round ``sum(+-a_c)``. The integer
forms follow exact arithmetic, so they equal the float graph wherever the float graph's
rounding does not decide a sign, i.e. away from ``a_c * acc + b_c = 0`` (``threshold_margin``
counts the channels whose threshold is that close to a reachable integer; a weight with few
mantissa bits, such as ``alpha = k / 2^m``, makes the float sums exact too). Never XNOR +
popcount from standard ops: onnxruntime has no popcount kernel and such graphs run 1.2-62x
slower than fp32 (notes/onnxruntime-cpu.md).

>>> w = np.array([[0.5, -0.5], [-2.0, -2.0]], np.float32)
>>> signs, alpha = binary_parts(w, 0)
>>> signs.tolist(), alpha.tolist()
([[True, False], [False, False]], [0.5, 2.0])
>>> binary_parts(np.array([[0.5, 0.25]], np.float32), 0) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.compress import bits
from graphc.ir import CONST, Graph, Value

LAYER_OPS = ("Conv", "Gemm", "MatMul")
# Ops between a BinarySign and a layer that keep values in {-1, +1}, and that commute with the
# sign (MaxPool of signs is the sign of the MaxPool: the sign is monotone).
KEEP_SIGN_OPS = ("MaxPool", "Flatten", "Reshape")
F32 = np.dtype(np.float32)
# Named by dtype and value: f (float32), u (uint8), i (int8).
SHARED = {
    "f1": np.array(1, np.float32),
    "f-1": np.array(-1, np.float32),
    "f0.5": np.array(0.5, np.float32),
    "i1": np.array(1, np.int8),
    "i-1": np.array(-1, np.int8),
    "i0": np.array(0, np.int8),
    "u128": np.array(128, np.uint8),
    "u127": np.array(127, np.uint8),
    "u129": np.array(129, np.uint8),
    # QLinearConv's output grid of a thresholded conv: acc - t times 256, shifted by 129.
    "f1/256": np.array(1 / 256, np.float32),
    "flat": np.array([-1], np.int64),
}
BOOL = 9  # onnx.TensorProto.BOOL
FLOAT = 1  # onnx.TensorProto.FLOAT
INT32 = 6  # onnx.TensorProto.INT32
FLT_MAX = float(np.finfo(np.float32).max)


def _shared(g: Graph, name: str) -> Value:
    return bits.shared(g, name, SHARED)


# ----- recognition --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A Conv, Gemm or MatMul with a constant float32 weight ``weight`` whose output channels
    lie along ``axis`` of it; ``fan_in`` is the number of products each output sums."""

    node: str
    op: str
    weight: str
    axis: int
    fan_in: int


def layer_of(g: Graph, node: str) -> tuple[Layer | None, str]:
    """Return the ``Layer`` of ``node`` and ``""``, or ``None`` and why it is not one."""
    op = g.op(node)
    if op not in LAYER_OPS:
        return None, f"{op} is not a Conv, Gemm or MatMul"
    values = g.in_values(node)
    w = values[1] if len(values) > 1 else None
    if w is None or g.op(w.node) != CONST:
        return None, "its weight is not a constant"
    t = g.type_of(w)
    if np.dtype(t.dtype) != F32:
        return None, f"its weight is {t.dtype}, not float32"
    attrs = g.attrs(node)
    if op == "Conv":
        if len(t.shape) != 4:
            return None, f"its weight has shape {t.shape}, not (C_out, C_in, kh, kw)"
        return Layer(node, op, w.node, 0, int(np.prod(t.shape[1:]))), ""
    if len(t.shape) != 2:
        return None, f"its weight has shape {t.shape}, not 2-D"
    if op == "Gemm" and attrs.get("transA", 0):
        return None, "Gemm with transA=1"
    axis = 0 if op == "Gemm" and attrs.get("transB", 0) else 1
    return Layer(node, op, w.node, axis, int(t.shape[1 - axis])), ""


def _channels_first(w: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.asarray(w), axis, 0).reshape(w.shape[axis], -1)


def binary_parts(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(W >= 0, alpha)`` if every channel (along ``axis``) of ``w`` holds only
    ``+alpha_c`` and ``-alpha_c`` with ``alpha_c > 0``, else ``None``."""
    rows = _channels_first(w, axis)
    if rows.size == 0:
        return None
    alpha = np.abs(rows[:, 0])
    if not np.all(alpha > 0) or not np.all(np.abs(rows) == alpha[:, None]):
        return None
    return np.asarray(w) >= 0, alpha.astype(np.float32)


def binarized(w: np.ndarray, axis: int) -> np.ndarray:
    """Return ``alpha * sign(w)`` with ``alpha_c = mean|w_c|`` per channel along ``axis`` and
    sign(0) = +1 (XNOR-Net's binary weight), in float32. A channel of zeros gets alpha from
    the whole weight's mean (or 1), so that it stays binary.

    >>> binarized(np.array([[0.5, -1.5], [0.0, 2.0]], np.float32), 0).tolist()
    [[1.0, -1.0], [1.0, 1.0]]
    """
    w = np.asarray(w, np.float32)
    rows = _channels_first(w, axis).astype(np.float64)
    alpha = np.abs(rows).mean(axis=1)
    fallback = float(np.abs(rows).mean()) or 1.0
    alpha = np.where(alpha > 0, alpha, fallback).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.where(w >= 0, 1.0, -1.0).astype(np.float32) * alpha.reshape(shape)


def binary_input(g: Graph, value: Value) -> bool:
    """Return whether ``value`` is a BinarySign output, directly or through MaxPool, Flatten or
    Reshape (values in {-1, +1})."""
    while True:
        op = g.op(value.node)
        if op == "BinarySign":
            return True
        if op not in KEEP_SIGN_OPS or value.out != 0:
            return False
        value = g.in_values(value.node)[0]


def _sole_user(g: Graph, value: Value) -> tuple[str, int] | None:
    users = g.users(value)
    if len(users) != 1 or value in g.outputs:
        return None
    return users[0]


@dataclass(frozen=True)
class SignFold:
    """What follows a layer up to the BinarySign that reads it: an optional
    BatchNormalization, then MaxPool / Flatten / Reshape nodes, then the sign."""

    bn: str | None
    chain: tuple[str, ...]
    sign: str


def sign_fold(g: Graph, node: str) -> SignFold | None:
    """Return how ``node``'s output reaches a BinarySign that is its only reader, or ``None``.

    Every value on the way has a single user and is not a graph output; a BatchNormalization
    must be the inference form with constant parameters; a MaxPool's Indices must be unused.
    """
    value, bn, chain = Value(node), None, []
    user = _sole_user(g, value)
    if user is not None and g.op(user[0]) == "BatchNormalization" and user[1] == 0:
        n = user[0]
        params = g.in_values(n)[1:5]
        if g.attrs(n).get("training_mode", 0) or len(params) != 4 or \
                any(g.const_value(v) is None for v in params):
            return None
        bn, value = n, Value(n)
        user = _sole_user(g, value)
    while user is not None and g.op(user[0]) in KEEP_SIGN_OPS and user[1] == 0:
        n = user[0]
        if g.op(n) == "MaxPool" and g.users(Value(n, 1)):
            return None
        chain.append(n)
        value = Value(n)
        user = _sole_user(g, value)
    if user is None or g.op(user[0]) != "BinarySign":
        return None
    return SignFold(bn, tuple(chain), user[0])


def thresholds(alpha: np.ndarray, bias: np.ndarray | None, bn: Sequence[np.ndarray] | None,
               epsilon: float, fan_in: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(flip, t, size, real)`` per channel for ``sign(a_c * acc + b_c)``: ``flip`` where
    ``a_c < 0`` (the channel's signs are stored negated, so the sum is ``-acc``), the integer
    threshold ``t`` with ``sign = +1 exactly when acc >= t`` (of the possibly negated sum),
    ``|a_c|`` and ``-b_c / |a_c|``. ``bn`` is (scale, B, mean, var) of a BatchNormalization
    after the layer. In float64: the threshold of exact arithmetic.

    >>> flip, t, _, _ = thresholds(np.array([0.5, 2.0]), np.array([0.75, -3.0]), None, 0.0, 9)
    >>> flip.tolist(), t.tolist()
    ([False, False], [-1, 2])
    """
    a = np.asarray(alpha, np.float64)
    b = np.zeros_like(a) if bias is None else np.broadcast_to(
        np.asarray(bias, np.float64).reshape(-1), a.shape).copy()
    if bn is not None:
        gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in bn)
        k = gamma / np.sqrt(var + np.float64(np.float32(epsilon)))
        a, b = a * k, (b - mean) * k + beta
    flip = a < 0
    size = np.abs(a)
    big = fan_in + 1
    real = -b / np.where(size > 0, size, 1.0)
    t = np.where(size > 0, np.ceil(real), np.where(b >= 0, -big, big))
    t = np.clip(t, -big, big).astype(np.int64)
    return flip, t, size, np.where(size > 0, real, 0.5)


def threshold_margin(size: np.ndarray, real: np.ndarray, fan_in: int) -> int:
    """Return how many channels have ``real = -b/|a|`` within float32 rounding of a reachable
    integer sum (``|acc| <= fan_in``): there a float32 evaluation of the layer, whose partial
    sums of ``+-a`` round by about ``eps * |a| * fan_in``, may round the sign differently from
    exact arithmetic."""
    nearest = np.round(real)
    distance = np.abs(real - nearest) * size
    bound = 4 * np.finfo(np.float32).eps * size * (fan_in + np.abs(real))
    return int(np.count_nonzero((distance <= bound) & (np.abs(nearest) <= fan_in)))


# ----- building the stored forms ------------------------------------------------------------


def _weight_users(g: Graph, name: str) -> list[tuple[str, int]]:
    return [(dst, d["port"]) for _, dst, d in g.nx.out_edges(name, data=True)]


class SignTable:
    """The +-1 weights of a graph's binary layers, stored together.

    Every layer's signs go into one packed constant ``bits``, unpacked once into bools
    (graphc.compress.bits.unpack_flags: ``bits.shl``, ``bits.on``), made +-1 once by Where
    (``signs``: int8 if any layer reads int8, else float32), cut into the layers' parts by one
    Split (``w``, sizes ``parts``: whole bytes per layer when every layer's signs fill
    whole bytes, else after a Reshape ``bits.flat`` to one bit per row) and reshaped per layer
    (``d<k>``: the k-th distinct shape) into the value named in ``add`` (a float32
    layer among int8 ones Casts its part). A graph pays for the unpacking once instead of once
    per layer, and onnxruntime folds all of it into the layers' initializers at load.

    ``add`` puts a constant holding the +-1 values where the layer's signs go, so that a
    lowering can build around it; ``finish`` replaces those constants by the decoder once every
    layer's signs are known.

    >>> from graphc.interpret import run
    >>> g = Graph("t")
    >>> table = SignTable(g)
    >>> a = table.add("a.s", np.array([[True, False], [False, True]]), np.float32)
    >>> b = table.add("b.s", np.array([True, True, False]), np.int8)
    >>> table.finish()
    >>> g.outputs = [a, b]
    >>> [v.tolist() for v in run(g, {}).values()]
    [[[1.0, -1.0], [-1.0, 1.0]], [1, 1, -1]]
    """

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.entries: list[tuple[str, str, np.ndarray, np.dtype]] = []

    def add(self, name: str, signs: np.ndarray, dtype: Any) -> Value:
        """Return the value ``name``: +1 where ``signs`` is set, else -1, of ``dtype`` (float32
        or int8), in the shape of ``signs``."""
        signs = np.asarray(signs, bool)
        dtype = np.dtype(dtype)
        held = self.g.add_const(name, np.where(signs, 1, -1).astype(dtype))
        self.entries.append((name, held.node, signs, dtype))
        return held

    def finish(self) -> None:
        """Replace the constants of ``add`` by the shared decoder."""
        if not self.entries:
            return
        g = self.g
        # One Where for all: int8 if any layer reads int8 (float32 layers Cast theirs).
        i8 = any(dtype != F32 for *_, dtype in self.entries)
        packed, spans = bits.pack_flags([signs for _, _, signs, _ in self.entries])
        stored = g.add_const("bits", packed)
        flags = bits.unpack_flags(g, stored, "bits")  # (q, 8)
        # Whole bytes per layer: split the (q, 8) rows as they are; else flatten first.
        unit = 8 if all(end % 8 == 0 for _, end in spans) else 1
        if unit == 1:
            flags = g.add_node("Reshape", [flags, _shared(g, "flat")], name="bits.flat")
        plus, minus = ("i1", "i-1") if i8 else ("f1", "f-1")
        pm = g.add_node("Where", [flags, _shared(g, plus), _shared(g, minus)], name="signs")
        sizes = [(end - start) // unit for start, end in spans]
        pad = 8 * packed.shape[0] // unit - sum(sizes)
        if len(sizes) == 1 and not pad:
            pieces = [pm]
        else:
            parts = g.add_const("parts", np.array(sizes + [pad] * bool(pad), np.int64))
            split = g.add_node("Split", [pm, parts], name="w")
            pieces = [Value(split.node, k) for k in range(len(sizes))]
        shapes: dict[tuple[int, ...], Value] = {}
        for (_, node, signs, dtype), piece in zip(self.entries, pieces, strict=True):
            users = [(dst, d["port"]) for _, dst, d in g.nx.out_edges(node, data=True)]
            outputs = list(g.outputs)
            g.nx.remove_node(node)
            if signs.shape not in shapes:
                shapes[signs.shape] = g.add_const(f"d{len(shapes)}",
                                                  np.array(signs.shape, np.int64))
            shape = shapes[signs.shape]
            if i8 and dtype == F32:
                out = g.add_node("Reshape", [piece, shape], name=f"{node}8")
                out = g.add_node("Cast", [out], {"to": FLOAT}, name=node)
            else:
                out = g.add_node("Reshape", [piece, shape], name=node)
            for dst, port in users:
                g.nx.add_edge(out.node, dst, port=port, out=0)
            g.outputs = [out if v.node == node else v for v in outputs]
        self.entries = []


def is_stored(g: Graph, value: Value) -> bool:
    """Return whether ``value`` is a weight ``store_weights`` wrote: ``Mul(signs, alpha)`` whose
    signs are a SignTable's Reshape of (a crop of) a Where."""
    if g.op(value.node) != "Mul":
        return False
    signs = g.in_values(value.node)[0]
    if signs is not None and g.op(signs.node) == "Cast":
        signs = g.in_values(signs.node)[0]
    if signs is None or g.op(signs.node) != "Reshape":
        return False
    flat = g.in_values(signs.node)[0]
    if flat is not None and g.op(flat.node) == "Split":
        flat = g.in_values(flat.node)[0]
    return flat is not None and g.op(flat.node) == "Where"


def stored_bytes(n: int) -> int:
    """Return the bytes of ``n`` signs in a SignTable: 1 bit each, rounded up to a byte."""
    return -(-n // 8)


def small_const(g: Graph, name: str, array: np.ndarray, cast_name: str) -> tuple[Value, int]:
    """Add ``array`` to ``g`` as the constant ``name`` in the smallest dtype that holds it
    exactly (int8 or int16 for int32, float16 for float32), read through a Cast back to its
    dtype named ``cast_name`` (folded by onnxruntime at load); return that value and the
    bytes stored.

    >>> g = Graph("s")
    >>> v, n = small_const(g, "t", np.array([-3, 200], np.int32), "t32")
    >>> g.op(v.node), g.const_value(Value("t")).dtype, n
    ('Cast', dtype('int16'), 4)
    """
    array = np.asarray(array)
    smaller = {np.dtype(np.int32): (np.int8, np.int16), F32: (np.float16,)}
    for dtype in smaller.get(array.dtype, ()):
        with np.errstate(over="ignore", invalid="ignore"):
            small = array.astype(dtype)
            exact = np.array_equal(small.astype(array.dtype), array)
        if exact:
            stored = g.add_const(name, small)
            to = FLOAT if array.dtype == F32 else INT32
            return g.add_node("Cast", [stored], {"to": to}, name=cast_name), small.nbytes
    return g.add_const(name, array), array.nbytes


def _copied_attrs(g: Graph, node: str) -> dict[str, Any]:
    """Return ``node``'s attributes without those equal to the op's default, for a copy of it
    on the codes (Flatten's axis 1 need not be written)."""
    from graphc import ops

    known = ops.get(g.op(node)).attrs
    return {k: v for k, v in g.attrs(node).items()
            if k not in known or known[k].default != v}


def _without_kernel_shape(attrs: Mapping[str, Any], shape: Sequence[int]) -> dict[str, Any]:
    """Return a conv's ``attrs`` without ``kernel_shape`` where it only repeats the weight's
    spatial shape (ONNX infers it from the weight)."""
    attrs = dict(attrs)
    if tuple(attrs.get("kernel_shape", ())) == tuple(shape[2:]):
        del attrs["kernel_shape"]
    return attrs


def store_weights(g: Graph, layer: Layer, table: SignTable, tag: str) -> int:
    """Replace ``layer``'s binary weight constant in ``g`` (in place) by its signs (added to
    ``table`` as ``<tag>.s``) times alpha (``<tag>.a``): ``<tag>.w``; return the bytes of the
    new constants."""
    w = np.asarray(g.const_value(Value(layer.weight)))
    signs, alpha = binary_parts(w, layer.axis)
    users = _weight_users(g, layer.weight)
    outputs = list(g.outputs)
    g.nx.remove_node(layer.weight)
    shape = [1] * w.ndim
    shape[layer.axis] = -1
    if layer.axis == w.ndim - 1:
        shape = [-1]  # broadcasts along the last axis as it is
    a, size = small_const(g, f"{tag}.a", alpha.reshape(shape), f"{tag}.af")
    signs_v = table.add(f"{tag}.s", signs, F32)
    out = g.add_node("Mul", [signs_v, a], name=f"{tag}.w")
    if layer.op == "Conv":
        g.nx.nodes[layer.node]["attrs"] = _without_kernel_shape(g.attrs(layer.node), w.shape)
    for dst, port in users:
        g.nx.add_edge(out.node, dst, port=port, out=0)
    g.outputs = [out if v.node == layer.weight else v for v in outputs]
    return stored_bytes(w.size) + size


class Codes:
    """The uint8 codes of the {-1, +1} values of a graph under rewriting: ``128 + x`` exactly
    (127, 129), or, after a thresholded QLinearConv, 0 for -1 and >= 129 for +1."""

    def __init__(self, g: Graph) -> None:
        self.g = g
        self.saturated: dict[str, Value] = {}  # BinarySign node -> its codes from a layer
        # The node that gives a lowered BinarySign's float readers its +-1 -> that sign.
        self.alias: dict[str, str] = {}
        self._cache: dict[Value, tuple[Value, bool]] = {}

    def of(self, value: Value, tag: str) -> Value:
        """Return the exact codes (127, 129) of ``value``, a binary input of the layer
        ``tag`` (new nodes are named ``<tag>.h``, ``<tag>.x``)."""
        code, exact = self._codes(value, tag)
        if exact:
            return code
        g = self.g
        return g.add_node("Clip", [code, _shared(g, "u127"),
                                   _shared(g, "u129")], name=f"{tag}.x")

    def _codes(self, value: Value, tag: str) -> tuple[Value, bool]:
        if value in self._cache:
            return self._cache[value]
        g = self.g
        node = self.alias.get(value.node, value.node)
        if g.op(node) == "BinarySign":
            if node in self.saturated:
                result = (self.saturated[node], False)
            else:
                x = g.in_values(node)[0]
                # HardSigmoid(x, FLT_MAX, 1) is 1 for x >= 0 (-0 too) and 0 for x <= -FLT_MIN:
                # onnxruntime fuses it into the Conv before it, so the sign costs one
                # QuantizeLinear (0.5 steps from 127: 127, 129) where GreaterOrEqual + Where
                # took two kernels.
                step = g.add_node("HardSigmoid", [x], {"alpha": FLT_MAX, "beta": 1.0},
                                  name=f"{tag}.h")
                code = g.add_node("QuantizeLinear", [step, _shared(g, "f0.5"),
                                                     _shared(g, "u127")], name=f"{tag}.x")
                result = (code, True)
        else:
            inner, exact = self._codes(g.in_values(node)[0], tag)
            rest = g.in_values(node)[1:]
            copy = g.add_node(g.op(node), [inner, *rest], _copied_attrs(g, node),
                              name=f"{tag}.p")
            result = (copy, exact)
        self._cache[value] = result
        return result


def _bn_params(g: Graph, bn: str | None) -> tuple[list[np.ndarray] | None, float]:
    if bn is None:
        return None, 0.0
    params = [np.asarray(g.const_value(v)) for v in g.in_values(bn)[1:5]]
    return params, float(g.attrs(bn).get("epsilon", 1e-5))


def _bias(g: Graph, layer: Layer) -> np.ndarray | None:
    values = g.in_values(layer.node)
    if len(values) > 2 and values[2] is not None:
        return np.asarray(g.const_value(values[2]))
    return None


@dataclass
class Lowered:
    """What lowering one layer did: its form, the bytes of its weight before and after, and
    the channels whose threshold float32 rounding could decide."""

    form: str
    before: int
    after: int
    close: int = 0


def lower_integer_conv(g: Graph, layer: Layer, fold: SignFold, codes: Codes,
                       table: SignTable, tag: str) -> Lowered:
    """Lower a binary conv with binary input whose output only a sign reads (``fold``) to a
    thresholded QLinearConv, in place; the sign's readers get codes (see the module
    docstring)."""
    w = np.asarray(g.const_value(Value(layer.weight)))
    signs, alpha = binary_parts(w, 0)
    bias = _bias(g, layer)
    bn, eps = _bn_params(g, fold.bn)
    flip, t, size, real = thresholds(alpha, bias, bn, eps, layer.fan_in)
    signs = signs ^ flip.reshape(-1, 1, 1, 1)
    x = g.in_values(layer.node)[0]
    code = codes.of(x, tag)
    w_int = table.add(f"{tag}.w", signs, np.int8)
    b, size_t = small_const(g, f"{tag}.t", (-t).astype(np.int32), f"{tag}.b")
    one, zero = _shared(g, "f1"), _shared(g, "u128")
    q = g.add_node("QLinearConv", [code, one, zero, w_int, one, _shared(g, "i0"),
                                   _shared(g, "f1/256"),
                                   _shared(g, "u129"), b],
                   _without_kernel_shape(g.attrs(layer.node), w.shape), name=f"{tag}.q")
    value = q
    for node in fold.chain:
        value = g.add_node(g.op(node), [value, *g.in_values(node)[1:]],
                           _copied_attrs(g, node), name=f"{tag}.p")
    _float_readers(g, fold.sign, value, codes, tag)
    return Lowered("integer", w.nbytes, stored_bytes(w.size) + size_t,
                   threshold_margin(size, real, layer.fan_in))


def _float_readers(g: Graph, sign: str, code: Value, codes: Codes, tag: str) -> None:
    """Record ``code`` as the codes of BinarySign ``sign`` (after the layer ``tag``), and make
    its readers read the +-1 the codes stand for (``DequantizeLinear(Clip(code, 127, 129), 1,
    128)``: ``<tag>.y``, ``<tag>.f``), so that the float path to the sign can go; binary layers
    lowered later read the codes instead."""
    codes.saturated[sign] = code
    users = [(dst, d["port"], key) for _, dst, key, d in g.nx.out_edges(sign, keys=True,
                                                                        data=True)]
    is_output = any(v.node == sign for v in g.outputs)
    if not users and not is_output:
        return
    exact = g.add_node("Clip", [code, _shared(g, "u127"),
                                _shared(g, "u129")], name=f"{tag}.y")
    back = g.add_node("DequantizeLinear", [exact, _shared(g, "f1"),
                                           _shared(g, "u128")], name=f"{tag}.f")
    codes.alias[back.node] = sign
    for dst, port, key in users:
        g.nx.remove_edge(sign, dst, key)
        g.nx.add_edge(back.node, dst, port=port, out=0)
    g.outputs = [back if v.node == sign else v for v in g.outputs]


def lower_integer_fc(g: Graph, layer: Layer, fold: SignFold | None, codes: Codes,
                     table: SignTable, tag: str) -> Lowered:
    """Lower a binary Gemm or MatMul with binary input to MatMulInteger on codes, in place:
    ``DequantizeLinear(acc, alpha) + b`` in float, or codes ``Where(acc >= t, 129, 127)`` when
    a sign reads it (``fold``)."""
    w = np.asarray(g.const_value(Value(layer.weight)))
    signs, alpha = binary_parts(w, layer.axis)
    if layer.axis == 0:
        signs = signs.T  # MatMulInteger reads B as (K, N)
    bias = _bias(g, layer)
    x = g.in_values(layer.node)[0]
    code = codes.of(x, tag)
    close = 0
    if fold is not None:
        bn, eps = _bn_params(g, fold.bn)
        flip, t, size, real = thresholds(alpha, bias, bn, eps, layer.fan_in)
        signs = signs ^ flip.reshape(1, -1)
        close = threshold_margin(size, real, layer.fan_in)
    w_int = table.add(f"{tag}.w", signs, np.int8)
    acc = g.add_node("MatMulInteger", [code, w_int, _shared(g, "u128"),
                                       _shared(g, "i0")], name=f"{tag}.acc")
    if fold is not None:
        tc, size_t = small_const(g, f"{tag}.t", t.astype(np.int32), f"{tag}.b")
        ge = g.add_node("GreaterOrEqual", [acc, tc], name=f"{tag}.ge")
        value = g.add_node("Where", [ge, _shared(g, "u129"),
                                     _shared(g, "u127")], name=f"{tag}.q")
        for node in fold.chain:
            value = g.add_node(g.op(node), [value, *g.in_values(node)[1:]],
                               _copied_attrs(g, node), name=f"{tag}.p")
        _float_readers(g, fold.sign, value, codes, tag)
        return Lowered("integer", w.nbytes, stored_bytes(w.size) + size_t, close)
    a, size_a = small_const(g, f"{tag}.a", alpha, f"{tag}.af")
    # float32(acc) * alpha, per output channel (the last axis), in one node.
    last = len(g.type_of(acc).shape) - 1
    y = g.add_node("DequantizeLinear", [acc, a], {"axis": last} if last != 1 else {},
                   name=f"{tag}.m")
    b_values = g.in_values(layer.node)
    if len(b_values) > 2 and b_values[2] is not None:
        y = g.add_node("Add", [y, b_values[2]], name=f"{tag}.add")
    _replace_output(g, layer.node, y)
    return Lowered("integer", w.nbytes, stored_bytes(w.size) + size_a)


def _replace_output(g: Graph, node: str, new: Value) -> None:
    from graphc.rewrite import replace

    replace(g, Value(node), new, rename=True)


# ----- measuring ----------------------------------------------------------------------------


def time_forms(models: Mapping[str, Graph], feeds: Mapping[str, np.ndarray], *,
               threads: int = 1, rounds: int = 15) -> dict[str, float]:
    """Return each model's time per call in seconds and its ratio to the first, measured on
    onnxruntime in interleaved rounds (graphc.compress.latency.measure): ``{name: ratio}``
    with the first model's median time under ``"seconds"``."""
    from graphc.compress.latency import measure

    names = list(models)
    timings = measure([models[n] for n in names], feeds, names=names, threads=threads,
                      rounds=rounds)
    result = {t.name: t.ratio for t in timings}
    result["seconds"] = timings[0].median
    return result

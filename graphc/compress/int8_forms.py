"""The other int8 forms quantize-int8 writes: QOperator (static) and dynamic (no calibration).

QOperator (``to_qoperator``) rewrites the QDQ form of ``graphc.compress.int8.build``, so it
keeps its layers and grids exactly. Each QDQ Conv ``Q(relu?(Conv(DQ(q_x), DQ(q_w), DQ(q_b))),
s_y, z_y)`` becomes ``QLinearConv(q_x, s_x, z_x, q_w, s_w, 0, s_y, z_y, q_b)``: uint8 x, int8
weights per output channel, the int32 bias added to the int32 accumulator, and
``y = saturate(round(acc * s_x s_w / s_y) + z_y)`` on the output grid. A ReLU that was the
Conv's only user is folded when that grid has z_y = 0 (its range is [0, hi]): the saturation at
0 is the ReLU, exactly, since ``Q(max(v, 0)) = max(Q(v), 0)`` when z_y = 0. Between int8 layers
the uint8 values pass directly: ``Q(f(DQ(q)))`` on one grid, with f a chain of MaxPool,
Flatten and Reshape, becomes ``f(q)`` on uint8 (exact: a max commutes with an increasing map,
and the others move elements). QuantizeLinear / DequantizeLinear remain only where a float
region begins or ends.

Gemm and MatMul stay in QDQ form inside a QOperator file, ``Gemm(DQ(q_x), DQ(q_w),
DQ(q_b int32))``, which onnxruntime fuses into one QGemm (int32 bias in the accumulator, float
output). The QOperator alternatives are slower on onnxruntime 1.32 (measured on an AVX2 EPYC,
q_x uint8 from a QuantizeLinear, fp32 = 1): QLinearMatMul + DequantizeLinear + bias Add
1.38x (256x128, batch 1) and 1.49x (64x10) against 1.11x and 1.24x for the QGemm form;
MatMulInteger + Cast + Mul + Add with a static zero point is not fused at all (four kernels,
1.30x); on 1024x1024 at batch 1 all three tie (0.42-0.45x). QLinearMatMul would also round
the layer's output to a grid calibration never measured, and the bias would be added in float
after that rounding. ONNX has no standard int8 Gemm with a bias (QGemm is com.microsoft, not
in graphc's op set). The one trap of the QDQ Gemm (a ReLU followed by a float op) is avoided by
``build`` (``_keep_fusable``).

Dynamic (``build_dynamic``): a Gemm or MatMul ``y = x W + b`` with constant W becomes

    q_x, s_x, z_x = DynamicQuantizeLinear(x)                  # per call: range of this x
    y = float32(MatMulInteger(q_x, q_W, z_x, 0)) * (s_x * s_W) + b

with q_W int8 symmetric per output column (``s_W[n] = max|W[:, n]| / qmax``, zero point 0,
W transposed at compile time for ``transB=1``) and the bias in float. onnxruntime fuses the
whole chain into com.microsoft DynamicQuantizeMatMul. Refused (left to the caller): Conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto

from graphc.compress import calibrate
from graphc.compress.int8 import GRID_PRESERVING, Layer
from graphc.ir import Graph, Value


def _consts(g: Graph, node: str) -> list[np.ndarray | None]:
    return [g.const_value(v) for v in g.in_values(node)]


def _sole_user(g: Graph, value: Value) -> str | None:
    users = g.users(value)
    if len(users) != 1 or value in g.outputs or users[0][1] != 0:
        return None
    return users[0][0]


def _weight_dq(g: Graph, value: Value | None) -> list[Value] | None:
    """The (integer, scale, zero point) constants of a DequantizeLinear of a constant."""
    if value is None or g.op(value.node) != "DequantizeLinear":
        return None
    inputs = g.in_values(value.node)
    if any(v is None or g.const_value(v) is None for v in inputs):
        return None
    return inputs


def _replace_node(g: Graph, old: Sequence[str], out: Value, op: str, inputs: list[Value | None],
                  attrs: dict, name: str) -> Value:
    """Remove the nodes ``old`` (``out`` the value the last of them computes), add ``op`` named
    ``name`` (free once they are gone) and give it every user of ``out``."""
    users = g.users(out)
    g.nx.remove_nodes_from(old)
    new = g.add_node(op, inputs, attrs, name=name)
    for dst, port in users:
        g.nx.add_edge(new.node, dst, port=port, out=new.out)
    g.outputs = [new if v == out else v for v in g.outputs]
    return new


def _conv_to_qlinear(g: Graph, conv: str) -> bool:
    """Rewrite one QDQ Conv as QLinearConv; return whether the pattern was there."""
    values = g.in_values(conv)
    x = values[0]
    if g.op(x.node) != "DequantizeLinear":
        return False
    qx, sx, zx = g.in_values(x.node)
    w = _weight_dq(g, values[1])
    b = _weight_dq(g, values[2]) if len(values) > 2 and values[2] is not None else None
    if w is None or (len(values) > 2 and values[2] is not None and b is None):
        return False
    point, old = Value(conv), [conv]
    user = _sole_user(g, point)
    if user is not None and g.op(user) == "Relu":
        point, old = Value(user), [conv, user]
        user = _sole_user(g, point)
    if user is None or g.op(user) != "QuantizeLinear":
        return False
    _, sy, zy = g.in_values(user)
    if len(old) == 2 and int(g.const_value(zy)) != 0:
        return False  # a ReLU folds only into a grid whose zero point is 0
    inputs = [qx, sx, zx, *w, sy, zy] + ([b[0]] if b is not None else [])
    _replace_node(g, [*old, user], Value(user), "QLinearConv", inputs, dict(g.attrs(conv)),
                  conv)
    return True


def _same_grid(g: Graph, dq: str, q: str) -> bool:
    a, b = _consts(g, dq)[1:], _consts(g, q)[1:]
    return (len(a) == len(b) == 2 and all(v is not None and v.size == 1 for v in a + b)
            and a[0].dtype == b[0].dtype and float(a[0]) == float(b[0])
            and a[1].dtype == b[1].dtype and int(a[1]) == int(b[1]))


def _pass_uint8(g: Graph, q: str) -> bool:
    """Rewrite ``Q(f(DQ(u)))`` on one grid as ``f(u)``; return whether it applied."""
    chain: list[str] = []
    value = g.in_values(q)[0]
    while g.op(value.node) in GRID_PRESERVING and value.out == 0:
        chain.append(value.node)
        value = g.in_values(value.node)[0]
    if g.op(value.node) != "DequantizeLinear" or not _same_grid(g, value.node, q):
        return False
    u = g.in_values(value.node)[0]
    for node in reversed(chain):
        u = g.add_node(g.op(node), [u, *g.in_values(node)[1:]], dict(g.attrs(node)),
                       name=f"{node}_uint8")
    g.replace_all_uses(Value(q), u)
    return True


def to_qoperator(h: Graph) -> Graph:
    """Return the QDQ graph ``h`` (from ``build``) with each Conv as QLinearConv and uint8
    passed directly between int8 layers; Gemm and MatMul keep their QDQ form."""
    g = h.copy()
    for node in g.op_nodes():
        if node in g.nx and g.op(node) == "Conv":
            _conv_to_qlinear(g, node)
    for node in g.op_nodes():
        if node in g.nx and g.op(node) == "QuantizeLinear":
            _pass_uint8(g, node)
    g.remove_dead()
    # The float ops the uint8 copies replace are gone: give the copies their names back.
    names = {n: n[:-len("_uint8")] for n in g.nx if n.endswith("_uint8")}
    names = {n: base for n, base in names.items() if base not in g.nx}
    g.rename(names)
    return g


def build_dynamic(g: Graph, layers: Sequence[Layer], *, per_channel: bool = True,
                  qmax: int = 127) -> Graph:
    """Return ``g`` with its Gemm and MatMul ``layers`` as DynamicQuantizeLinear +
    MatMulInteger + Cast + Mul (+ Add of the float bias); other layers are left alone."""
    h = g.copy()
    for layer in layers:
        node = layer.node
        if h.op(node) not in ("Gemm", "MatMul"):
            continue
        values = h.in_values(node)
        w = h.const_value(values[1])
        if h.op(node) == "Gemm" and h.attrs(node).get("transB", 0):
            w = w.T
        axis = 1 if per_channel else None
        scales = calibrate.weight_scales(w, axis, qmax)
        if not per_channel:
            scales = scales.reshape(())
        base = values[1].node
        wq = h.add_const(f"{base}.int8", calibrate.quantize_weight(w, scales, axis, qmax),
                         trainable=True)
        wz = h.add_const(f"{base}.zero_point", np.zeros(scales.shape, np.int8))
        ws = h.add_const(f"{base}.scale", scales)
        xq = h.add_node("DynamicQuantizeLinear", [values[0]], name=f"{node}_quantize")
        acc = h.add_node("MatMulInteger", [xq, wq, Value(xq.node, 2), wz],
                         name=f"{node}_integer")
        acc = h.add_node("Cast", [acc], {"to": TensorProto.FLOAT}, name=f"{node}_float")
        scale = h.add_node("Mul", [Value(xq.node, 1), ws], name=f"{node}_scale")
        bias = values[2] if layer.bias_port is not None else None
        if bias is None:
            _replace_node(h, [node], Value(node), "Mul", [acc, scale], {}, node)
        else:
            y = h.add_node("Mul", [acc, scale], name=f"{node}_scaled")
            _replace_node(h, [node], Value(node), "Add", [y, bias], {}, node)
    h.remove_dead()
    return h

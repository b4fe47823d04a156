"""The int8 forms of layers that quantize-int8 emits and quantization-aware training imitates.

A quantizable layer is a Conv, Gemm or MatMul with constant weights (``find_layers``). Its QDQ
form (``build``) is the one onnxruntime fuses into int8 kernels: the input through
QuantizeLinear / DequantizeLinear on a uint8 grid, the weight as ``DequantizeLinear(int8,
per-channel scale)``, the bias as ``DequantizeLinear(int32, s_x * s_w)`` inside the layer, and a
Conv's output (after its ReLU when that is its only user) through QuantizeLinear /
DequantizeLinear: without it onnxruntime cannot fuse the Conv and dequantizes the weight on
every call. MaxPool, Flatten and Reshape pass their input's grid on unchanged, so onnxruntime
runs them on uint8. A residual Add whose two inputs both come from int8 layers (``junctions``:
a ResNet block's sum) reads them dequantized and has its output (after its ReLU when that is
its only user) through QuantizeLinear / DequantizeLinear on its own grid: onnxruntime runs it
as QLinearAdd on uint8 (the ReLU in the output grid's saturation), where a float Add between
int8 convolutions costs a DequantizeLinear, a QuantizeLinear and a layout change on each side
(resnet18 on an AVX-512 VNNI EPYC: 1.13x the time of onnxruntime's own U8S8 file with the
Adds in float). A strided Conv of few input channels (``stem_block``: resnet18's first layer, 7x7
stride 2 on 3 channels) reads ``SpaceToDepth(Pad(q_x))`` on uint8 instead and becomes a stride-1
Conv of the block's square times the channels (``_space_to_depth``): the same products and
sums, which onnxruntime's int8 kernels run 1.5x faster (resnet18's stem on an AVX-512 VNNI
EPYC: 1.0 ms instead of 1.5 of the model's 10). A Gemm or MatMul whose ReLU feeds a
float op gets ``LeakyRelu(alpha=0)`` for that ReLU (see ``_keep_fusable``). The QOperator and
dynamic forms are in ``graphc.compress.int8_forms``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graphc import ops
from graphc.compress import calibrate
from graphc.compress.calibrate import Grid
from graphc.ir import Graph, Value
from graphc.ops.depth import space_to_depth
from graphc.rewrite import PassReport

GRID_PRESERVING = ("MaxPool", "Flatten", "Reshape")
# A strided Conv reads SpaceToDepth of its input when its input channels times the stride
# squared are at most this (a stem conv on an image's 3 channels: 12 channels of 2x2 blocks).
STEM_CHANNELS = 16
# The suffix of such a conv's moved weight (``<weight>.s2d``; quantized: ``<weight>.s2d.int8``).
S2D_WEIGHT = ".s2d"


@dataclass
class Layer:
    """A quantizable layer: its node, which ports hold input, weight and bias, the weight's
    output-channel axis, and the value whose grid is its output point (Conv only)."""

    node: str
    weight_axis: int
    bias_port: int | None
    out_point: Value | None


def find_layers(g: Graph, report: PassReport | None = None) -> list[Layer]:
    """Return the layers that can be quantized; report why the others cannot."""
    layers = []
    outputs = set(g.outputs)
    for node in g.op_nodes():
        op = g.op(node)
        if op not in ("Conv", "Gemm", "MatMul"):
            continue
        reason = _refusal(g, node)
        if reason is None and op == "Conv":
            out = _out_point(g, node)
            if out in outputs or Value(node) in outputs:
                reason = "its output is a graph output (its output QuantizeLinear would rename it)"
        if reason is not None:
            if report is not None:
                report.refuse(g.format_node(node, types=False), reason)
            continue
        values = g.in_values(node)
        bias_port = 2 if len(values) > 2 and values[2] is not None else None
        if op == "Conv":
            layers.append(Layer(node, 0, bias_port, _out_point(g, node)))
        elif op == "Gemm":
            layers.append(Layer(node, 0 if g.attrs(node).get("transB", 0) else 1, bias_port,
                                None))
        else:
            layers.append(Layer(node, 1, None, None))
    return layers


def _refusal(g: Graph, node: str) -> str | None:
    values = g.in_values(node)
    if g.type_of(values[0]).dtype != np.float32:
        return f"its input is {g.type_of(values[0]).dtype}, not float32"
    w = g.const_value(values[1])
    if w is None:
        return "its weight is not a constant"
    if len(values) > 2 and values[2] is not None and g.const_value(values[2]) is None:
        return "its bias is not a constant"
    attrs = g.attrs(node)
    if g.op(node) == "Gemm":
        if attrs.get("transA", 0):
            return "Gemm with transA=1"
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return "Gemm with alpha or beta other than 1"
        if len(values) > 2 and values[2] is not None:
            n = w.shape[0] if attrs.get("transB", 0) else w.shape[1]
            if g.const_value(values[2]).shape != (n,):
                return f"its bias is not one value per output column ({n},)"
    if g.op(node) == "MatMul" and w.ndim != 2:
        return f"its weight is {w.ndim}-D, not 2-D"
    return None


def _out_point(g: Graph, node: str) -> Value:
    """The value after the Conv's ReLU if that ReLU is its only user, else the Conv's output."""
    users = g.users(Value(node))
    if len(users) == 1 and g.op(users[0][0]) == "Relu" and Value(node) not in g.outputs:
        return Value(users[0][0])
    return Value(node)


def grid_source(g: Graph, value: Value, grids: Mapping[Value, Grid]) -> Value:
    """Follow grid-preserving ops back to a value that has a grid of its own."""
    while value not in grids and g.op(value.node) in GRID_PRESERVING:
        value = g.in_values(value.node)[0]
    return value


def junctions(g: Graph, points: set[Value]) -> list[tuple[str, Value]]:
    """Return the residual Adds that can run on uint8, in topological order, each with its
    output point (its ReLU when that is its only user, else the Add): an Add of two different
    float32 values of its own shape, each of which comes (through MaxPool, Flatten, Reshape)
    from one of ``points`` (int8 layers' output points) or an earlier junction's point."""
    found: list[tuple[str, Value]] = []
    known = dict.fromkeys(points)
    for node in g.topo():
        if g.op(node) != "Add":
            continue
        a, b = g.in_values(node)
        out = g.type_of(Value(node))
        if a == b or any(g.type_of(v) != out for v in (a, b)) or out.dtype != np.float32:
            continue
        if all(grid_source(g, v, known) in known for v in (a, b)):
            point = _out_point(g, node)
            if point in g.outputs:
                continue
            found.append((node, point))
            known[point] = None
    return found


def needed_values(g: Graph, layers: Sequence[Layer], *,
                  with_junctions: bool = False) -> list[Value]:
    """The values calibration must measure: every layer's input and output point, and (with
    ``with_junctions``) the output points of the junctions between them."""
    found: list[Value] = []
    points = {layer.out_point for layer in layers if layer.out_point is not None}
    for layer in layers:
        if layer.out_point is not None and layer.out_point not in found:
            found.append(layer.out_point)
    for _, point in junctions(g, points) if with_junctions else []:
        found.append(point)
        points.add(point)
    for layer in layers:
        x = grid_source(g, g.in_values(layer.node)[0], dict.fromkeys(points))
        if x not in found:
            found.append(x)
    return found


def set_input(g: Graph, node: str, port: int, value: Value) -> None:
    for src, keyed in list(g.nx.pred[node].items()):
        for key, d in list(keyed.items()):
            if d["port"] == port:
                g.nx.remove_edge(src, node, key)
    g.nx.add_edge(value.node, node, port=port, out=value.out)


def stem_block(g: Graph, node: str) -> int | None:
    """The block size by which ``node``, a Conv, is computed on ``SpaceToDepth`` of its
    input: its stride, when it is 2-D, the same on both axes and below the kernel, with
    pads given (or none) rather than auto_pad, no dilation or groups, and at most
    ``STEM_CHANNELS`` input channels after the move; else None."""
    if g.op(node) != "Conv":
        return None
    attrs = g.attrs(node)
    w = g.const_value(g.in_values(node)[1])
    if w is None or w.ndim != 4 or attrs.get("group", 1) != 1 or attrs.get(
            "auto_pad", "NOTSET") != "NOTSET" or any(d != 1 for d in attrs.get("dilations", [])):
        return None
    strides = list(attrs.get("strides", [1, 1]))
    s = strides[0]
    if s < 2 or strides != [s, s] or min(w.shape[2:]) <= s or w.shape[1] * s * s > STEM_CHANNELS:
        return None
    return s


def _space_to_depth(h: Graph, node: str, s: int, dq: Value) -> None:
    """Make the Conv ``node`` (stride ``s``), which reads ``dq = DequantizeLinear(q, scale,
    zero)``, read ``DequantizeLinear(SpaceToDepth(Pad(q)), scale, zero)`` instead, the uint8
    ``q`` padded with the zero point (the code of 0.0) to the conv's pads and
    on to a multiple of s that ends where its last window does, with the weight moved alike
    (zeros past the kernel, each s x s block of taps in channels, DCR order) and stride 1.
    Output (o, p) of the new conv sums taps (i, j) of blocks (o + a, p + b): input row
    s * (o + a) + i of the padded input, which is the old conv's tap s * a + i at (o, p)."""
    x_type = h.type_of(h.in_values(node)[0])
    attrs = dict(h.attrs(node))
    w = np.asarray(h.const_value(h.in_values(node)[1]))
    co, ci, *kernel = w.shape
    pads = list(attrs.get("pads", [0] * 4))
    out = h.type_of(Value(node)).shape[2:]
    taps = [-(-k // s) for k in kernel]  # the new kernel: blocks of s taps
    # Padded size s * (out + taps - 1): every row the new windows read, one block per row.
    ends = [s * (o + t - 1) - (size + pads[a]) for a, (o, t, size) in
            enumerate(zip(out, taps, x_type.shape[2:], strict=True))]
    name = h.value_name(Value(node))
    q, scale, zero = h.in_values(dq.node)
    pad_spec = h.add_const(f"{name}.s2d_pads", np.array([0, 0, pads[0], pads[1], 0, 0, *ends],
                                                        np.int64))
    padded = h.add_node("Pad", [q, pad_spec, zero], name=f"{name}_s2d_pad")
    moved = h.add_node("SpaceToDepth", [padded], {"blocksize": s}, name=f"{name}_s2d")
    set_input(h, node, 0, h.add_node("DequantizeLinear", [moved, scale, zero],
                                     name=f"{name}_s2d_dequantize"))
    full = np.zeros((co, ci, taps[0] * s, taps[1] * s), w.dtype)
    full[:, :, :kernel[0], :kernel[1]] = w
    # The weight's taps move as the input's pixels do (a weight is an NCHW array of co rows).
    weight = h.add_const(f"{h.in_values(node)[1].node}{S2D_WEIGHT}",
                         np.ascontiguousarray(space_to_depth(full, s)), trainable=True)
    set_input(h, node, 1, weight)
    attrs.update(kernel_shape=taps, strides=[1, 1], pads=[0, 0, 0, 0])
    h.nx.nodes[node]["attrs"] = ops.get("Conv").check_attrs(attrs)


def _qdq(g: Graph, value: Value, grid: Grid, name: str) -> tuple[str, Value]:
    scale = g.add_const(f"{name}.scale", np.float32(grid.scale))
    zero = g.add_const(f"{name}.zero_point", np.uint8(grid.zero_point))
    q = g.add_node("QuantizeLinear", [value, scale, zero], name=f"{name}_quantize")
    return q.node, g.add_node("DequantizeLinear", [q, scale, zero], name=f"{name}_dequantize")


# Puts a value on a grid: (graph, value, grid, name) -> (the node that reads the value, the
# value that stands for it).
Wrap = Callable[[Graph, Value, Grid, str], tuple[str, Value]]


def place_grids(g: Graph, h: Graph, layers: Sequence[Layer], grids: Mapping[Value, Grid],
                wrap: Wrap, wrapped_op: str, *, with_junctions: bool) -> None:
    """Put in ``h`` (a copy of ``g``) every activation that quantize-int8 quantizes through
    ``wrap``: each layer's output point and (with ``with_junctions``) each junction's, for all
    their users; each junction's two inputs and each layer's input, for that reader (one wrap
    per value), unless it already reads a ``wrapped_op`` output. ``build`` wraps in
    QuantizeLinear / DequantizeLinear, quantization-aware training in FakeQuantizeLinear
    (graphc.compress.qat), so that training simulates what the file computes."""
    done: dict[Value, Value] = {}

    def at_point(point: Value) -> None:
        keep, new = wrap(h, point, grids[point], h.value_name(point))
        h.replace_all_uses(point, new, keep={keep})
        done[point] = new

    def at_input(node: str, port: int) -> None:
        x = h.in_values(node)[port]
        if h.op(x.node) == wrapped_op:
            return
        if x not in done:
            _, done[x] = wrap(h, x, grids[grid_source(g, x, grids)], h.value_name(x))
        set_input(h, node, port, done[x])

    for layer in layers:
        if layer.out_point is not None and layer.out_point not in done:
            at_point(layer.out_point)
    points = {layer.out_point for layer in layers if layer.out_point is not None}
    for add, point in junctions(g, points) if with_junctions else []:
        if point not in grids:
            break  # a one-layer model: no junction, nor any after it, has a grid
        at_point(point)
        for port in range(2):
            at_input(add, port)
    for layer in layers:
        at_input(layer.node, 0)


def build(g: Graph, layers: Sequence[Layer], grids: Mapping[Value, Grid], *,
          per_channel: bool = True, qmax: int = 127,
          weight_scales: Mapping[str, np.ndarray] | None = None,
          with_junctions: bool = False) -> Graph:
    """Return ``g`` with ``layers`` in QDQ int8 form on the activation ``grids``; weights on
    ``max|W| / qmax`` per channel, or on ``weight_scales`` by layer (those QAT trained on);
    with ``with_junctions``, the ``junctions`` between them on uint8 too (what calibration and
    quantization-aware training measure; a QAT model recorded before QAT simulated them keeps
    them in float, as it trained)."""
    h = g.copy()
    place_grids(g, h, layers, grids, _qdq, "DequantizeLinear", with_junctions=with_junctions)
    for layer in layers:
        node = layer.node
        values = h.in_values(node)
        x = values[0]
        block = stem_block(h, node)
        if block is not None:
            _space_to_depth(h, node, block, x)
            values = h.in_values(node)
        x_scale = float(h.const_value(h.in_values(x.node)[1]))
        w = h.const_value(values[1])
        axis = layer.weight_axis if per_channel else None
        scales = calibrate.weight_scales(w, axis, qmax)
        if weight_scales is not None and node in weight_scales:
            scales = np.asarray(weight_scales[node], np.float32).reshape(scales.shape)
        wq = h.add_const(f"{values[1].node}.int8", calibrate.quantize_weight(w, scales, axis, qmax),
                         trainable=True)
        ws = h.add_const(f"{values[1].node}.scale", scales if per_channel else scales.reshape(()))
        wz = h.add_const(f"{values[1].node}.zero_point", np.zeros(scales.shape, np.int8)
                         if per_channel else np.int8(0))
        attrs = {"axis": layer.weight_axis} if per_channel else {}
        wdq = h.add_node("DequantizeLinear", [wq, ws, wz], attrs, name=f"{node}_weight")
        set_input(h, node, 1, wdq)
        if layer.bias_port is not None:
            b = h.const_value(values[layer.bias_port])
            bias_scales = (np.float64(x_scale) * scales.astype(np.float64)).astype(np.float32)
            if not per_channel:
                bias_scales = bias_scales.reshape(())
            bq = h.add_const(f"{values[layer.bias_port].node}.int32",
                             calibrate.quantize_bias(b, bias_scales), trainable=True)
            bs = h.add_const(f"{values[layer.bias_port].node}.scale", bias_scales)
            bz = h.add_const(f"{values[layer.bias_port].node}.zero_point",
                             np.zeros(bias_scales.shape, np.int32))
            battrs = {"axis": 0} if per_channel else {}
            bdq = h.add_node("DequantizeLinear", [bq, bs, bz], battrs, name=f"{node}_bias")
            set_input(h, node, layer.bias_port, bdq)
        if h.op(node) in ("Gemm", "MatMul"):
            _keep_fusable(h, node)
    chosen = {layer.node for layer in layers}
    for node in [n for n in h.op_nodes() if n not in chosen]:
        _keep_float(h, node)
    h.remove_dead()
    return h


def _keep_float(h: Graph, node: str) -> None:
    """Keep a layer left in fp32 in fp32 on onnxruntime, when it reads a dequantized value.

    Trap (onnxruntime 1.32, measured on the digits CNN with its second Conv kept fp32): a float
    Conv or Gemm between a DequantizeLinear and a QuantizeLinear (reached through its ReLU and
    MaxPool / Reshape, which onnxruntime's QDQ propagation looks through) has its float weight
    quantized by onnxruntime itself (WeightBiasQuantization: per tensor, full range) and runs
    as QLinearConv: the layer graphc kept in fp32 runs in int8, off the interpreter by up to 33
    quantization steps. A ReLU after it becomes LeakyRelu(alpha=0), without one an identity
    LeakyRelu(alpha=1) follows it: the same numbers, and onnxruntime's QDQ selectors and
    propagation stop there."""
    if h.op(node) not in ("Conv", "Gemm", "MatMul"):
        return
    values = h.in_values(node)
    if len(values) < 2 or h.op(values[0].node) != "DequantizeLinear" or \
            h.const_value(values[1]) is None or Value(node) in h.outputs:
        return
    users = h.users(Value(node))
    if len(users) == 1 and h.op(users[0][0]) == "Relu" and Value(users[0][0]) not in h.outputs:
        relu = users[0][0]
        h.nx.nodes[relu]["op"] = "LeakyRelu"
        h.nx.nodes[relu]["attrs"] = ops.get("LeakyRelu").check_attrs({"alpha": 0.0})
        return
    barrier = h.add_node("LeakyRelu", [Value(node)], {"alpha": 1.0}, name=f"{node}_fp32")
    h.replace_all_uses(Value(node), barrier, keep={barrier.node})


def _keep_fusable(h: Graph, node: str) -> None:
    """Turn the ReLU after a QDQ Gemm or MatMul into ``LeakyRelu(alpha=0)`` where onnxruntime
    would otherwise fuse nothing.

    Trap (onnxruntime 1.32, qdq_selectors.cc ``GetQDQSelection``): a Relu or Clip that is a
    node's only user, has one user itself and is no graph output is taken for a clip that the
    next QuantizeLinear makes redundant; when that user is not a QuantizeLinear (an fp32 layer
    after an int8 one), the selector fuses nothing and both weight and bias DequantizeLinear
    run on every call (measured on an AVX2 EPYC: a 1024-1024-1024-10 MLP with only its first
    layer in int8 took 1.4-1.8x fp32 time; with it fused, the first two layers in int8 take
    0.23x). LeakyRelu(alpha=0) computes the same numbers (up to the sign of zero) and is not
    taken for a clip."""
    users = h.users(Value(node))
    if len(users) != 1 or Value(node) in h.outputs:
        return
    relu = users[0][0]
    if h.op(relu) != "Relu" or Value(relu) in h.outputs:
        return
    after = h.users(Value(relu))
    if len(after) == 1 and h.op(after[0][0]) != "QuantizeLinear":
        h.nx.nodes[relu]["op"] = "LeakyRelu"
        h.nx.nodes[relu]["attrs"] = ops.get("LeakyRelu").check_attrs({"alpha": 0.0})


def relative_rms(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    """Return ``||got - want|| / ||want||`` over all arrays (float64): a quantized model's
    output error against its float model."""
    num = sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2)) for a, b in zip(got, want,
                                                                                  strict=True))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in want)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))

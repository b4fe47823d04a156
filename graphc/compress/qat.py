"""Quantization-aware training: the int8 grids of quantize-int8, simulated while training.

``insert_fake_quant`` puts a FakeQuantizeLinear (quantize, then dequantize) where quantize-int8
puts its QuantizeLinear / DequantizeLinear pairs: on every quantizable layer's input, on each
Conv's output point (after its ReLU), and on every weight (int8, one scale per output channel).
And on the residual Adds between int8 layers (``graphc.compress.int8.junctions``): their inputs
and their output point, where quantize-int8 runs them on uint8. A checkpoint recorded before
QAT simulated them (no ``"junctions"`` in its record) rebuilds without them, and its int8 file
keeps those Adds in float, as it trained.
Training then sees the rounding and clipping of the shipped model; gradients pass through the
rounding by the straight-through estimator (inside the grid's range). The grids stay as
calibrated (fixed-range QAT: learned step sizes without LSQ's gradient scaling diverged on the
digits CNN), so the scales and zero points are constants, recorded in the checkpoint's data
(``record``) so that ``qat_graph`` rebuilds the same graph for compiling.

``fake_quant_grids`` reads a trained graph back: the float graph without its fake quantization,
the activation grids and the weight scales, which is what quantize-int8 needs to write the int8
file that the training simulated.

QAT trains the network with BatchNormalization folded into the convolutions (what ships), so
the caller folds first (the fold-batchnorm pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphc.compress import calibrate
from graphc.compress.calibrate import Grid
from graphc.compress.int8 import find_layers, needed_values, place_grids, set_input
from graphc.errors import GraphcError
from graphc.ir import CONST, Graph, Value

FAKE = "FakeQuantizeLinear"


def _fake(g: Graph, value: Value, scale: Any, zero: Any, name: str, attrs: dict[str, Any]
          ) -> Value:
    s = g.add_const(f"{name}.scale", scale)
    z = g.add_const(f"{name}.zero_point", zero)
    return g.add_node(FAKE, [value, s, z], attrs, name=f"{name}_fake_quantize")


def insert_fake_quant(g: Graph, grids: Mapping[Value, Grid], *, per_channel: bool = True,
                      qmax: int = 127, with_junctions: bool = False) -> Graph:
    """Return ``g`` with fake quantization on the inputs, output points and weights of its
    quantizable layers (and with ``with_junctions``, on the junctions' inputs and output points,
    as quantize-int8 writes them), activations on ``grids`` and weights at ``max|W| / qmax``."""
    h = g.copy()
    layers = find_layers(g)

    def fake(h: Graph, value: Value, grid: Grid, name: str) -> tuple[str, Value]:
        fq = _fake(h, value, np.float32(grid.scale), np.uint8(grid.zero_point), name, {})
        return fq.node, fq

    place_grids(g, h, layers, grids, fake, FAKE, with_junctions=with_junctions)
    for layer in layers:
        values = h.in_values(layer.node)
        w = h.const_value(values[1])
        axis = layer.weight_axis if per_channel else None
        scales = calibrate.weight_scales(w, axis, qmax)
        zeros = np.zeros(scales.shape, np.int8)
        attrs = {"axis": layer.weight_axis} if per_channel else {}
        fq = _fake(h, values[1], scales, zeros, values[1].node, attrs)
        set_input(h, layer.node, 1, fq)
    return h


def prepare(g: Graph, batches: Sequence[Mapping[str, np.ndarray]], *, method: str = "minmax",
            per_channel: bool = True, qmax: int = 127) -> tuple[Graph, dict[str, Any]]:
    """Calibrate ``g`` on ``batches`` and return its QAT graph and the record that rebuilds
    it (``qat_graph``)."""
    layers = find_layers(g)
    if not layers:
        raise GraphcError(f"{g.name} has no layer to quantize",
                          expected="a Conv, Gemm or MatMul with constant weights",
                          got="none", hint="QAT simulates quantize-int8, which needs such layers.")
    values = needed_values(g, layers, with_junctions=True)
    ranges = calibrate.measure_ranges(g, batches, values, method=method)
    grids = {v: calibrate.activation_grid(*r) for v, r in ranges.items()}
    qat = insert_fake_quant(g, grids, per_channel=per_channel, qmax=qmax, with_junctions=True)
    record = {"per_channel": per_channel, "qmax": qmax, "junctions": True,
              "zero_points": {g.value_name(v): grids[v].zero_point for v in values},
              "scales": {s.node: np.asarray(qat.const_value(s)).tolist()
                         for n in qat.op_nodes() if qat.op(n) == FAKE
                         for s in qat.in_values(n)[1:2]}}
    return qat, record


def qat_graph(g: Graph, record: Mapping[str, Any]) -> Graph:
    """Rebuild the QAT graph of ``g`` from a checkpoint's record (grids and weight scales)."""
    # Records written before QAT simulated the junctions have no "junctions": without them.
    with_junctions = bool(record.get("junctions", False))
    values = needed_values(g, find_layers(g), with_junctions=with_junctions)
    zero_points = record["zero_points"]
    missing = [g.value_name(v) for v in values if g.value_name(v) not in zero_points]
    if missing:
        raise GraphcError("the checkpoint's QAT record does not fit the model",
                          expected=f"zero points of {', '.join(missing)}",
                          got=sorted(zero_points), hint="Use the model the checkpoint trained.")
    grids = {v: Grid(1.0, int(zero_points[g.value_name(v)])) for v in values}
    qat = insert_fake_quant(g, grids, per_channel=record["per_channel"], qmax=record["qmax"],
                            with_junctions=with_junctions)
    for name, value in record["scales"].items():
        old = qat.const_value(Value(name)) if name in qat.nx else None
        if old is None or np.shape(value) != old.shape:
            raise GraphcError("the checkpoint's QAT record does not fit the model",
                              where=name, expected=f"a scale of shape {getattr(old, 'shape', '?')}",
                              got=np.shape(value), hint="Use the model the checkpoint trained.")
        array = np.asarray(value, np.float32)
        array.flags.writeable = False
        qat.nx.nodes[name]["value"] = array
    return qat


def simulates_junctions(g: Graph) -> bool:
    """Whether the QAT graph ``g`` fake-quantizes its junctions: an Add reads two fake
    quantized values (before, the skip path read the float value)."""
    return any(g.op(n) == "Add" and all(v is not None and g.op(v.node) == FAKE
                                        for v in g.in_values(n)) for n in g.op_nodes())


def fake_quant_grids(g: Graph) -> tuple[Graph, dict[Value, Grid], dict[str, np.ndarray]]:
    """Return ``g`` without its FakeQuantizeLinear nodes, the activation grids they held (by
    value of the returned graph) and the weight scales (by layer node)."""
    h = g.copy()
    grids: dict[Value, Grid] = {}
    weight_scales: dict[str, np.ndarray] = {}
    for node in [n for n in h.op_nodes() if h.op(n) == FAKE]:
        x, s, z = h.in_values(node)
        scale, zero = h.const_value(s), h.const_value(z)
        if scale is None or zero is None:
            raise GraphcError("a fake quantization has computed parameters",
                              where=h.format_node(node), expected="constant scale and zero point",
                              got="computed values")
        if h.op(x.node) == CONST:
            for user, port in h.users(Value(node)):
                if port == 1:
                    weight_scales[user] = np.asarray(scale, np.float32)
        else:
            grids[x] = Grid(float(scale), int(zero))
        h.replace_all_uses(Value(node), x)
        h.nx.remove_node(node)
    h.remove_dead()
    return h, grids, weight_scales

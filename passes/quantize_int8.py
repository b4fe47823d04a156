"""Quantize Conv, Gemm and MatMul layers to int8 (post-training), only where it pays.

Static (the default). Each quantized layer computes on the int8 grids ``x = s * (q - z)`` (see
graphc.compress.calibrate): its input activation is uint8 with a calibrated scale and zero
point, its weight int8 symmetric per output channel (``s_w[o] = max|W[o]| / qmax``, z = 0), its
bias int32 with scale ``s_x * s_w[o]``, so that the int32 accumulator ``sum q_x q_w + q_b``
times ``s_x s_w[o]`` is the layer's output. The graph says all of it in ordinary ops, in one of
two forms onnxruntime runs with its int8 kernels (``format``):

- ``"qdq"``: float ops between QuantizeLinear / DequantizeLinear (graphc.compress.int8):
  the input ``DequantizeLinear(QuantizeLinear(x, s_x, z_x), s_x, z_x)`` (shared by the layers
  that read x); the weight ``DequantizeLinear(W_int8, s_w, 0, axis)``; the bias
  ``DequantizeLinear(b_int32, s_x * s_w, 0)`` inside the Conv or Gemm (never a separate float
  Add); a Conv's output (after its ReLU when the ReLU is its only user) through a
  QuantizeLinear / DequantizeLinear pair: without it onnxruntime cannot fuse the Conv and
  dequantizes the weight on every call. MaxPool, Flatten and Reshape pass a grid on unchanged.
- ``"qoperator"``: the same layers on the same grids with each Conv as ``QLinearConv`` (uint8
  in, uint8 out on its output grid, a ReLU that was its only user folded into an output grid
  with zero point 0), uint8 passed directly from layer to layer (MaxPool, Flatten and Reshape
  run on uint8), QuantizeLinear / DequantizeLinear only where float regions begin and end.
  Gemm and MatMul keep their QDQ form, which onnxruntime fuses into one QGemm: the QOperator
  alternative (QLinearMatMul, then the bias as a float Add) measured up to 1.25x slower on
  small layers (a tie on 1024x1024 at batch 1) and rounds the output to a grid calibration
  never measured (graphc.compress.int8_forms has the numbers).

Dynamic (``dynamic=True``, no calibration data needed): each Gemm and MatMul with a constant
weight becomes ``q_x, s_x, z_x = DynamicQuantizeLinear(x)``, ``y = float32(MatMulInteger(q_x,
W_int8, z_x, 0)) * (s_x * s_w) + b``: the activation grid is measured on every call, the
weight is int8 per output column, the bias stays float. onnxruntime fuses the chain into
com.microsoft DynamicQuantizeMatMul. Conv layers stay fp32 (dynamic quantization covers
Gemm/MatMul).

Then each layer has to earn its int8 form, measured on this machine. Accuracy, one layer at a
time in the model: the model's output error on the calibration data (relative RMS,
``max_error``; in dynamic mode only when calibration data is given, else the report says it was
not measured). Speed, with ``prefer="speed"``: each layer on its own, since one convolution of
resnet18 is at most ~6% of the model's time, the size of the round-to-round noise of a
whole-model timing (a real 3x gain on one layer would be lost in it). ``_one_layer`` makes the
layer a model (its input, the layer with its weights and attributes, its ReLU when that is its
output point); its int8 version is the same build applied to that model, on the whole graph's
grids and weight scales; onnxruntime times the two in interleaved rounds
(graphc.compress.latency.measure) and the layer stays int8 when it is consistently faster (the
75th percentile of the per-round ratios under ``LAYER_MARGIN``). The int8 model converts what
the layer converts in the model: its input is uint8 when it comes from an int8 layer kept
before it (layers are decided in order), else float through a QuantizeLinear; a Conv's output
is uint8 when only int8 candidates read it (through MaxPool, Flatten, Reshape), else
dequantized to float. These conversions matter (resnet18, AVX2 EPYC, int8 / fp32 time, float
in and out vs uint8): 3x3 convs 0.98-1.04x vs 0.98-1.01x, the 1x1 downsample 1.19x vs 0.90x,
the Gemm head 0.66x vs 0.61x; all-float would reject layers that pay inside an int8 chain,
all-uint8 keep layers that do not pay where they meet float ops (the downsample feeds a float
Add). Not counted: onnxruntime's layouts. The fp32 one-layer model reorders its input and
output to NCHWc blocks (1-4% of a resnet18 3x3 conv's time, half of a 1x1's), which a conv among
fp32 convs does not, and an int8 layer among fp32 ones makes its neighbours do it, so at a
float boundary the ratio favours int8 by about twice that. Inputs: seeded random values in the
layer input's calibrated range (N(0, 1) in dynamic mode), at the graph's own batch size: a
graph built at batch 1 and exported with a dynamic batch is timed at batch 1, the only batch
the pass knows. Then the model with every kept layer in int8 must be consistently faster than
fp32 (on the calibration data, or seeded random inputs of the model's input shape), else
nothing is quantized: the pass never makes a model slower. A layer that fails a test stays fp32
and the report says why, with its numbers. ``prefer="size"`` keeps every layer under the error
limit. Finally the written form is profiled on onnxruntime: a weight DequantizeLinear that
executes at run time, or a MatMulInteger it did not fuse, fails the pass (it would make the
model slower).

Weights use ``[-127, 127]``, or ``[-63, 63]`` (``weight_range="reduced"``): CPUs without VNNI
add pairs of uint8 x int8 products in 16 bits with saturation, which with full-range weights
can move outputs by many quantization steps. ``weight_range="auto"`` picks by the CPU flags.

A weight that prune-magnitude stored as a bitmask and its kept values (graphc.compress.sparse)
is quantized from its decoded values; its int8 weight (or its fp32 weight, if the layer stays
fp32) is stored as a bitmask again, of its own zeros: the pruned entries quantize to 0 (weights
are symmetric), so the mask keeps at most the entries it kept before.

Refuses (the layer stays fp32): weights or bias not constant, non-float32 layers, Gemm with
transA, alpha or beta not 1 or a bias that is not per output column, a MatMul whose weight is
not 2-D, a Conv whose output is a graph output; in dynamic mode, every Conv. Refuses as a usage
error: ``format="qoperator"`` with ``dynamic=True`` (the dynamic form is its own), static
quantization without calibration data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from graphc.compress import calibrate, sparse
from graphc.compress.calibrate import Grid, calibration_batches
from graphc.compress.int8 import (
    GRID_PRESERVING,
    S2D_WEIGHT,
    Layer,
    build,
    find_layers,
    grid_source,
    needed_values,
    relative_rms,
)
from graphc.compress.int8_forms import build_dynamic, to_qoperator
from graphc.compress.qat import fake_quant_grids, simulates_junctions
from graphc.errors import GraphcError, UsageError, unknown
from graphc.ir import Graph, Value
from graphc.rewrite import PassReport

PREFER = ("speed", "size")
WEIGHT_RANGES = ("auto", "full", "reduced")
FORMATS = ("qdq", "qoperator")
# The seed of the random inputs that time a dynamic model without calibration data and the
# one-layer models.
TIMING_SEED = 0
# A layer stays int8 when the 75th percentile of its per-round time ratios to fp32 is under
# this. A one-layer model timed against itself (15 rounds; cnn and resnet18 layers, AVX2 EPYC,
# two cores shared with other jobs) had it under 1.0 in 9 of 110 runs, as low as 0.949 under
# load and 0.987 without; a tie that passes by chance can make the whole-model check reject
# every layer, and a gain under 2% of one layer is not worth the risk.
LAYER_MARGIN = 0.98


def _random_feeds(g: Graph) -> dict[str, np.ndarray]:
    """Seeded inputs of the model's shapes: N(0, 1) for float inputs, zeros for the others
    (token ids, masks), enough to time a model."""
    rng = np.random.default_rng(TIMING_SEED)
    feeds = {}
    for name in g.inputs:
        ttype = g.type_of(Value(name))
        if np.issubdtype(ttype.dtype, np.floating):
            feeds[name] = rng.standard_normal(ttype.shape).astype(ttype.dtype)
        else:
            feeds[name] = np.zeros(ttype.shape, ttype.dtype)
    return feeds


def _runner(model: bytes, names: Sequence[str] | None = None) -> Any:
    """Run ``model`` on onnxruntime as it will run (int8 kernels fused), one thread."""
    from graphc.onnxio.runtime import session

    sess = session(model, threads=1)
    outputs = list(names) if names else [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(outputs, sess.run(outputs, dict(feeds)), strict=True))


def _error(model: bytes, batches: Sequence[Mapping[str, np.ndarray]],
           reference: Sequence[dict[str, np.ndarray]]) -> float:
    """The model's output error: relative RMS per batch, averaged (so that one sample with
    large outputs does not hide the error on all the others)."""
    run = _runner(model)
    errors = [relative_rms(list(run(feeds).values()), list(ref.values()))
              for feeds, ref in zip(batches, reference, strict=True)]
    return float(np.mean(errors))


def _grids(g: Graph, layers: Sequence[Layer], batches: Sequence[Mapping[str, np.ndarray]],
           method: str, percentile: float) -> dict[Value, Grid]:
    """Measure the range of every value a layer quantizes; return its uint8 grid."""
    ranges = calibrate.measure_ranges(g, batches, needed_values(g, layers, with_junctions=True),
                                      method=method, percentile=percentile)
    return {v: calibrate.activation_grid(*r) for v, r in ranges.items()}


def check_choices(*, method: str = "minmax", prefer: str = "speed", weight_range: str = "auto",
                  format: str = "qdq", max_error: float = 0.05) -> None:
    """Refuse an option value the pass does not know (the CLI calls this before reading any
    data, so that a typo is a usage error at once)."""
    for flag, what, value, known in (
            ("--calibration", "calibration method", method, calibrate.METHODS),
            ("--prefer", "preference", prefer, PREFER),
            ("--weight-range", "weight range", weight_range, WEIGHT_RANGES),
            ("--format", "int8 format", format, FORMATS)):
        if value not in known:
            raise unknown(what, value, known, cls=UsageError, where=flag)
    if not max_error > 0:
        raise UsageError("--max-error must be positive", where="--max-error",
                         expected="a relative error > 0, e.g. 0.05", got=max_error)


def _check_options(method: str, prefer: str, weight_range: str, format: str, max_error: float,
                   dynamic: bool, calibration: Any, trained: bool) -> None:
    check_choices(method=method, prefer=prefer, weight_range=weight_range, format=format,
                  max_error=max_error)
    if dynamic and format != "qdq":
        raise UsageError(f"--format {format} does not apply to --dynamic", where="--format",
                         expected="no --format with --dynamic", got=format,
                         hint="The dynamic form is DynamicQuantizeLinear + MatMulInteger.")
    if trained and dynamic:
        raise UsageError("--dynamic does not apply to a quantization-aware trained model",
                         expected="the static form its training simulated", got="--dynamic")
    if calibration is None and not dynamic and not trained:
        raise UsageError("quantize-int8 needs calibration data", expected="--calibrate digits "
                         "or --calibrate FILE.npz", got="none",
                         hint="Activation ranges are measured on real inputs; --dynamic "
                              "measures them on every call instead.")


def _check_fused(model: bytes, feeds: Mapping[str, np.ndarray], dynamic: bool) -> None:
    """Fail if onnxruntime dequantizes a weight at run time or (``dynamic``) runs a
    MatMulInteger unfused."""
    from graphc.compress.latency import executed_ops, runtime_weight_dequantize

    slow = runtime_weight_dequantize(model, feeds)
    if slow:
        raise GraphcError("onnxruntime dequantizes weights at run time",
                          where=", ".join(slow), expected="every weight DequantizeLinear "
                          "fused into an int8 kernel", got=f"{len(slow)} run per call",
                          hint="This is a bug in quantize-int8's patterns; use --fp32-layers "
                               "for the layers named.")
    if not dynamic:
        return
    unfused = [name for name, op in executed_ops(model, feeds) if op == "MatMulInteger"]
    if unfused:
        raise GraphcError("onnxruntime runs MatMulInteger unfused", where=", ".join(unfused),
                          expected="DynamicQuantizeLinear + MatMulInteger + Cast + Mul fused "
                          "into DynamicQuantizeMatMul", got=f"{len(unfused)} unfused",
                          hint="This is a bug in quantize-int8's patterns; use --fp32-layers "
                               "for the layers named.")


def _one_layer(g: Graph, layer: Layer, u8_grid: Grid | None = None) -> tuple[Graph, Layer]:
    """Return ``layer`` of ``g`` alone as a model, and its Layer there: a float input of the
    layer input's type (with ``u8_grid``: a uint8 input, then a DequantizeLinear on that grid),
    the layer with its constant weight, bias and attributes, its ReLU when that is its output
    point, and the float output. The layer and its ReLU keep their names."""
    x, *params = g.in_values(layer.node)
    ttype = g.type_of(x)
    h = Graph(f"{g.name}.{layer.node}")
    name = g.value_name(x)
    if u8_grid is None:
        v = h.add_input(name, ttype.shape, ttype.dtype)
    else:
        q = h.add_input(f"{name}.uint8", ttype.shape, np.uint8)
        scale = h.add_const(f"{name}.scale", np.float32(u8_grid.scale))
        zero = h.add_const(f"{name}.zero_point", np.uint8(u8_grid.zero_point))
        v = h.add_node("DequantizeLinear", [q, scale, zero], name=f"{name}_dequantize")
    inputs = [v, *(None if p is None else h.add_const(p.node, g.const_value(p)) for p in params)]
    y = h.add_node(g.op(layer.node), inputs, dict(g.attrs(layer.node)), name=layer.node)
    point = None
    if layer.out_point is not None:
        if layer.out_point.node != layer.node:
            y = h.add_node("Relu", [y], name=layer.out_point.node)
        point = y
    h.outputs = [y]
    return h, Layer(layer.node, layer.weight_axis, layer.bias_port, point)


def _only_read_by(g: Graph, value: Value, layers: set[str]) -> bool:
    """Whether ``value`` is no graph output and only ``layers`` read it (as their input),
    directly or through MaxPool, Flatten and Reshape: then it can stay uint8."""
    users = g.users(value)
    return bool(users) and value not in g.outputs and all(
        port == 0 and (node in layers or g.op(node) in GRID_PRESERVING
                       and _only_read_by(g, Value(node), layers)) for node, port in users)


Form = Callable[[Graph, Sequence[Layer], Mapping[Value, Grid]], Graph]


def _encode_again(h: Graph, encoded: Sequence[str]) -> Graph:
    """Store again as a bitmask each weight that came in encoded: the constant of its name if
    its layer stayed fp32, else its int8 weight (``<name>.int8``, or ``<name>.s2d.int8`` for a
    stem conv on SpaceToDepth), where that is smaller."""
    for name in encoded:
        stored = next((n for n in (name, f"{name}.int8", f"{name}{S2D_WEIGHT}.int8")
                       if n in h.nx and h.const_value(Value(n)) is not None), None)
        if stored is not None and sparse.encodable(h, stored) is None:
            h = sparse.encode(h, stored)
    return h


def _layer_models(g: Graph, layer: Layer, form: Form, grids: Mapping[Value, Grid],
                  u8_in: bool, u8_out: bool) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Return the fp32 and int8 one-layer models of ``layer`` and seeded inputs for both.

    The fp32 model has float input and output. The int8 model takes uint8 with ``u8_in`` (its
    input comes from an int8 layer), else float through its QuantizeLinear, and gives uint8
    with ``u8_out`` (int8 layers read it), else float through a DequantizeLinear: the
    conversions the layer pays in the model. Not the same conversions for the fp32 model: on
    onnxruntime a float Conv between DequantizeLinear and QuantizeLinear is not fp32 (its
    WeightBiasQuantization rewrite quantizes the weight per tensor, then runs QLinearConv)."""
    from graphc.onnxio.export import to_bytes

    x = g.in_values(layer.node)[0]
    grid = grids.get(grid_source(g, x, grids))
    fp32, _ = _one_layer(g, layer)
    small, one = _one_layer(g, layer, grid if u8_in else None)
    on = {small.in_values(layer.node)[0]: grid} if grid is not None else {}
    if one.out_point is not None and layer.out_point in grids:
        on[one.out_point] = grids[layer.out_point]
    int8 = form(small, [one], on)
    if u8_out:  # the output QuantizeLinear (or QLinearConv) is the model's output
        int8.outputs = [int8.in_values(int8.outputs[0].node)[0]]
        int8.remove_dead()
    rng = np.random.default_rng(TIMING_SEED)
    shape = g.type_of(x).shape
    if grid is None:
        feeds = {fp32.inputs[0]: rng.standard_normal(shape).astype(np.float32)}
    else:
        feeds = {fp32.inputs[0]: rng.uniform(grid.lo, grid.hi, shape).astype(np.float32)}
    if u8_in:
        # measure() gives each model the same inputs: each declares the other's, unused.
        feeds[small.inputs[0]] = rng.integers(0, 256, shape, dtype=np.uint8)
        fp32.add_input(small.inputs[0], shape, np.uint8)
        int8.add_input(fp32.inputs[0], shape, np.float32)
    return [to_bytes(fp32), to_bytes(int8)], feeds


def _keep_fast(g: Graph, form: Form, grids: Mapping[Value, Grid], kept: list[Layer],
               fp32: bytes, feeds: Mapping[str, np.ndarray], rounds: int, dynamic: bool,
               notes: list[str]) -> list[Layer]:
    """Return the layers whose int8 form is faster than fp32 on this CPU, each on its own
    (in topological order, so that a layer knows whether its input comes from an int8 layer),
    then all together."""
    from graphc.compress.latency import measure
    from graphc.onnxio.export import to_bytes

    candidates = {la.node for la in kept}
    fast: list[Layer] = []
    for layer in kept:
        points = dict.fromkeys(la.out_point for la in fast if la.out_point is not None)
        u8_in = not dynamic and grid_source(g, g.in_values(layer.node)[0], points) in points
        u8_out = (not dynamic and layer.out_point is not None
                  and _only_read_by(g, layer.out_point, candidates))
        models, layer_feeds = _layer_models(g, layer, form, grids, u8_in, u8_out)
        t = measure(models, layer_feeds, rounds=rounds)[1]
        where = f"{'uint8' if u8_in else 'float'} in, {'uint8' if u8_out else 'float'} out"
        if t.ratio_high < LAYER_MARGIN:
            fast.append(layer)
            notes.append(f"{layer.node:<12} int8: {t.ratio:.2f}x the fp32 layer's time on this "
                         f"CPU ({where})")
        else:
            notes.append(f"{layer.node:<12} fp32: {t.ratio:.2f}x fp32 time in int8 on this CPU "
                         f"({where})")
    if fast:
        whole = measure([fp32, to_bytes(form(g, fast, grids))], feeds, rounds=rounds)[1]
        if whole.ratio_high >= 1.0:
            notes.append(f"all layers fp32: the int8 model took {whole.ratio:.2f}x fp32 "
                         "time on this CPU")
            return []
    return fast


def quantize_int8(g: Graph, *, calibration: Any = None, method: str = "minmax",
                  percentile: float = 99.99, per_channel: bool = True, prefer: str = "speed",
                  weight_range: str = "auto", max_error: float = 0.05,
                  fp32_layers: Sequence[str] = (), format: str = "qdq", dynamic: bool = False,
                  rounds: int = 15, report: PassReport | None = None) -> Graph:
    """Return ``g`` with its Conv, Gemm and MatMul layers in int8 where that is accurate
    (and, with ``prefer="speed"``, faster on this CPU); ``calibration`` is the input data,
    ``format`` "qdq" or "qoperator", ``dynamic`` quantizes Gemm/MatMul inputs on every call."""
    from graphc.compress.latency import cpu_info
    from graphc.onnxio.export import to_bytes

    encoded = sparse.encoded_weights(g)
    g = sparse.decode(g, encoded) if encoded else g
    trained = any(g.op(n) == "FakeQuantizeLinear" for n in g.op_nodes())
    _check_options(method, prefer, weight_range, format, max_error, dynamic, calibration,
                   trained)
    notes = report.notes if report is not None else []
    if weight_range == "auto":
        weight_range = "full" if cpu_info().vnni else "reduced"
    qmax = 127 if weight_range == "full" else 63
    trained_grids: dict[Value, Grid] = {}
    trained_scales: dict[str, np.ndarray] = {}
    # The junctions on uint8: always after calibration, after QAT where it simulated them.
    with_junctions = not trained or simulates_junctions(g)
    if trained:
        # A QAT graph: its fake quantization says the grids; write them, do not recalibrate.
        g, trained_grids, trained_scales = fake_quant_grids(g)
        if not per_channel and any(np.size(s) > 1 for s in trained_scales.values()):
            raise UsageError("--per-tensor does not apply to a model trained per channel",
                             where="--per-tensor", expected="the per-channel weight scales "
                             "its quantization-aware training learned on", got="--per-tensor")
        qmax = 127  # the weights stay where training put them (within the int8 grid)
    candidates = find_layers(g, report)
    unknown_layers = [n for n in fp32_layers if n not in {la.node for la in candidates}]
    if unknown_layers:
        raise unknown("layer", unknown_layers[0], [la.node for la in candidates],
                      cls=UsageError, where="--fp32-layers")
    layers = [la for la in candidates if la.node not in fp32_layers]
    for name in fp32_layers:
        if report is not None:
            report.refuse(name, "kept fp32 (fp32_layers)")
    if dynamic:
        for layer in (la for la in layers if g.op(la.node) == "Conv"):
            notes.append(f"{layer.node:<12} fp32: dynamic quantization covers Gemm/MatMul")
        layers = [la for la in layers if g.op(la.node) != "Conv"]
    if not layers:
        return _encode_again(g.copy(), encoded)
    batches = calibration_batches(g, calibration) if calibration is not None else []
    weights = (f"weights int8 [-{qmax}, {qmax}] "
               f"{'per channel' if per_channel else 'per tensor'}")
    grids: Mapping[Value, Grid] = {}
    if dynamic:
        notes.append(f"dynamic      activations uint8 on each call's range; {weights}")
    else:
        grids = trained_grids or _grids(g, layers, batches, method, percentile)
        if trained:
            notes.append(f"trained      the grids and weight scales of quantization-aware "
                         f"training; activations uint8, {format} form")
        else:
            samples = len(batches) * g.type_of(Value(g.inputs[0])).shape[0]
            notes.append(f"calibration  {samples} samples, {method}; {weights}, activations "
                         f"uint8, {format} form")
    scales = trained_scales or None

    def form(h: Graph, chosen: Sequence[Layer], on: Mapping[Value, Grid]) -> Graph:
        """``h`` (the graph or a one-layer model) with ``chosen`` in the int8 form asked for,
        on the activation grids ``on``."""
        if dynamic:
            return build_dynamic(h, chosen, per_channel=per_channel, qmax=qmax)
        q = build(h, chosen, on, per_channel=per_channel, qmax=qmax, weight_scales=scales,
                  with_junctions=with_junctions)
        return to_qoperator(q) if format == "qoperator" else q

    fp32 = to_bytes(g)
    kept: list[Layer] = []
    if batches:
        run_fp32 = _runner(fp32)
        reference = [run_fp32(b) for b in batches]
        for layer in layers:
            err = _error(to_bytes(form(g, [layer], grids)), batches, reference)
            if err > max_error:
                notes.append(f"{layer.node:<12} fp32: output error {100 * err:.2f}% with it in "
                             f"int8 > {100 * max_error:g}%")
                continue
            kept.append(layer)
            notes.append(f"{layer.node:<12} int8: output error {100 * err:.2f}%")
    else:
        kept = list(layers)
        notes.append("error        not measured: no calibration data (give --calibrate to "
                     "check each layer's output error)")
    feeds = batches[0] if batches else _random_feeds(g)
    if prefer == "speed" and kept:
        if not batches:
            notes.append(f"latency      on random inputs of the input shape (seed {TIMING_SEED})")
        shape = g.type_of(Value(g.inputs[0])).shape if g.inputs else ()
        notes.append(f"latency      each layer alone, then the model, at batch "
                     f"{shape[0] if shape else 1}; {rounds} interleaved rounds, 1 thread")
        kept = _keep_fast(g, form, grids, kept, fp32, feeds, rounds, dynamic, notes)
    out = _encode_again(form(g, kept, grids), encoded)
    if kept:
        _check_fused(to_bytes(out), feeds, dynamic)
    notes.append(f"quantized    {len(kept)} of {len(layers)} layers")
    if report is not None:
        report.rewrites += len(kept)
    return out

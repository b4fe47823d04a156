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

Then each layer has to earn its int8 form, measured on this machine: one layer at a time, the
model's output error on the calibration data (relative RMS, ``max_error``; in dynamic mode
only when calibration data is given, else the report says it was not measured) and, with
``prefer="speed"``, onnxruntime's latency against fp32 (median of interleaved runs, on the
calibration data, or on seeded random inputs of the model's input shape without it); a layer
that fails either stays fp32 and the report says why, with its numbers. If the model as a whole
is not faster, nothing is quantized. ``prefer="size"`` keeps every layer under the error limit.
Finally the written form is profiled on onnxruntime: a weight DequantizeLinear that executes at
run time, or a MatMulInteger it did not fuse, fails the pass (it would make the model slower).

Weights use ``[-127, 127]``, or ``[-63, 63]`` (``weight_range="reduced"``): CPUs without VNNI
add pairs of uint8 x int8 products in 16 bits with saturation, which with full-range weights
can move outputs by many quantization steps. ``weight_range="auto"`` picks by the CPU flags.

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

from graphc.compress import calibrate
from graphc.compress.calibrate import Grid
from graphc.compress.int8 import Layer, build, find_layers, needed_values
from graphc.compress.int8_forms import build_dynamic, to_qoperator
from graphc.compress.qat import fake_quant_grids
from graphc.errors import GraphcError, UsageError, unknown
from graphc.ir import Graph, Value
from graphc.rewrite import PassReport

PREFER = ("speed", "size")
WEIGHT_RANGES = ("auto", "full", "reduced")
FORMATS = ("qdq", "qoperator")
# The seed of the random inputs that time a dynamic model without calibration data.
TIMING_SEED = 0


def _batches(g: Graph, calibration: Any) -> list[dict[str, np.ndarray]]:
    """Split calibration data (an array for a one-input model, else a mapping from input
    names to arrays with one sample per row) into feeds of the graph's own batch size."""
    if not isinstance(calibration, Mapping):
        if len(g.inputs) != 1:
            raise UsageError("calibration data for a model with several inputs needs names",
                             expected=f"a mapping with {', '.join(g.inputs)}",
                             got="one array")
        calibration = {g.inputs[0]: calibration}
    data = {}
    for name in g.inputs:
        ttype = g.type_of(Value(name))
        if name not in calibration:
            raise UsageError("the calibration data has no values for an input",
                             where=f"input {name!r}", expected=sorted(g.inputs),
                             got=sorted(calibration))
        array = np.asarray(calibration[name], ttype.dtype)
        per_sample = int(np.prod(ttype.shape[1:]))
        if array.shape[1:] != ttype.shape[1:]:
            if array.ndim == 0 or array.size != len(array) * per_sample:
                raise UsageError("the calibration data does not fit the model's input",
                                 where=f"input {name!r}", expected=f"(N, {ttype.shape[1:]})",
                                 got=array.shape)
            array = array.reshape(len(array), *ttype.shape[1:])
        data[name] = array
    count = min(len(a) for a in data.values())
    b = g.type_of(Value(g.inputs[0])).shape[0] if g.inputs else 1
    if count < b:
        raise UsageError("too little calibration data", expected=f"at least {b} samples (one "
                         "batch of the model)", got=count)
    return [{n: a[k:k + b] for n, a in data.items()} for k in range(0, count - b + 1, b)]


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


def _rel_rms(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    num = sum(float(np.sum((np.asarray(a, np.float64) - b) ** 2)) for a, b in zip(got, want,
                                                                                  strict=True))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in want)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def _error(model: bytes, batches: Sequence[Mapping[str, np.ndarray]],
           reference: Sequence[dict[str, np.ndarray]]) -> float:
    """The model's output error: relative RMS per batch, averaged (so that one sample with
    large outputs does not hide the error on all the others)."""
    run = _runner(model)
    errors = [_rel_rms(list(run(feeds).values()), list(ref.values()))
              for feeds, ref in zip(batches, reference, strict=True)]
    return float(np.mean(errors))


def _grids(g: Graph, layers: Sequence[Layer], batches: Sequence[Mapping[str, np.ndarray]],
           method: str, percentile: float) -> dict[Value, Grid]:
    """Measure the range of every value a layer quantizes; return its uint8 grid."""
    ranges = calibrate.measure_ranges(g, batches, needed_values(g, layers), method=method,
                                      percentile=percentile)
    return {v: calibrate.activation_grid(*r) for v, r in ranges.items()}


def _check_options(prefer: str, weight_range: str, format: str, dynamic: bool,
                   calibration: Any, trained: bool) -> None:
    if prefer not in PREFER:
        raise unknown("preference", prefer, PREFER, cls=UsageError, where="--prefer")
    if weight_range not in WEIGHT_RANGES:
        raise unknown("weight range", weight_range, WEIGHT_RANGES, cls=UsageError,
                      where="--weight-range")
    if format not in FORMATS:
        raise unknown("int8 format", format, FORMATS, cls=UsageError, where="--format")
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


def _keep_fast(make: Callable[[Sequence[Layer]], Graph], fp32: bytes, kept: list[Layer],
               single: dict[str, bytes], feeds: Mapping[str, np.ndarray], rounds: int,
               notes: list[str]) -> list[Layer]:
    """Return the layers whose int8 form is faster than fp32 on this CPU, alone and together."""
    from graphc.compress.latency import measure
    from graphc.onnxio.export import to_bytes

    models = [single.get(la.node) or to_bytes(make([la])) for la in kept]
    timings = measure([fp32, *models], feeds, rounds=rounds)
    fast = []
    for layer, t in zip(kept, timings[1:], strict=True):
        # Consistently faster: three rounds in four, not a median won by noise.
        if t.ratio_high < 1.0:
            fast.append(layer)
        else:
            notes.append(f"{layer.node:<12} fp32: {t.ratio:.2f}x fp32 time in int8 on this CPU")
    if fast:
        whole = measure([fp32, to_bytes(make(fast))], feeds, rounds=rounds)[1]
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

    trained = any(g.op(n) == "FakeQuantizeLinear" for n in g.op_nodes())
    _check_options(prefer, weight_range, format, dynamic, calibration, trained)
    notes = report.notes if report is not None else []
    if weight_range == "auto":
        weight_range = "full" if cpu_info().vnni else "reduced"
    qmax = 127 if weight_range == "full" else 63
    trained_grids: dict[Value, Grid] = {}
    trained_scales: dict[str, np.ndarray] = {}
    if trained:
        # A QAT graph: its fake quantization says the grids; write them, do not recalibrate.
        g, trained_grids, trained_scales = fake_quant_grids(g)
        qmax = 127  # the weights stay where training put them (within the int8 grid)
    layers = [la for la in find_layers(g, report) if la.node not in fp32_layers]
    for name in fp32_layers:
        if report is not None:
            report.refuse(name, "kept fp32 (fp32_layers)")
    if dynamic:
        for layer in (la for la in layers if g.op(la.node) == "Conv"):
            notes.append(f"{layer.node:<12} fp32: dynamic quantization covers Gemm/MatMul")
        layers = [la for la in layers if g.op(la.node) != "Conv"]
    if not layers:
        return g.copy()
    batches = _batches(g, calibration) if calibration is not None else []
    weights = (f"weights int8 [-{qmax}, {qmax}] "
               f"{'per channel' if per_channel else 'per tensor'}")
    if dynamic:
        def make(chosen: Sequence[Layer]) -> Graph:
            return build_dynamic(g, chosen, per_channel=per_channel, qmax=qmax)

        notes.append(f"dynamic      activations uint8 on each call's range; {weights}")
    else:
        grids = trained_grids or _grids(g, layers, batches, method, percentile)
        scales = trained_scales or None

        def make(chosen: Sequence[Layer]) -> Graph:
            h = build(g, chosen, grids, per_channel=per_channel, qmax=qmax, weight_scales=scales)
            return to_qoperator(h) if format == "qoperator" else h

        if trained:
            notes.append(f"trained      the grids and weight scales of quantization-aware "
                         f"training; activations uint8, {format} form")
        else:
            samples = len(batches) * g.type_of(Value(g.inputs[0])).shape[0]
            notes.append(f"calibration  {samples} samples, {method}; {weights}, activations "
                         f"uint8, {format} form")
    fp32 = to_bytes(g)
    kept: list[Layer] = []
    single: dict[str, bytes] = {}
    if batches:
        run_fp32 = _runner(fp32)
        reference = [run_fp32(b) for b in batches]
        for layer in layers:
            model = to_bytes(make([layer]))
            err = _error(model, batches, reference)
            if err > max_error:
                notes.append(f"{layer.node:<12} fp32: output error {100 * err:.2f}% with it in "
                             f"int8 > {100 * max_error:g}%")
                continue
            kept.append(layer)
            single[layer.node] = model
            notes.append(f"{layer.node:<12} int8: output error {100 * err:.2f}%")
    else:
        kept = list(layers)
        notes.append("error        not measured: no calibration data (give --calibrate to "
                     "check each layer's output error)")
    feeds = batches[0] if batches else _random_feeds(g)
    if prefer == "speed" and kept:
        if not batches:
            notes.append(f"latency      on random inputs of the input shape (seed {TIMING_SEED})")
        kept = _keep_fast(make, fp32, kept, single, feeds, rounds, notes)
    out = make(kept)
    if kept:
        _check_fused(to_bytes(out), feeds, dynamic)
    notes.append(f"quantized    {len(kept)} of {len(layers)} layers")
    if report is not None:
        report.rewrites += len(kept)
    return out

"""Quantize Conv, Gemm and MatMul layers to int8 (static, post-training), only where it pays.

Each quantized layer computes on the int8 grids ``x = s * (q - z)`` (see graphc.compress.
calibrate): its input activation is uint8 with a calibrated scale and zero point, its weight
int8 symmetric per output channel (``s_w[o] = max|W[o]| / qmax``, z = 0), its bias int32 with
scale ``s_x * s_w[o]``, so that the int32 accumulator ``sum q_x q_w + q_b`` times ``s_x s_w[o]``
is the layer's output. The graph says all of it in ordinary ops, in the QDQ form onnxruntime
fuses into its int8 kernels:

- input:  ``DequantizeLinear(QuantizeLinear(x, s_x, z_x), s_x, z_x)`` (shared by the layers
  that read x);
- weight: ``DequantizeLinear(W_int8, s_w, 0, axis)``; bias ``DequantizeLinear(b_int32,
  s_x * s_w, 0)`` inside the Conv or Gemm (never a separate float Add);
- a Conv's output (after its ReLU when the ReLU is its only user) passes through a
  QuantizeLinear / DequantizeLinear pair: without it onnxruntime cannot fuse the Conv and
  dequantizes the weight on every call. MaxPool, Flatten and Reshape pass a grid on unchanged.

Then each layer has to earn its int8 form, measured on this machine: one layer at a time,
the model's output error on the calibration data (relative RMS, ``max_error``) and, with
``prefer="speed"``, onnxruntime's latency against fp32 (median of interleaved runs); a layer
that fails either stays fp32 and the report says why, with its numbers. If the model as a whole
is not faster, nothing is quantized. ``prefer="size"`` keeps every layer under the error limit.
Finally the written form is profiled on onnxruntime: a weight DequantizeLinear that executes
at run time fails the pass (it would make the model slower).

Weights use ``[-127, 127]``, or ``[-63, 63]`` (``weight_range="reduced"``): CPUs without VNNI
add pairs of uint8 x int8 products in 16 bits with saturation, which with full-range weights
can move outputs by many quantization steps. ``weight_range="auto"`` picks by the CPU flags.

Refuses (the layer stays fp32): weights or bias not constant, non-float32 layers, Gemm with
transA, alpha or beta not 1 or a bias that is not per output column, a MatMul whose weight is
not 2-D, a Conv whose output is a graph output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graphc.compress import calibrate
from graphc.compress.int8 import Layer, build, find_layers, needed_values
from graphc.errors import GraphcError, UsageError, unknown
from graphc.ir import Graph, Value
from graphc.rewrite import PassReport

PREFER = ("speed", "size")
WEIGHT_RANGES = ("auto", "full", "reduced")


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


def quantize_int8(g: Graph, *, calibration: Any = None, method: str = "minmax",
                  percentile: float = 99.99, per_channel: bool = True, prefer: str = "speed",
                  weight_range: str = "auto", max_error: float = 0.05,
                  fp32_layers: Sequence[str] = (), rounds: int = 15,
                  report: PassReport | None = None) -> Graph:
    """Return ``g`` with its Conv, Gemm and MatMul layers in int8 where that is accurate
    (and, with ``prefer="speed"``, faster on this CPU); ``calibration`` is the input data."""
    from graphc.compress.latency import cpu_info, measure, runtime_weight_dequantize
    from graphc.onnxio.export import to_bytes

    if prefer not in PREFER:
        raise unknown("preference", prefer, PREFER, cls=UsageError, where="--prefer")
    if weight_range not in WEIGHT_RANGES:
        raise unknown("weight range", weight_range, WEIGHT_RANGES, cls=UsageError,
                      where="--weight-range")
    if calibration is None:
        raise UsageError("quantize-int8 needs calibration data", expected="--calibrate digits "
                         "or --calibrate FILE.npz", got="none",
                         hint="Activation ranges are measured on real inputs.")
    notes = report.notes if report is not None else []
    if weight_range == "auto":
        weight_range = "full" if cpu_info().vnni else "reduced"
    qmax = 127 if weight_range == "full" else 63
    layers = [la for la in find_layers(g, report) if la.node not in fp32_layers]
    for name in fp32_layers:
        if report is not None:
            report.refuse(name, "kept fp32 (fp32_layers)")
    if not layers:
        return g.copy()
    batches = _batches(g, calibration)
    values = needed_values(g, layers)
    probe = g.copy()
    probe.outputs = list(values) + list(g.outputs)
    names = probe.output_names()[:len(values)]
    run_probe = _runner(to_bytes(probe), names)
    ranges = calibrate.collect_ranges(run_probe, batches, names, method=method,
                                      percentile=percentile)
    grids = {v: calibrate.activation_grid(*ranges[n]) for v, n in zip(values, names, strict=True)}
    fp32 = to_bytes(g)
    reference = [_runner(fp32)(b) for b in batches]
    notes.append(f"calibration  {len(batches) * g.type_of(Value(g.inputs[0])).shape[0]} samples, "
                 f"{method}; weights int8 [-{qmax}, {qmax}] "
                 f"{'per channel' if per_channel else 'per tensor'}, activations uint8")

    kept: list[Layer] = []
    single: dict[str, bytes] = {}
    for layer in layers:
        model = to_bytes(build(g, [layer], grids, per_channel=per_channel, qmax=qmax))
        err = _error(model, batches, reference)
        if err > max_error:
            notes.append(f"{layer.node:<12} fp32: output error {100 * err:.2f}% with it in int8 "
                         f"> {100 * max_error:g}%")
            continue
        kept.append(layer)
        single[layer.node] = model
        notes.append(f"{layer.node:<12} int8: output error {100 * err:.2f}%")
    feeds = batches[0]
    if prefer == "speed" and kept:
        timings = measure([fp32, *single.values()], feeds, rounds=rounds)
        fast = []
        for layer, t in zip(kept, timings[1:], strict=True):
            # Consistently faster: three rounds in four, not a median won by noise.
            if t.ratio_high < 1.0:
                fast.append(layer)
            else:
                notes.append(f"{layer.node:<12} fp32: {t.ratio:.2f}x fp32 time in int8 on this CPU")
        kept = fast
        if kept:
            model = to_bytes(build(g, kept, grids, per_channel=per_channel, qmax=qmax))
            whole = measure([fp32, model], feeds, rounds=rounds)[1]
            if whole.ratio_high >= 1.0:
                notes.append(f"all layers fp32: the int8 model took {whole.ratio:.2f}x fp32 "
                             "time on this CPU")
                kept = []
    out = build(g, kept, grids, per_channel=per_channel, qmax=qmax)
    if kept:
        slow = runtime_weight_dequantize(to_bytes(out), feeds)
        if slow:
            raise GraphcError("onnxruntime dequantizes weights at run time",
                              where=", ".join(slow), expected="every weight DequantizeLinear "
                              "fused into an int8 kernel", got=f"{len(slow)} run per call",
                              hint="This is a bug in quantize-int8's patterns; use --fp32-layers "
                                   "for the layers named.")
    notes.append(f"quantized    {len(kept)} of {len(layers)} layers")
    if report is not None:
        report.rewrites += len(kept)
    return out

"""Store binary layers 1 bit per weight and lower them to exact, fast onnxruntime forms.

A binary layer is a Conv, Gemm or MatMul whose constant weight holds, per output channel c,
only ``+a_c`` and ``-a_c`` (``a_c > 0``): ``W = alpha * sign(W_latent)``, ``alpha_c =
mean|W_latent_c|`` (XNOR-Net), recognized by value after the inference pipeline folded it
(graphc.compress.binary). Each one is stored as its signs, 1 bit per weight, plus alpha: the
signs of all of them in one packed constant with one shared unpacking, each layer's a part of
one Split and a Reshape of it (graphc.compress.binary.SignTable), all folded by onnxruntime at
session creation; per-channel constants (alpha, thresholds) in the smallest dtype that holds
them exactly, Cast at load. The nodes the pass adds are named after the layer's tag ``b<k>``,
the k-th Conv / Gemm / MatMul of the graph (``b2.w``: its weight, ``b2.a``: alpha, ``b2.t``:
thresholds, ``b2.q``: its integer op), shown in the notes: in a small model the names are
most of the bytes that are not weights. Lowered to one of (``form`` in the notes):

- ``weights``: ``W = signs * alpha`` folded at load, the layer unchanged: the same outputs bit
  for bit, at fp32 speed, from a file ~1/32 the size;
- ``integer`` (binary activations: the layer's input is a BinarySign output): a Conv whose
  output only a BinarySign reads, through an optional BatchNormalization and MaxPool / Flatten
  / Reshape, becomes a QLinearConv on uint8 codes of the +-1 activations with int8 +-1
  weights, the BatchNormalization and sign folded into an integer threshold in its int32 bias,
  its codes read by the next binary layer; a Gemm or MatMul becomes MatMulInteger on the codes,
  then ``alpha * acc + b`` (or the threshold, when a sign reads it). Exact integer sums: the
  outputs equal the float graph's except where float32 rounding decides a sign (the notes
  count the channels whose threshold is that close).

Choosing (``prefer``): ``"speed"`` builds the model with every possible integer form and the
one with weights forms only and keeps the one onnxruntime runs faster in this run (both are
exact; the notes give both ratios to the fp32 model, measured with
graphc.compress.latency.measure, one thread, the graph's batch); ``"integer"`` takes the
integer forms wherever they apply; ``"weights"`` never does.

``force=True`` binarizes first, post-training: the chosen layers' weights (``layers``, default
every layer but the first and the last in topological order) become ``alpha * sign(W)``, which
changes the outputs; the notes give the output error (relative RMS on seeded N(0, 1) inputs,
interpreter).

Leaves alone (shown with -v): a layer whose weight is not binary, not a float32 constant, or
already stored as packed signs (so the pass is idempotent). Refuses (UsageError): a name in
``layers`` that is not a Conv, Gemm or MatMul with a constant weight (the message lists the
known ones); an unknown ``prefer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc.compress import binary
from graphc.compress.int8 import relative_rms
from graphc.errors import UsageError, unknown
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.onnxio.export import to_bytes
from graphc.rewrite import PassReport, keep_output_names

PREFER = ("speed", "integer", "weights")
# The seed of the inputs that measure force mode's output error and time the forms.
SEED = 0


def _feeds(g: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    feeds = {}
    for name in g.inputs:
        t = g.type_of(Value(name))
        feeds[name] = rng.standard_normal(t.shape).astype(t.dtype) \
            if np.issubdtype(t.dtype, np.floating) else np.zeros(t.shape, t.dtype)
    return feeds


def _layers(g: Graph) -> tuple[list[binary.Layer], dict[str, str]]:
    found, why = [], {}
    for node in g.op_nodes():
        if g.op(node) not in binary.LAYER_OPS:
            continue
        layer, reason = binary.layer_of(g, node)
        if layer is None:
            why[node] = reason
        else:
            found.append(layer)
    return found, why


def _is_stored(g: Graph, node: str) -> bool:
    """Whether ``node``'s weight is already the stored signs times alpha of this pass."""
    values = g.in_values(node)
    w = values[1] if len(values) > 1 else None
    return w is not None and binary.is_stored(g, w)


def _rename_bias(g: Graph, node: str, name: str) -> None:
    """Name ``node``'s constant bias ``name`` (in place) when the layer is its only reader: it
    is stored with the layer's other constants."""
    values = g.in_values(node)
    bias = values[2] if len(values) > 2 else None
    if bias is None or g.op(bias.node) != CONST or bias in g.outputs or \
            {dst for dst, _ in g.users(bias)} != {node}:
        return
    g.rename({bias.node: g.fresh_name(name)})


def _lower(g: Graph, chosen: Sequence[binary.Layer], integer: bool, tags: dict[str, str]
           ) -> tuple[Graph, dict[str, binary.Lowered], dict[str, str]]:
    """Return ``g`` with each of ``chosen`` stored and lowered (integer forms where possible
    when ``integer``; the new nodes named after the layer's tag), each layer's result, and why
    a layer took the weights form."""
    h = g.copy()
    codes = binary.Codes(h)
    table = binary.SignTable(h)
    done: dict[str, binary.Lowered] = {}
    why: dict[str, str] = {}
    # Decided on g: lowering a layer rewires the signs the next layers read.
    folds = {layer.node: binary.sign_fold(g, layer.node) for layer in chosen}
    for layer in chosen:
        tag = tags[layer.node]
        _rename_bias(h, layer.node, f"{tag}.c")
        x = g.in_values(layer.node)[0]
        attrs = g.attrs(layer.node)
        reason = ""
        if not integer:
            reason = "weights form chosen"
        elif not binary.binary_input(g, x):
            reason = "its input is not a BinarySign output"
        elif layer.op == "Gemm" and (attrs.get("alpha", 1.0) != 1.0 or
                                     attrs.get("beta", 1.0) != 1.0):
            reason = "Gemm with alpha or beta not 1"
        fold = folds[layer.node] if not reason else None
        if not reason and layer.op == "Conv" and fold is None:
            reason = "its output is not read by a BinarySign alone (a float conv output " \
                     "would need ConvInteger, which onnxruntime runs slower than fp32)"
        if reason:
            w = np.asarray(h.const_value(Value(layer.weight)))
            after = binary.store_weights(h, layer, table, tag)
            done[layer.node] = binary.Lowered("weights", w.nbytes, after)
            why[layer.node] = reason
        elif layer.op == "Conv":
            done[layer.node] = binary.lower_integer_conv(h, layer, fold, codes, table, tag)
        else:
            done[layer.node] = binary.lower_integer_fc(h, layer, fold, codes, table, tag)
    table.finish()
    h.remove_dead()
    keep_output_names(h, g.output_names())
    h.verify()
    return h, done, why


def binarize(g: Graph, *, force: bool = False, layers: Sequence[str] | None = None,
             prefer: str = "speed", report: PassReport | None = None) -> Graph:
    """Return ``g`` with its binary layers (``layers``: those nodes only) stored 1 bit per
    weight and lowered exactly; with ``force``, binarize the chosen (default: inner) layers'
    weights first.

    >>> from graphc.models import load
    >>> from graphc.pipeline import resolve, run_pipeline
    >>> g, _ = run_pipeline(load("cnn").build(), resolve(pipeline="inference"))
    >>> h = binarize(g, force=True, prefer="weights")
    >>> [h.op(n) for n in ("b2.w", "b3.w")]  # the weights of block2.conv and block3.conv
    ['Mul', 'Mul']
    """
    if prefer not in PREFER:
        raise unknown("preference", str(prefer), PREFER, cls=UsageError, where="prefer")
    notes = report.notes if report is not None else []
    found, not_layers = _layers(g)
    by_node = {layer.node: layer for layer in found}
    if layers is not None:
        for name in layers:
            if name not in by_node:
                raise unknown("layer", str(name), sorted(by_node), cls=UsageError,
                              where="layers")
        wanted = [by_node[n] for n in by_node if n in set(layers)]
    elif force:
        wanted = found[1:-1]
    else:
        wanted = list(found)
    for node, reason in not_layers.items():
        if _is_stored(g, node):
            reason = "already stored as packed signs"
        if report is not None:
            report.refuse(node, f"binarize: {reason}")
    source = g
    if force and wanted:
        source = g.copy()
        for layer in wanted:
            w = np.asarray(g.const_value(Value(layer.weight)))
            array = binary.binarized(w, layer.axis)
            array.flags.writeable = False
            source.nx.nodes[layer.weight]["value"] = array
        feeds = _feeds(g)
        error = relative_rms(list(run(source, feeds).values()), list(run(g, feeds).values()))
        notes.append(f"{'force':<14} {len(wanted)} layer(s) binarized post-training "
                     f"(alpha * sign(W)): output error {error:.3g} (relative RMS, seeded "
                     "N(0, 1) inputs)")
    chosen = []
    for layer in wanted:
        w = np.asarray(source.const_value(Value(layer.weight)))
        if binary.binary_parts(w, layer.axis) is None:
            rows = np.moveaxis(w, layer.axis, 0).reshape(w.shape[layer.axis], -1)
            worst = max(len(np.unique(np.abs(r))) for r in rows)
            reason = f"weights not binary: a channel holds {worst} distinct magnitudes " \
                     "(expected +a_c and -a_c only; force=True binarizes)"
            notes.append(f"{layer.node:<14} left fp32: {reason}")
            if report is not None:
                report.refuse(layer.node, f"binarize: {reason}")
            continue
        chosen.append(layer)
    if not chosen:
        notes.append(f"{'total':<14} no binary layer to store")
        return source.copy() if source is g else source
    # b<k>: the k-th Conv / Gemm / MatMul of the graph (short names: they are most of the
    # bytes of a small binary file that are not weights).
    tags = {layer.node: f"b{k}" for k, layer in enumerate(found, 1)}
    h, done, why = _lower(source, chosen, integer=prefer != "weights", tags=tags)
    if prefer == "speed" and any(d.form == "integer" for d in done.values()):
        plain, plain_done, plain_why = _lower(source, chosen, integer=False, tags=tags)
        ratios = binary.time_forms({"fp32": source, "weights": plain, "integer": h},
                                   _feeds(source))
        from graphc.compress.latency import cpu_info

        notes.append(f"{'speed':<14} time / fp32 on onnxruntime (1 thread): weights forms "
                     f"{ratios['weights']:.2f}x, integer forms {ratios['integer']:.2f}x; "
                     f"{cpu_info().describe()}")
        if ratios["weights"] < ratios["integer"]:
            h, done = plain, plain_done
            why = {n: "the integer forms ran slower here" if n not in plain_why or
                   plain_why[n] == "weights form chosen" else plain_why[n] for n in plain_done}
    for layer in chosen:
        d = done[layer.node]
        text = f"{layer.node:<14} {d.form}: {d.before:,} -> {d.after:,} bytes, " \
               f"nodes {tags[layer.node]}.*"
        if layer.node in why and d.form == "weights":
            text += f" ({why[layer.node]})"
            if report is not None:
                report.refuse(layer.node, f"binarize: weights form: {why[layer.node]}")
        if d.close:
            text += f"; {d.close} channel(s) with a threshold within float32 rounding"
        notes.append(text)
    before, after = len(to_bytes(g)), len(to_bytes(h))
    notes.append(f"{'total':<14} {len(chosen)} binary layer(s); ONNX file {before:,} -> "
                 f"{after:,} bytes ({after / before:.3f}x)")
    if report is not None:
        report.rewrites += len(chosen)
    return h

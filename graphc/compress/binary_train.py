"""The training form of a binary network (XNOR-Net): binary weights, optionally binary
activations, trained through the straight-through estimator on latent fp32 weights.

``binary_graph`` rewrites a float model so that each chosen Conv, Gemm or MatMul reads

    W_b = BinarySign(W) * alpha,   alpha = ReduceMean(|W|, every axis but the output axis)

instead of its trainable weight W (Rastegari et al. 2016): ``alpha_c = mean|W_c|`` per output
channel, ``sign(0) = +1``. W stays the parameter the optimizer updates (the latent weight); the
forward pass only ever sees ``+-alpha_c``, and the gradient reaches W through BinarySign's
straight-through estimator ``dy * (|W| <= 1)`` and through alpha. The layers kept in fp32
(``keep_fp32``) are, by default, the first and the last in topological order, whose inputs
(the image) and outputs (the logits) are the most sensitive to binarization.

With ``mode="all"`` the activations between layers are binary too: every activation (ReLU,
tanh, ...) that produces the input of a binarized layer, or that a binarized layer's output
reaches through BatchNormalization, is replaced by BinarySign of its own input (``sign(ReLU(x))``
would be +1 everywhere); the search passes through MaxPool, Flatten, Reshape, Dropout and
Identity, which keep values in {-1, +1}. Where a binarized layer's input has no such activation
(a residual sum, say), a BinarySign is put in front of the layer; a graph input (the image)
stays float.

After the inference pipeline folds the constants (and BatchNormalization), each binarized
weight is a constant holding only ``+a_c`` and ``-a_c`` per channel, which the binarize pass
recognizes and stores 1 bit per weight; with binary activations a binarized Conv followed by
BatchNormalization and a BinarySign (with a MaxPool on either side of the sign) is the pattern
of its integer form (QLinearConv with the sign folded into a threshold).

Refuses (UsageError): an unknown mode, a name in ``keep_fp32`` that is not a layer (the message
lists them), a graph with no layer left to binarize, and weights that are not trainable
constants (a QAT graph's weights are fake-quantized: binary training replaces quantization).

>>> from graphc.models import load
>>> g = binary_graph(load("cnn").build(), mode="all")
>>> [g.op(n) for n in g.op_nodes() if g.op(n) in ("BinarySign", "Relu")]
['BinarySign', 'BinarySign', 'BinarySign', 'BinarySign', 'BinarySign']
>>> binary_layers(g)
['block2.conv', 'block3.conv']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.errors import UsageError, unknown
from graphc.ir import CONST, INPUT, Graph, Value

MODES = ("weights", "all")
LAYER_OPS = ("Conv", "Gemm", "MatMul")
POSITIONS = ("first", "last")
DEFAULT_KEEP = POSITIONS
# Activations a binary network replaces by the sign of their input.
ACTIVATIONS = ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Tanh", "Sigmoid",
               "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Clip", "Heaviside")
# Ops between an activation and the next layer that keep values in {-1, +1} (Dropout is the
# identity at inference).
PASS_OPS = ("MaxPool", "Flatten", "Reshape", "Dropout", "Identity")
# Ops between a layer and its activation: the activation's input is a function of the layer's
# output channel by channel.
AFTER_LAYER = ("BatchNormalization", "Add")
SIGN = "BinarySign"


def weight_axis(g: Graph, node: str) -> int:
    """Return the axis of ``node``'s weight that holds its output channels: 0 for Conv and
    Gemm with transB=1, 1 for Gemm with transB=0 and MatMul (whose weight is (K, N))."""
    if g.op(node) == "Conv":
        return 0
    return 0 if g.op(node) == "Gemm" and g.attrs(node).get("transB", 0) else 1


def find_layers(g: Graph) -> list[str]:
    """Return the Conv, Gemm and MatMul nodes whose weight (input 1) is a trainable constant,
    in topological order.

    >>> from graphc.models import load
    >>> find_layers(load("cnn").build())
    ['block1.conv', 'block2.conv', 'block3.conv', 'logits']
    """
    found = []
    for node in g.op_nodes():
        if g.op(node) not in LAYER_OPS:
            continue
        values = g.in_values(node)
        w = values[1] if len(values) > 1 else None
        if w is not None and g.op(w.node) == CONST and g.nx.nodes[w.node].get("trainable") \
                and len(g.type_of(w).shape) >= 2:
            found.append(node)
    return found


def parse_keep(text: str) -> tuple[str, ...]:
    """Parse ``--keep-fp32``: ``first,last``, ``none`` or layer names, comma-separated.

    >>> parse_keep("first, fc"), parse_keep("none")
    (('first', 'fc'), ())
    """
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if items == ("none",):
        return ()
    if not items or "none" in items:
        raise UsageError(f"cannot read --keep-fp32 {text!r}", where="--keep-fp32",
                         expected="first,last (default), none, or layer names separated by "
                         "commas", got=repr(text))
    return items


def kept_layers(g: Graph, keep_fp32: Sequence[str] = DEFAULT_KEEP) -> list[str]:
    """Return the layers of ``g`` that ``keep_fp32`` keeps in fp32 (``first``, ``last`` or
    layer names), in topological order; an unknown name is a UsageError listing the layers."""
    layers = find_layers(g)
    if isinstance(keep_fp32, str):
        keep_fp32 = parse_keep(keep_fp32)
    chosen = set()
    for name in keep_fp32:
        if name == "first" and layers:
            chosen.add(layers[0])
        elif name == "last" and layers:
            chosen.add(layers[-1])
        elif name in layers:
            chosen.add(name)
        else:
            raise unknown("layer", name, [*POSITIONS, *layers], cls=UsageError,
                          where="--keep-fp32")
    return [n for n in layers if n in chosen]


def binary_layers(g: Graph) -> list[str]:
    """Return the layers of a training form whose weight is ``BinarySign(W) * alpha``."""
    found = []
    for node in g.op_nodes():
        if g.op(node) not in LAYER_OPS:
            continue
        values = g.in_values(node)
        w = values[1] if len(values) > 1 else None
        if w is not None and g.op(w.node) == "Mul" and \
                g.op(g.in_values(w.node)[0].node) == SIGN:
            found.append(node)
    return found


def _binary_weight(g: Graph, node: str) -> None:
    """Make ``node`` read ``BinarySign(W) * ReduceMean(Abs(W))`` instead of its weight W."""
    w = g.in_values(node)[1]
    rank = len(g.type_of(w).shape)
    axis = weight_axis(g, node)
    axes = g.add_const(f"{w.node}.alpha_axes",
                       np.array([k for k in range(rank) if k != axis], np.int64))
    magnitude = g.add_node("Abs", [w], name=f"{w.node}.abs")
    alpha = g.add_node("ReduceMean", [magnitude, axes], {"keepdims": 1},
                       name=f"{w.node}.alpha")
    sign = g.add_node(SIGN, [w], name=f"{w.node}.sign")
    binary = g.add_node("Mul", [sign, alpha], name=f"{w.node}.binary")
    _set_input(g, node, 1, binary)


def _set_input(g: Graph, node: str, port: int, value: Value) -> None:
    for src, _, key, d in list(g.nx.in_edges(node, keys=True, data=True)):
        if d["port"] == port:
            g.nx.remove_edge(src, node, key)
    g.nx.add_edge(value.node, node, port=port, out=value.out)


def _source(g: Graph, value: Value) -> Value:
    """Walk back from a layer's input through PASS_OPS; return where the walk stops."""
    while value.out == 0 and g.op(value.node) in PASS_OPS:
        value = g.in_values(value.node)[0]
    return value


def _producer(g: Graph, value: Value) -> str | None:
    """Return the layer whose output reaches ``value`` through AFTER_LAYER and PASS_OPS."""
    while value.out == 0 and g.op(value.node) in (*AFTER_LAYER, *PASS_OPS):
        if g.op(value.node) == "Add":
            ins = [v for v in g.in_values(value.node) if v is not None]
            inner = [v for v in ins if g.op(v.node) != CONST]
            if len(inner) != 1:
                return None  # a sum of two computed values (a residual): no single producer
            value = inner[0]
        else:
            value = g.in_values(value.node)[0]
    return value.node if g.op(value.node) in LAYER_OPS else None


def _sign_name(g: Graph, activation: str) -> str:
    scope, dot, _ = activation.rpartition(".")
    return g.fresh_name(f"{scope}.sign" if dot else f"{activation}_sign")


def _sole_pool(g: Graph, value: Value) -> str | None:
    """Return the MaxPool that alone reads ``value`` (its Indices unused), or None."""
    users = g.users(value)
    if len(users) != 1 or value in g.outputs or users[0][1] != 0:
        return None
    pool = users[0][0]
    if g.op(pool) != "MaxPool" or g.users(Value(pool, 1)):
        return None
    return pool


def _replace_activation(g: Graph, node: str) -> str:
    """Replace activation ``node`` by BinarySign of its first input, moved after the MaxPool
    nodes that alone read it; return the sign's id."""
    x = g.in_values(node)[0]
    g.replace_all_uses(Value(node), x)
    g.nx.remove_node(node)
    last = x
    while (pool := _sole_pool(g, last)) is not None:
        last = Value(pool)
    sign = g.add_node(SIGN, [last], name=_sign_name(g, node))
    g.replace_all_uses(last, sign, keep={sign.node})
    return sign.node


def _binary_activations(g: Graph, binarized: Sequence[str], layers: Sequence[str]) -> None:
    chosen = set(binarized)
    for layer in layers:
        x = g.in_values(layer)[0]
        source = _source(g, x)
        op = g.op(source.node)
        if op in ACTIVATIONS and source.out == 0:
            before = _producer(g, g.in_values(source.node)[0])
            if layer in chosen or before in chosen:
                _replace_activation(g, source.node)
        elif layer in chosen and op not in (INPUT, SIGN, CONST):
            _set_input(g, layer, 0, g.add_node(SIGN, [x], name=f"{layer}.input_sign"))


def binary_graph(g: Graph, mode: str = "weights", keep_fp32: Sequence[str] = DEFAULT_KEEP
                 ) -> Graph:
    """Return the training form of ``g``: every layer but ``keep_fp32``'s reads the binary
    weight ``BinarySign(W) * mean|W|`` (per output channel), and with ``mode="all"`` the
    activations around them are BinarySign (see the module docstring).

    >>> import numpy as np
    >>> from graphc.models import load
    >>> from graphc.pipeline import run_pipeline
    >>> g = binary_graph(load("mlp").build(), keep_fp32=["first"])
    >>> binary_layers(g)
    ['fc2', 'logits']
    >>> w = np.asarray(g.const_value(g.in_values("fc2.weight.sign")[0]))
    >>> folded = run_pipeline(g, ["fold-constants"])[0]
    >>> wb = folded.const_value(folded.in_values("fc2")[1])
    >>> bool(np.allclose(np.abs(wb), np.abs(w).mean(axis=1, keepdims=True), rtol=1e-6))
    True
    >>> len(np.unique(np.abs(wb[0])))  # one magnitude per output channel
    1
    """
    if mode not in MODES:
        raise unknown("binary mode", str(mode), MODES, cls=UsageError, where="--binary")
    for node in g.op_nodes():
        if g.op(node) == "FakeQuantizeLinear":
            raise UsageError("a quantization-aware graph cannot be trained binary",
                             where=g.format_node(node), expected="a float model",
                             got="fake quantization", hint="Binary weights replace int8 ones: "
                             "drop --qat.")
    layers = find_layers(g)
    kept = set(kept_layers(g, keep_fp32))
    binarized = [n for n in layers if n not in kept]
    if not binarized:
        raise UsageError(f"{g.name} has no layer left to binarize", where="--keep-fp32",
                         expected="a Conv, Gemm or MatMul with a trainable weight outside "
                         "--keep-fp32", got=f"layers {', '.join(layers) or 'none'}, all kept",
                         hint="Keep fewer layers in fp32 (--keep-fp32 none binarizes all).")
    h = g.copy()
    for node in binarized:
        _binary_weight(h, node)
    if mode == "all":
        _binary_activations(h, binarized, layers)
    h.verify()
    return h


def binary_record(g: Graph, mode: str, keep_fp32: Sequence[str] = DEFAULT_KEEP) -> dict[str, Any]:
    """Return the checkpoint record of ``binary_graph(g, mode, keep_fp32)``: the mode and the
    layers kept and binarized, by name (``from_record`` rebuilds the same graph).

    >>> from graphc.models import load
    >>> r = binary_record(load("cnn").build(), "all")
    >>> r["mode"], r["keep_fp32"], r["layers"]
    ('all', ['block1.conv', 'logits'], ['block2.conv', 'block3.conv'])
    """
    kept = kept_layers(g, keep_fp32)
    return {"mode": mode, "keep_fp32": kept,
            "layers": [n for n in find_layers(g) if n not in kept]}


def evaluate_weights(g: Graph) -> Graph:
    """Return the training form ``g`` with each binary weight evaluated: the layer reads the
    constant ``BinarySign(W) * alpha`` (computed by the interpreter, bit for bit what the
    training form computes), named as the latent weight W was. The result computes what ``g``
    computes; the inference pipeline can then fold BatchNormalization into the binary weights
    (per-channel factors keep them binary), which it cannot do while they are computed.

    >>> from graphc.models import load
    >>> g = evaluate_weights(binary_graph(load("cnn").build()))
    >>> g.format_node("block2.conv.weight")
    '%block2.conv.weight = Const [param] # (32,16,3,3) f32'
    >>> np.unique(np.abs(g.const_value(g.in_values("block2.conv")[1])[0])).size
    1
    """
    from graphc.interpret import run_node

    h = g.copy()
    for layer in binary_layers(h):
        binary = h.in_values(layer)[1]
        sign, alpha = h.in_values(binary.node)
        latent = h.in_values(sign.node)[0]
        magnitude, axes = h.in_values(alpha.node)
        w = h.const_value(latent)
        if w is None or h.const_value(axes) is None:
            continue
        values = {latent: w, axes: h.const_value(axes)}
        for v in (sign, magnitude, alpha, binary):
            inputs = [values[u] for u in h.in_values(v.node)]
            values[v] = run_node(h, v.node, inputs)[0]
        users = [(dst, port) for dst, port in h.users(binary)]
        h.nx.remove_node(binary.node)
        h.remove_dead()  # the latent weight and its binarization, unless read elsewhere
        new = h.add_const(latent.node, values[binary], trainable=True)
        for dst, port in users:
            h.nx.add_edge(new.node, dst, port=port, out=0)
    h.verify()
    return h


def from_record(g: Graph, data: Any) -> Graph:
    """Rebuild the training form that a checkpoint's ``record`` describes from the float
    model ``g``."""
    layers = find_layers(g)
    missing = [n for n in [*data["keep_fp32"], *data["layers"]] if n not in layers]
    if missing or sorted([*data["keep_fp32"], *data["layers"]]) != sorted(layers):
        raise UsageError("the checkpoint's binary record does not fit the model",
                         expected=f"layers {', '.join(layers)}",
                         got=f"{', '.join([*data['keep_fp32'], *data['layers']])}",
                         hint="Use the model the checkpoint trained.")
    return binary_graph(g, data["mode"], list(data["keep_fp32"]) or ())

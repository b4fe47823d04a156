"""Unstructured pruning: magnitude masks, and pruned weights stored as a bitmask + kept values.

What prune-magnitude and the pruning loop (graphc.compress.prune) share.

Masks. The prunable weights are the stored weight of each Conv, ConvTranspose, Gemm and MatMul
(``prunable``): a trainable constant at the layer's weight port, the integer constant of a
``DequantizeLinear`` there (after quantize-int8), or an encoded weight (below). Biases and
normalization vectors are not weights. ``magnitude_masks(g, s)`` keeps, per layer (or over all
layers together with ``scope="global"``), all but the ``round(s * n)`` entries of smallest
``|w|`` (dequantized for integer weights, so that layers on different scales compare). Ties are
broken by position: of equal magnitudes, the one earlier in the layer (and, globally, in the
earlier layer) goes first. Entries that are already zero always count as removed, so pruning to
50% and then to 90% ends at 90%.

Storage. ONNX has no 1-bit type, and its ``sparse_initializer`` is rejected by onnx's checker.
``encode`` stores a weight ``W`` of ``n`` entries, ``k`` of them nonzero, as

- ``W.mask``: uint8 ``(n // 8, 1)``, the keep bits ``W != 0`` of the first ``8 * (n // 8)``
  entries in row-major order, packed by ``np.packbits`` with bit order "big": entry ``8 i + j``
  is bit ``7 - j`` (the most significant bit first) of byte ``i``;
- ``W.mask_tail``: int32 ``(n % 8,)``, the last ``n % 8`` keep bits unpacked (absent when 8
  divides n);
- ``W.values``: ``(k + 1,)`` in the weight's dtype: a leading 0, then the kept entries in
  row-major order;

and computes it back with ops onnxruntime folds into one initializer when it creates the session
(so the model runs exactly as the dense one; NonZero and ScatterND would not be folded; the
unpacking of the bits is graphc.compress.bits's):

    bits  = Cast(mask, int32) / [128, 64, ..., 1] - 2 * (Cast(mask, int32) / [256, 128, ..., 2])
    keep  = Concat(Reshape(bits, [-1]), mask_tail)           # (n,) of 0 and 1
    index = CumSum(keep) * keep                              # 1..k at kept entries, else 0
    W     = Reshape(Gather(values, index), shape)

The integer divisions truncate, so ``b / 2^(7-j) - 2 * (b / 2^(8-j))`` is bit ``7 - j`` of byte
``b``. The leading 0 of ``values`` makes Gather write the zeros itself. The Reshape carries the
weight's name. ``decoded_value`` recognizes the pattern and gives the dense array; an integer
weight is stored the same way and the ``DequantizeLinear`` keeps reading the decoded integers,
which onnxruntime then fuses into its int8 kernels as before.

>>> from graphc.models import load
>>> g = load("mlp").build()
>>> masks = magnitude_masks(g, 0.9)
>>> round(float(1 - masks["fc1.weight"].mean()), 3)
0.9
>>> small = encode(apply_masks(g, masks), "fc1.weight")
>>> stored_bytes(small) < stored_bytes(g)
True
>>> bool((decoded_value(small, Value("fc1.weight")) != 0).sum() == masks["fc1.weight"].sum())
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from graphc.compress import bits
from graphc.errors import GraphcError, UsageError, unknown
from graphc.interpret import run_node
from graphc.ir import CONST, Graph, Value
from graphc.rewrite import remove_if_dead

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SCOPES = ("layer", "global")
# The ops of the decode subgraph; decoded_value refuses anything else on the way to the weight.
DECODE_OPS = ("Cast", "Div", "Mul", "Sub", "Reshape", "Concat", "CumSum", "Gather")
# What a decode subgraph adds to an ONNX file besides its mask and values, in bytes: its ten
# or eleven nodes and the headers of its constants (measured on the exported mlp: about 960 per
# weight with names like ``fc1.weight``, the constants all decoders share included). A weight
# is encoded only when its constants and this are smaller than the dense weight.
DECODER_BYTES = 1024


# ----- which weights ------------------------------------------------------------------------


def _stored_input(g: Graph, layer: str) -> Value | None:
    """The value holding ``layer``'s stored weight: its weight input, or the integer input of
    the DequantizeLinear there."""
    values = g.in_values(layer)
    w = values[1] if len(values) > 1 else None
    if w is not None and g.op(w.node) == "DequantizeLinear":
        w = g.in_values(w.node)[0]
    return w


def prunable(g: Graph) -> list[str]:
    """Return the stored weights of the Conv, ConvTranspose, Gemm and MatMul layers: trainable
    constants, integer constants read by a DequantizeLinear, and encoded weights.

    >>> from graphc.models import load
    >>> prunable(load("mlp").build())
    ['fc1.weight', 'fc2.weight', 'fc3.weight']
    """
    names: list[str] = []
    for node in g.op_nodes():
        if g.op(node) not in LAYER_OPS:
            continue
        w = _stored_input(g, node)
        if w is None or w.out != 0 or w.node in names:
            continue
        if g.op(w.node) == CONST:
            # An integer constant here is what a DequantizeLinear reads (_stored_input).
            if g.nx.nodes[w.node].get("trainable") or \
                    np.issubdtype(g.type_of(w).dtype, np.integer):
                names.append(w.node)
        elif decoder_nodes(g, w) is not None:
            names.append(w.node)
    return names


def stored_array(g: Graph, name: str) -> np.ndarray:
    """Return the array weight ``name`` stores: a constant's value or an encoded weight decoded
    (integers for a quantized weight)."""
    value = Value(name)
    array = g.const_value(value) if name in g.nx else None
    if array is None and name in g.nx:
        array = decoded_value(g, value)
    if array is None:
        raise GraphcError(f"{name!r} is not a stored weight", where=name,
                          expected="a constant or an encoded weight",
                          got=g.op(name) if name in g.nx else "no such node")
    return array


def _dequantize_of(g: Graph, name: str) -> str | None:
    users = g.users(Value(name))
    if users and all(g.op(u) == "DequantizeLinear" and p == 0 for u, p in users):
        return users[0][0]
    return None


def _zero_point(g: Graph, dq: str) -> np.ndarray | None:
    values = g.in_values(dq)
    return g.const_value(values[2]) if len(values) > 2 and values[2] is not None else None


def magnitudes(g: Graph, name: str) -> np.ndarray:
    """Return ``|w|`` of weight ``name`` in float64, dequantized when a DequantizeLinear reads
    it (``|(q - z) * s|`` along its axis)."""
    array = stored_array(g, name).astype(np.float64)
    dq = _dequantize_of(g, name)
    if dq is None:
        return np.abs(array)
    values = g.in_values(dq)
    scale = g.const_value(values[1])
    zero = _zero_point(g, dq)
    if scale is None:
        return np.abs(array)
    shape = [1] * array.ndim
    scale = np.asarray(scale, np.float64)
    zero = np.zeros(1) if zero is None else np.asarray(zero, np.float64)
    if scale.ndim == 1 and scale.size > 1:
        axis = g.attrs(dq).get("axis", 1) % array.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero
    return np.abs((array - zero) * scale)


# ----- masks --------------------------------------------------------------------------------


def check_sparsity(sparsity: object, where: str = "sparsity") -> float:
    """Return ``sparsity`` as a float, or raise UsageError unless it is a number in [0, 1]."""
    ok = isinstance(sparsity, (int, float, np.floating, np.integer)) and \
        not isinstance(sparsity, bool) and 0.0 <= float(sparsity) <= 1.0
    if not ok:
        raise UsageError("the sparsity is the fraction of weights to zero", where=where,
                         expected="a number in [0, 1], e.g. 0.9", got=repr(sparsity))
    return float(sparsity)


def check_scope(scope: object, where: str = "scope") -> str:
    """Return ``scope`` or raise UsageError naming the known scopes."""
    if scope not in SCOPES:
        raise unknown("pruning scope", str(scope), SCOPES, where=where, cls=UsageError)
    return str(scope)


def _count(sparsity: float, n: int) -> int:
    """The number of entries to remove: ``sparsity * n`` rounded half up."""
    return int(np.floor(sparsity * n + 0.5))


def magnitude_masks(g: Graph, sparsity: float, *, scope: str = "layer",
                    params: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Return boolean keep-masks that remove the fraction ``sparsity`` of smallest ``|w|``, per
    weight (``scope="layer"``) or over all of them (``"global"``); ``params`` names the weights
    (default ``prunable(g)``).

    >>> import numpy as np
    >>> from graphc.ir import Graph
    >>> g = Graph("t")
    >>> x = g.add_input("x", (1, 4))
    >>> w = g.add_const("w", np.array([[0.5, -0.1], [0.0, 2.0], [0.1, -3.0], [1.0, 0.2]],
    ...                              np.float32), trainable=True)
    >>> g.outputs = [g.add_node("MatMul", [x, w])]
    >>> magnitude_masks(g, 0.5)["w"].astype(int).tolist()
    [[1, 0], [0, 1], [0, 1], [1, 0]]
    """
    sparsity = check_sparsity(sparsity)
    check_scope(scope)
    known = prunable(g)
    names = list(known if params is None else params)
    for name in names:
        if name not in known:
            raise unknown("prunable weight", name, known, cls=UsageError, where="params")
    mags = {name: magnitudes(g, name).reshape(-1) for name in names}
    masks: dict[str, np.ndarray] = {}
    if scope == "layer":
        for name, m in mags.items():
            masks[name] = _keep(m, _count(sparsity, m.size))
    else:
        flat = np.concatenate([m for m in mags.values()]) if mags else np.zeros(0)
        keep = _keep(flat, _count(sparsity, flat.size))
        start = 0
        for name, m in mags.items():
            masks[name] = keep[start:start + m.size]
            start += m.size
    shapes = {name: stored_array(g, name).shape for name in names}
    return {name: mask.reshape(shapes[name]) for name, mask in masks.items()}


def _keep(m: np.ndarray, remove: int) -> np.ndarray:
    """Keep all but the ``remove`` smallest of ``m`` (earlier positions first at ties), and
    never keep a zero."""
    order = np.argsort(m, kind="stable")
    keep = np.ones(m.size, bool)
    keep[order[:remove]] = False
    keep[m == 0] = False
    return keep


def apply_masks(g: Graph, masks: Mapping[str, np.ndarray]) -> Graph:
    """Return a copy of ``g`` with each weight of ``masks`` multiplied by its mask (an integer
    weight gets its zero point, i.e. 0 after DequantizeLinear). An encoded weight comes back as
    a dense constant of its name.

    >>> import numpy as np
    >>> from graphc.models import load
    >>> g = load("mlp").build()
    >>> h = apply_masks(g, {"fc3.weight": np.zeros((10, 64), bool)})
    >>> float(np.abs(h.const_value(Value("fc3.weight"))).sum())
    0.0
    """
    h = g.copy()
    for name, mask in masks.items():
        array = stored_array(h, name)
        mask = np.asarray(mask, bool)
        if mask.shape != array.shape:
            raise UsageError(f"the mask of {name} does not fit the weight", where=name,
                             expected=str(array.shape), got=str(mask.shape))
        fill = np.zeros((), array.dtype)
        dq = _dequantize_of(h, name)
        zero = _zero_point(h, dq) if dq is not None else None
        if zero is not None and np.any(zero != 0):
            fill = np.broadcast_to(_broadcast_zero(h, dq, zero, array.ndim), array.shape)
        _set_dense(h, name, np.where(mask, array, fill).astype(array.dtype))
    return h


def _broadcast_zero(g: Graph, dq: str, zero: np.ndarray, ndim: int) -> np.ndarray:
    if zero.ndim == 1 and zero.size > 1:
        shape = [1] * ndim
        shape[g.attrs(dq).get("axis", 1) % ndim] = -1
        return zero.reshape(shape)
    return zero


def _set_dense(g: Graph, name: str, array: np.ndarray) -> None:
    """Make ``name`` a constant holding ``array`` (replacing an encoded weight's decoder)."""
    if g.op(name) == CONST:
        array = np.array(array)
        array.flags.writeable = False
        g.nx.nodes[name]["value"] = array
        return
    trainable = _values_trainable(g, name)
    users = [(dst, d["port"]) for _, dst, d in g.nx.out_edges(name, data=True)]
    outputs = list(g.outputs)
    preds = list(g.nx.predecessors(name))
    g.nx.remove_node(name)
    for pred in preds:
        remove_if_dead(g, pred)
    const = g.add_const(name, array, trainable=trainable)
    for dst, port in users:
        g.nx.add_edge(const.node, dst, port=port, out=0)
    g.outputs = [const if v.node == name else v for v in outputs]


def _values_trainable(g: Graph, name: str) -> bool:
    nodes = decoder_nodes(g, Value(name)) or []
    return any(g.nx.nodes[n].get("trainable") for n in nodes if g.op(n) == CONST)


# ----- the encoded form ---------------------------------------------------------------------


def encoded_bytes(mask: np.ndarray, dtype: np.dtype) -> int:
    """Return the bytes a weight with keep-mask ``mask`` takes in the encoded form: its
    constants and ``DECODER_BYTES``."""
    n, kept = mask.size, int(np.count_nonzero(mask))
    return (n // 8 + 4 * (n % 8) + np.dtype(dtype).itemsize * (kept + 1) + 8 * mask.ndim
            + DECODER_BYTES)


def encode(g: Graph, name: str) -> Graph:
    """Return a copy of ``g`` with constant weight ``name`` stored as a bitmask of its nonzero
    entries and their values, decoded in-graph (see the module docstring). The weight keeps its
    name (the decoder's last node) and its consumers.

    >>> import numpy as np
    >>> from graphc.ir import Graph
    >>> g = Graph("t")
    >>> x = g.add_input("x", (1, 5))
    >>> w = g.add_const("w", np.array([[0, 2], [0, 0], [3, 0], [0, 0], [0, 1]], np.float32),
    ...                 trainable=True)
    >>> g.outputs = [g.add_node("MatMul", [x, w], name="y")]
    >>> h = encode(g, "w")
    >>> [h.const_value(Value(f"w.{k}")).tolist() for k in ("mask", "mask_tail", "values")]
    [[[72]], [0, 1], [0.0, 2.0, 3.0, 1.0]]
    >>> decoded_value(h, Value("w")).tolist()
    [[0.0, 2.0], [0.0, 0.0], [3.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    h = g.copy()
    _encode(h, name)
    return h


def _encode(g: Graph, name: str) -> None:
    """Encode constant ``name`` of ``g`` in place."""
    if name not in g.nx or g.op(name) != CONST:
        raise GraphcError(f"{name!r} is not a constant", where=name,
                          expected="a Const weight", got=g.op(name) if name in g.nx else "none")
    array = np.asarray(g.const_value(Value(name)))
    n = array.size
    if n < 8:
        raise GraphcError(f"{name!r} is too small to encode", where=name,
                          expected="at least 8 entries", got=n)
    trainable = bool(g.nx.nodes[name].get("trainable"))
    flat = array.reshape(-1)
    keep = flat != 0
    r = n % 8
    users = [(dst, d["port"]) for _, dst, d in g.nx.out_edges(name, data=True)]
    outputs = list(g.outputs)
    g.nx.remove_node(name)

    packed, tail = bits.pack(keep)
    mask = g.add_const(f"{name}.mask", packed)
    values = g.add_const(f"{name}.values", np.concatenate([np.zeros(1, array.dtype),
                                                           flat[keep]]), trainable=trainable)
    shape = g.add_const(f"{name}.shape", np.array(array.shape, np.int64))
    tail_value = g.add_const(f"{name}.mask_tail", tail) if r else None
    keep_bits = bits.unpack_in_graph(g, mask, tail_value, f"{name}.mask", f"{name}.keep",
                                     f"{name}.keep_all")
    count = g.add_node("CumSum", [keep_bits, bits.shared(g, "bitmask.axis")],
                       name=f"{name}.kept_count")
    index = g.add_node("Mul", [count, keep_bits], name=f"{name}.index")
    dense = g.add_node("Gather", [values, index], {"axis": 0}, name=f"{name}.dense")
    out = g.add_node("Reshape", [dense, shape], name=name)
    for dst, port in users:
        g.nx.add_edge(out.node, dst, port=port, out=0)
    g.outputs = [out if v.node == name else v for v in outputs]


def decoder_nodes(g: Graph, value: Value) -> list[str] | None:
    """Return the nodes of the decode subgraph computing ``value`` (itself included), or
    ``None`` if ``value`` is not an encoded weight:
    ``Reshape(Gather(values, Mul(CumSum(keep, axis), keep)), shape)`` whose every input is
    computed from constants by the decode ops."""
    if value is None or value.out != 0 or value.node not in g.nx or g.op(value.node) != "Reshape":
        return None
    gather = g.in_values(value.node)[0]
    if gather is None or g.op(gather.node) != "Gather" or g.attrs(gather.node).get("axis", 0):
        return None
    values, index = g.in_values(gather.node)
    if g.op(values.node) != CONST or g.op(index.node) != "Mul":
        return None
    a, b = g.in_values(index.node)
    if g.op(a.node) != "CumSum" or g.in_values(a.node)[0] != b:
        return None
    nodes: list[str] = []
    stack = [value.node]
    while stack:
        node = stack.pop()
        if node in nodes:
            continue
        if g.op(node) not in (CONST, *DECODE_OPS):
            return None
        nodes.append(node)
        stack.extend(v.node for v in g.in_values(node) if v is not None)
    return nodes


def decoded_value(g: Graph, value: Value) -> np.ndarray | None:
    """Return the dense array an encoded weight decodes to, or ``None`` if ``value`` is not
    one (a constant is not: use ``g.const_value``)."""
    nodes = decoder_nodes(g, value)
    if nodes is None:
        return None
    arrays: dict[Value, np.ndarray] = {}
    for node in g.topo():
        if node not in nodes:
            continue
        if g.op(node) == CONST:
            arrays[Value(node)] = g.const_value(Value(node))
            continue
        results = run_node(g, node, [None if v is None else arrays[v] for v in g.in_values(node)])
        for k, array in enumerate(results):
            arrays[Value(node, k)] = array
    return arrays[value]


def encoded_weights(g: Graph) -> list[str]:
    """Return the names of the encoded weights of ``g`` (the decoders' last nodes)."""
    return [n for n in g.op_nodes() if g.op(n) == "Reshape"
            and decoder_nodes(g, Value(n)) is not None]


def decode(g: Graph, names: Sequence[str] | None = None) -> Graph:
    """Return a copy of ``g`` with encoded weights ``names`` (default: all) as dense constants
    of the same names."""
    h = g.copy()
    for name in encoded_weights(h) if names is None else names:
        _set_dense(h, name, decoded_value(h, Value(name)))
    return h


def encodable(g: Graph, name: str) -> str | None:
    """Return why constant weight ``name`` cannot be stored in the encoded form, or ``None``:
    it needs at least 8 entries, an integer weight a zero point of 0, and the form must be
    smaller than the dense array."""
    array = np.asarray(g.const_value(Value(name)))
    if array.size < 8:
        return f"{array.size} entries: too small to store as a bitmask"
    dq = _dequantize_of(g, name)
    zero = _zero_point(g, dq) if dq is not None else None
    if np.issubdtype(array.dtype, np.integer) and zero is not None and np.any(zero != 0):
        return "its zero point is not 0 (a stored 0 is not a zero weight)"
    small, dense = encoded_bytes(array != 0, array.dtype), array.nbytes
    if small >= dense:
        zeros = 1 - np.count_nonzero(array) / array.size
        return (f"{100 * zeros:.1f}% zeros: the bitmask form would take {small:,} bytes, "
                f"the dense one {dense:,}")
    return None


def stored_bytes(g: Graph) -> int:
    """Return the bytes of all constants of ``g``: what its ONNX file stores, without the
    nodes.

    >>> from graphc.models import load
    >>> stored_bytes(load("mlp").build())
    68912
    """
    return int(sum(np.asarray(g.const_value(Value(n))).nbytes for n in g.nx
                   if g.op(n) == CONST))

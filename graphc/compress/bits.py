"""Bits packed 8 per byte, and their unpacking by ops onnxruntime folds at session creation.

ONNX has no 1-bit type. A bit vector of ``n`` entries is stored as

- ``packed``: uint8 ``(n // 8, 1)``, the first ``8 * (n // 8)`` bits packed by ``np.packbits``
  with bit order "big": entry ``8 i + j`` is bit ``7 - j`` (the most significant first) of byte
  ``i``;
- ``tail``: int32 ``(n % 8,)``, the last ``n % 8`` bits unpacked (absent when 8 divides n);

and computed back in the graph by

    bits = Cast(packed, int32) / [128, 64, ..., 1] - 2 * (Cast(packed, int32) / [256, ..., 2])
    flat = Concat(Reshape(bits, [-1]), tail)                       # (n,) of 0 and 1

where the integer divisions truncate, so ``b / 2^(7-j) - 2 * (b / 2^(8-j))`` is bit ``7 - j``
of byte ``b``. Every input is a constant, so onnxruntime folds the whole chain into one
initializer when it loads the model (the run costs nothing); BitShift and BitwiseAnd would do
the same but are not in graphc's op set. The constants all unpackings share (``SHARED``) are
stored once per graph. Bitmask-encoded pruned weights (graphc.compress.sparse) use this form.

Many bit vectors of one graph can also share one stored constant and one unpacking
(``pack_flags``, ``unpack_flags``): their bits are joined, packed 8 per byte with the last byte
padded by zeros, and unpacked into bools by two uint8 ops,

    shifted = packed * [1, 2, 4, ..., 128]      # uint8: b * 2^j mod 256, bit 7 - j on top
    flags   = shifted >= 128                     # (q, 8): bit 7 - j of byte b

(uint8 products wrap modulo 256 in ONNX, numpy and onnxruntime alike), so a graph pays for the
unpacking once, and each vector is a part of ``flags`` (a Split); binary weights
(graphc.compress.binary) use this form.

>>> bits = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 1], bool)
>>> packed, tail = pack(bits)
>>> packed.tolist(), tail.tolist()
([[144]], [1, 1])
>>> unpack(packed, tail).tolist() == bits.tolist()
True
"""

from __future__ import annotations

import numpy as np

from graphc.ir import CONST, Graph, Value

BIT_ORDER = "big"
INT32 = 6  # onnx.TensorProto.INT32
# The ops of ``unpack_in_graph`` (decoders that recognize one accept these).
UNPACK_OPS = ("Cast", "Div", "Mul", "Sub", "Reshape", "Concat")
SHARED = {
    # name: value of the constants every unpacking of a graph shares
    "bitmask.place": np.array([128, 64, 32, 16, 8, 4, 2, 1], np.int32),
    "bitmask.place2": np.array([256, 128, 64, 32, 16, 8, 4, 2], np.int32),
    "bitmask.two": np.array(2, np.int32),
    "bitmask.flat": np.array([-1], np.int64),
    "bitmask.axis": np.array(0, np.int64),
    # unpack_flags: the powers of two that move bit 7 - j of a byte to its top, and the top bit
    "u.pow2": np.array([1, 2, 4, 8, 16, 32, 64, 128], np.uint8),
    "u128": np.array(128, np.uint8),
}


def pack(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(packed, tail)`` of a bit array read in row-major order: uint8 ``(n // 8, 1)``
    and int32 ``(n % 8,)`` (see the module docstring).

    >>> [a.tolist() for a in pack(np.ones(9, bool))]
    [[[255]], [1]]
    """
    flat = np.asarray(bits, bool).reshape(-1)
    q = flat.size // 8
    packed = np.packbits(flat[:8 * q], bitorder=BIT_ORDER).reshape(q, 1)
    return packed, flat[8 * q:].astype(np.int32)


def unpack(packed: np.ndarray, tail: np.ndarray | None = None) -> np.ndarray:
    """Return the bool vector that ``pack`` stored (numpy's reading of the in-graph unpacking).

    >>> unpack(np.array([[5]], np.uint8)).astype(int).tolist()
    [0, 0, 0, 0, 0, 1, 0, 1]
    """
    head = np.unpackbits(np.asarray(packed, np.uint8).reshape(-1), bitorder=BIT_ORDER)
    rest = np.zeros(0, np.int32) if tail is None else np.asarray(tail).reshape(-1)
    return np.concatenate([head.astype(bool), rest.astype(bool)])


def packed_bytes(n: int) -> int:
    """Return the bytes ``n`` bits take in the packed form (the packed bytes and the tail).

    >>> packed_bytes(4608), packed_bytes(10)
    (576, 9)
    """
    return n // 8 + 4 * (n % 8)


def shared(g: Graph, name: str, table: dict[str, np.ndarray] | None = None) -> Value:
    """Return the constant ``name`` of ``table`` (default ``SHARED``) in ``g``, added on first
    use: one copy per graph, whichever pass adds it."""
    want = (table or SHARED)[name]
    if name in g.nx and g.op(name) == CONST:
        have = g.const_value(Value(name))
        if have.dtype == want.dtype and have.shape == want.shape and np.array_equal(have, want):
            return Value(name)
    return g.add_const(name, want)


def unpack_in_graph(g: Graph, packed: Value, tail: Value | None, prefix: str,
                    flat_name: str | None = None, tail_name: str | None = None) -> Value:
    """Add the unpacking of ``packed`` (and ``tail``) to ``g``; return its int32 0/1 bits.

    The nodes are called ``<prefix>_int32``, ``<prefix>_shift``, ``<prefix>_shift2``,
    ``<prefix>_even`` and ``<prefix>_bits`` (shape ``(n // 8, 8)``); with ``flat_name`` the bits
    are reshaped to ``(n,)`` by that node, and a tail is joined by the Concat ``tail_name``
    (a tail needs both names).

    >>> from graphc.interpret import run
    >>> g = Graph("u")
    >>> p, t = pack(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], bool))
    >>> g.outputs = [unpack_in_graph(g, g.add_const("p", p), g.add_const("t", t), "p",
    ...                              "flat", "all")]
    >>> run(g, {})["all"].tolist()
    [1, 0, 1, 1, 0, 0, 0, 1, 1]
    """
    wide = g.add_node("Cast", [packed], {"to": INT32}, name=f"{prefix}_int32")
    high = g.add_node("Div", [wide, shared(g, "bitmask.place")], name=f"{prefix}_shift")
    next_ = g.add_node("Div", [wide, shared(g, "bitmask.place2")], name=f"{prefix}_shift2")
    twice = g.add_node("Mul", [next_, shared(g, "bitmask.two")], name=f"{prefix}_even")
    bits = g.add_node("Sub", [high, twice], name=f"{prefix}_bits")
    if flat_name is not None:
        bits = g.add_node("Reshape", [bits, shared(g, "bitmask.flat")], name=flat_name)
    if tail is not None:
        bits = g.add_node("Concat", [bits, tail], {"axis": 0}, name=tail_name)
    return bits


def pack_flags(vectors: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Return the bits of ``vectors`` (each read in row-major order) joined and packed: uint8
    ``(ceil(n / 8), 1)``, the last byte padded with zeros, and each vector's ``(start, end)``
    in the joined bits.

    >>> packed, spans = pack_flags([np.array([1, 0, 1], bool), np.ones((2, 3), bool)])
    >>> packed.reshape(-1).tolist(), spans
    ([191, 128], [(0, 3), (3, 9)])
    """
    flat = [np.asarray(v, bool).reshape(-1) for v in vectors]
    ends = np.cumsum([v.size for v in flat]).tolist()
    spans = list(zip([0, *ends[:-1]], ends, strict=True))
    joined = np.concatenate(flat) if flat else np.zeros(0, bool)
    return np.packbits(joined, bitorder=BIT_ORDER).reshape(-1, 1), spans


def unpack_flags(g: Graph, packed: Value, name: str) -> Value:
    """Add to ``g`` the unpacking of ``packed`` (uint8 ``(q, 1)``) into bools ``(q, 8)``, most
    significant bit of each byte first (row-major: the order ``pack_flags`` joined them in);
    return them.

    The nodes are ``<name>.shl`` (``b * 2^j`` in uint8, wrapping modulo 256: bit ``7 - j`` of
    ``b`` becomes the top bit) and ``<name>.on`` (``>= 128``). Two ops on the stored bytes, no
    Cast, and comparing yields the bools Where needs directly.

    >>> from graphc.interpret import run
    >>> g = Graph("u")
    >>> packed, _ = pack_flags([np.array([1, 0, 1, 1, 0, 0, 0, 1, 1], bool)])
    >>> g.outputs = [unpack_flags(g, g.add_const("bits", packed), "bits")]
    >>> run(g, {})["bits.on"].astype(int).tolist()
    [[1, 0, 1, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0]]
    """
    shifted = g.add_node("Mul", [packed, shared(g, "u.pow2")], name=f"{name}.shl")
    return g.add_node("GreaterOrEqual", [shifted, shared(g, "u128")], name=f"{name}.on")

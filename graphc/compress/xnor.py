"""The XNOR arithmetic of binary networks, for teaching: the numbers of ``graphc explain binary``.

For a, w in {-1, +1}^n, encode +1 as the bit 1 and -1 as the bit 0. A product a_i * w_i is +1
exactly when the two signs agree, which is when the bits are equal, which is when
xnor(a_i, w_i) = 1. With p agreements and n - p disagreements::

    dot(a, w) = p * (+1) + (n - p) * (-1) = 2 p - n,    p = popcount(xnor(a, w))

so n multiplications and n - 1 additions become one XNOR of two n-bit words and one count of
ones. Here the bits are Python integers, the XNOR is ``~(A ^ W)`` masked to n bits and the count
``int.bit_count``: the machine-word operations a binary kernel runs. The sign that makes float
activations binary is graphc's ``BinarySign`` reference (sign(0) = +1), the function the
interpreter runs.

>>> r = xnor_dot([1, -1, 1, 1, -1, 1, -1, -1], [1, 1, 1, 1, -1, 1, -1, 1])
>>> r.a_bits, r.w_bits, r.xnor_bits, r.popcount
('10110100', '11110101', '10111110', 6)
>>> r.via_popcount, r.dot
(4, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from graphc.errors import UsageError
from graphc.ops.binary import binary_sign

# The course's example: 6 of 8 signs agree, so dot(a, w) = 6 - 2 = 2 * 6 - 8 = 4.
DEFAULT_A: tuple[int, ...] = (1, -1, 1, 1, -1, 1, -1, -1)
DEFAULT_W: tuple[int, ...] = (1, 1, 1, 1, -1, 1, -1, 1)
# A binary neuron: float inputs (one of them 0, which sign() turns into +1) and the latent float
# weights that training keeps and the binary layer replaces by alpha * sign(w_latent).
DEFAULT_X: tuple[float, ...] = (0.7, -1.2, 0.0, 0.4, -0.3, 1.5, -0.8, 0.2)
DEFAULT_W_LATENT: tuple[float, ...] = (0.6, -0.4, -0.2, 0.9, 0.1, 0.5, -0.7, -0.3)
# The command prints every entry; longer vectors make unreadable lines.
MAX_PRINTED = 64

WHY_NOT_POPCOUNT = (
    "On onnxruntime graphc computes these sums as int8 +-1 products (MatMulInteger, "
    "QLinearConv),\nnot XNOR + popcount: there is no popcount kernel, and XNOR + popcount built "
    "from standard ops\nmeasured 1.2-62x slower than fp32."
)


@dataclass(frozen=True)
class XnorDot:
    """dot(a, w) of two +-1 vectors computed twice: as 2 * popcount(xnor(a, w)) - n from the
    bits, and as the sum of the products a_i * w_i."""

    a: tuple[int, ...]
    w: tuple[int, ...]
    a_bits: str
    w_bits: str
    xnor_bits: str
    popcount: int
    via_popcount: int
    dot: int

    @property
    def n(self) -> int:
        return len(self.a)

    @property
    def products(self) -> tuple[int, ...]:
        return tuple(x * y for x, y in zip(self.a, self.w, strict=True))


@dataclass(frozen=True)
class BinaryNeuron:
    """One XNOR-Net neuron: y = alpha * (2 * popcount(xnor(sign(x), sign(w_latent))) - n) with
    alpha = mean|w_latent|, and its binary output sign(y)."""

    x: tuple[float, ...]
    w_latent: tuple[float, ...]
    alpha: float
    xnor: XnorDot
    y: float
    output: int


def check_signs(values: Sequence[float], where: str = "a") -> tuple[int, ...]:
    """Return ``values`` as ints; refuse an empty vector or a value that is not +1 or -1.

    >>> check_signs([1.0, -1, 1])
    (1, -1, 1)
    """
    if len(values) == 0:
        raise UsageError("the vector is empty", where=where,
                         expected="at least one value +1 or -1", got="none")
    signs = []
    for i, v in enumerate(values):
        if v not in (1, -1):
            raise UsageError(f"value {i + 1} of {len(values)} is not +1 or -1", where=where,
                             expected="each value +1 or -1", got=_number(v),
                             hint="Binary vectors hold signs only; sign(x) makes them from floats.")
        signs.append(int(v))
    return tuple(signs)


def check_seed(seed: int, where: str = "seed") -> int:
    """Return ``seed``; refuse a negative one (numpy's generators take seeds >= 0).

    >>> check_seed(3)
    3
    """
    if seed < 0:
        raise UsageError("a seed must not be negative", where=where, expected="seed >= 0",
                         got=seed)
    return seed


def check_length(n: int, where: str = "n") -> int:
    """Return ``n``; refuse a length below 1.

    >>> check_length(8)
    8
    """
    if n < 1:
        raise UsageError("a vector needs at least one entry", where=where,
                         expected="n >= 1", got=n)
    return n


def _same_length(a: Sequence[object], w: Sequence[object], names: tuple[str, str]) -> None:
    if len(a) != len(w):
        raise UsageError("the two vectors have different lengths", where=names[1],
                         expected=f"the length of {names[0]}, {len(a)}", got=len(w))


def to_bits(signs: Sequence[int]) -> str:
    """Return the bit string of a +-1 vector: +1 -> 1, -1 -> 0, the first entry first.

    >>> to_bits([1, -1, 1, 1, -1, 1, -1, -1])
    '10110100'
    """
    return "".join("1" if s == 1 else "0" for s in check_signs(signs, "signs"))


def xnor_dot(a: Sequence[float], w: Sequence[float], *,
             names: tuple[str, str] = ("a", "w")) -> XnorDot:
    """Compute dot(a, w) of two +-1 vectors as 2 * popcount(xnor(a, w)) - n, and as the sum of
    the products. ``names`` are the vectors' names in errors.

    >>> r = xnor_dot([1, 1, -1], [1, -1, -1])
    >>> r.xnor_bits, r.popcount, r.via_popcount, r.dot
    ('101', 2, 1, 1)
    """
    a_signs = check_signs(a, names[0])
    w_signs = check_signs(w, names[1])
    _same_length(a_signs, w_signs, names)
    n = len(a_signs)
    a_bits, w_bits = to_bits(a_signs), to_bits(w_signs)
    # The bits as one n-bit word each; ~ flips every bit of Python's unbounded int, so mask.
    mask = (1 << n) - 1
    word = ~(int(a_bits, 2) ^ int(w_bits, 2)) & mask
    popcount = word.bit_count()
    return XnorDot(a_signs, w_signs, a_bits, w_bits, format(word, f"0{n}b"), popcount,
                   2 * popcount - n, sum(x * y for x, y in zip(a_signs, w_signs, strict=True)))


def random_signs(n: int, seed: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return two random +-1 vectors of length ``n`` drawn from ``seed``.

    >>> a, w = random_signs(5, seed=1)
    >>> len(a), len(w), set(a + w) <= {-1, 1}
    (5, 5, True)
    """
    rng = np.random.default_rng(check_seed(seed))
    drawn = rng.choice([-1, 1], size=(2, check_length(n)))
    return tuple(int(v) for v in drawn[0]), tuple(int(v) for v in drawn[1])


def random_neuron_inputs(n: int, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return float inputs (1 decimal, so 0 can occur) and latent weights (2 decimals) of length
    ``n`` drawn from ``seed``.

    >>> x, w_latent = random_neuron_inputs(3, seed=1)
    >>> len(x), len(w_latent)
    (3, 3)
    """
    rng = np.random.default_rng(check_seed(seed))
    n = check_length(n)
    x = np.round(rng.normal(0.0, 1.0, n), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
    w_latent = np.round(rng.normal(0.0, 0.5, n), 2) + 0.0
    return tuple(float(v) for v in x), tuple(float(v) for v in w_latent)


def binary_neuron(x: Sequence[float], w_latent: Sequence[float], *,
                  names: tuple[str, str] = ("x", "w_latent")) -> BinaryNeuron:
    """Compute one XNOR-Net neuron: y = alpha * (2 * popcount(xnor(sign(x), sign(w_latent))) - n)
    with alpha = mean|w_latent| and sign(0) = +1, and its binary output sign(y). ``names`` are
    the vectors' names in errors.

    >>> neuron = binary_neuron([0.5, 0.0, -2.0], [0.3, -0.6, -0.3])
    >>> neuron.xnor.a_bits, neuron.xnor.w_bits, neuron.xnor.via_popcount
    ('110', '100', 1)
    >>> round(neuron.alpha, 6), round(neuron.y, 6), neuron.output
    (0.4, 0.4, 1)
    """
    xs = np.asarray([float(v) for v in x], np.float64)
    ws = np.asarray([float(v) for v in w_latent], np.float64)
    check_length(len(xs), names[0])
    _same_length(xs, ws, names)
    for name, values in zip(names, (xs, ws), strict=True):
        if not np.all(np.isfinite(values)):
            raise UsageError("a value is not finite", where=name, expected="finite numbers",
                             got=_number(float(values[~np.isfinite(values)][0])))
    # alpha * sign(w) is the binary vector closest to w_latent: alpha = mean|w_latent| minimizes
    # ||w_latent - alpha * sign(w_latent)||^2 (XNOR-Net, Rastegari et al. 2016).
    alpha = float(np.mean(np.abs(ws)))
    dot = xnor_dot(binary_sign(xs).tolist(), binary_sign(ws).tolist())
    y = alpha * dot.via_popcount
    output = int(binary_sign(np.array(y, np.float64)))
    return BinaryNeuron(tuple(xs.tolist()), tuple(ws.tolist()), alpha, dot, y, output)


def _number(v: float) -> str:
    return f"{v:g}"


def _signed(v: int) -> str:
    return f"{v:+d}"


def _rows(rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Lay out labelled rows of cells as aligned columns."""
    label = max(len(name) for name, _ in rows)
    cell = max(len(c) for _, cells in rows for c in cells)
    return [f"  {name:<{label}} = " + " ".join(f"{c:>{cell}}" for c in cells).rstrip()
            for name, cells in rows]


def format_dot(r: XnorDot) -> str:
    """Return the worked example: the vectors, their bits, the XNOR, the count and both sums.

    >>> print(format_dot(xnor_dot([1, -1], [1, 1])))
    a, w in {-1, +1}^n with n = 2
    <BLANKLINE>
      a         = +1 -1
      w         = +1 +1
      a_i * w_i = +1 -1
    <BLANKLINE>
    bits (+1 -> 1, -1 -> 0):
      a           10
      w           11
      xnor(a, w)  10   (1 where the signs agree)
    <BLANKLINE>
    popcount(xnor(a, w)) = 1   (the agreements; the other n - 1 = 1 disagree)
    n                    = 2
    2 * popcount - n     = 2 * 1 - 2 = 0
    sum of a_i * w_i     = +1 -1 = 0
    dot(a, w) = 2 * popcount(xnor(a, w)) - n: 0 = 0
    """
    products = " ".join(_signed(p) for p in r.products)
    return "\n".join([
        f"a, w in {{-1, +1}}^n with n = {r.n}",
        "",
        *_rows([("a", [_signed(v) for v in r.a]), ("w", [_signed(v) for v in r.w]),
                ("a_i * w_i", [_signed(v) for v in r.products])]),
        "",
        "bits (+1 -> 1, -1 -> 0):",
        f"  a           {r.a_bits}",
        f"  w           {r.w_bits}",
        f"  xnor(a, w)  {r.xnor_bits}   (1 where the signs agree)",
        "",
        f"popcount(xnor(a, w)) = {r.popcount}   (the agreements; the other n - {r.popcount} = "
        f"{r.n - r.popcount} disagree)",
        f"n                    = {r.n}",
        f"2 * popcount - n     = 2 * {r.popcount} - {r.n} = {r.via_popcount}",
        f"sum of a_i * w_i     = {products} = {r.dot}",
        f"dot(a, w) = 2 * popcount(xnor(a, w)) - n: {r.dot} = {r.via_popcount}",
    ])


def format_neuron(neuron: BinaryNeuron) -> str:
    """Return the worked neuron: inputs and latent weights, their signs and bits, alpha, y and
    sign(y).

    >>> print(format_neuron(binary_neuron([0.5, 0.0], [0.3, -0.6])).splitlines()[-1])
    sign(y)                          = +1   (this neuron's bit for the next layer)
    """
    r = neuron.xnor
    label = 32
    count = f"({r.via_popcount})" if r.via_popcount < 0 else str(r.via_popcount)
    # Every term while the line stays short, else their sum.
    if r.n <= 8:
        abs_terms = "(" + " + ".join(_number(abs(v)) for v in neuron.w_latent) + ")"
    else:
        abs_terms = f"{sum(abs(v) for v in neuron.w_latent):.6g}"
    x, a, w_latent, w = _rows([("x", [_number(v) for v in neuron.x]),
                               ("a = sign(x)", [_signed(v) for v in r.a]),
                               ("w_latent", [_number(v) for v in neuron.w_latent]),
                               ("w = sign(w_latent)", [_signed(v) for v in r.w])])
    return "\n".join([
        x, a + "   (sign(0) = +1)", w_latent, w,
        "",
        f"{'bits of a, w':<{label}} = {r.a_bits}, {r.w_bits}",
        f"{'xnor(a, w)':<{label}} = {r.xnor_bits}   (popcount {r.popcount})",
        f"{'2 * popcount - n':<{label}} = 2 * {r.popcount} - {r.n} = {r.via_popcount}",
        f"{'alpha = mean|w_latent|':<{label}} = {abs_terms} / {r.n} = "
        f"{neuron.alpha:.6g}",
        f"{'y = alpha * (2 * popcount - n)':<{label}} = {neuron.alpha:.6g} * {count} = "
        f"{neuron.y:.6g}",
        f"{'sign(y)':<{label}} = {_signed(neuron.output)}   (this neuron's bit for the next "
        "layer)",
    ])

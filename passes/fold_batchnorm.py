"""Fold inference BatchNormalization into the weights of the layer before it.

With s = gamma / sqrt(var + eps), BN(y) = s * (y - mu) + beta is affine per channel, so it
folds into a producer whose output channels own their weights:

- Conv (also grouped and depthwise): W'[o] = W[o] * s[o], b' = (b - mu) * s + beta.
- ConvTranspose, weight (C_in, C_out / groups, kh, kw): output channel o = group * C_out/groups
  + j owns W[group's inputs, j]; that slice is scaled by s[o]; the bias as for Conv.
- Gemm, Y = alpha * A op(B) + beta_g * C: the columns of op(B) are scaled by s (rows of B when
  transB=1), C' = (beta_g * C - mu) * s + beta and beta_g' = 1.
- MatMul with a constant 2-D B and a 2-D output, with or without a constant bias Add:
  B'[:, o] = B[:, o] * s[o], c' = (c - mu) * s + beta (an Add of beta - mu * s without one).
- Any other producer: BN becomes Mul(x, s) + (beta - mu * s) per channel.

Refuses when the producer's output has another user (a conv feeding both a BN and a skip Add:
folding would change the skip), when weights or BN statistics are not constants, and when BN
is in training mode. Folded weights are computed in float64 and stored in the model's dtype.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Value
from graphc.rewrite import Decline, Match, PassReport, Rule, pat, rewrite, set_const_input

FORMULA = ("W' = W * gamma / sqrt(var + eps)\n"
           "b' = (b - mu) * gamma / sqrt(var + eps) + beta")
FOLDABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_BN_STATS = ("gamma", "beta", "mean", "var")


def _bn(producer: object) -> object:
    return pat("BatchNormalization", producer, *_BN_STATS, name="bn")


def _stats(g: Graph, m: Match) -> tuple[np.ndarray, np.ndarray] | Decline:
    """Return (s, shift) in float64 with BN(y) = s * y + shift, or why not."""
    bn = m.nodes["bn"]
    if g.attrs(bn).get("training_mode", 0):
        return Decline("BatchNormalization is in training mode (it uses batch statistics)")
    arrays = [m.const(g, k) for k in _BN_STATS]
    missing = [k for k, a in zip(_BN_STATS, arrays, strict=True) if a is None]
    if missing:
        return Decline(f"BatchNormalization {', '.join(missing)} not constant")
    gamma, beta, mean, var = (a.astype(np.float64) for a in arrays)
    eps = g.attrs(bn).get("epsilon", 1e-5)
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _operands(g: Graph, m: Match, bias: str | None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None] | Decline:
    """Return (s, shift, W, bias or None) of a fold, or why it is refused: BN statistics,
    weight and (if the producer has one) bias must be constants."""
    stats = _stats(g, m)
    if isinstance(stats, Decline):
        return stats
    w = m.const(g, "w")
    if w is None:
        return Decline(f"the weight %{m.values['w'].node} is not a constant")
    b = m.const(g, bias) if bias else None
    if bias and m.values.get(bias) is not None and b is None:
        return Decline(f"the bias %{m.values[bias].node} is not a constant")
    return (*stats, w, b)


def _fold_conv(g: Graph, m: Match) -> Value | Decline:
    operands = _operands(g, m, "b")
    if isinstance(operands, Decline):
        return operands
    s, shift, w, b = operands
    conv = m.nodes["producer"]
    dtype = w.dtype
    if g.op(conv) == "Conv":
        w_new = w.astype(np.float64) * s.reshape(-1, *([1] * (w.ndim - 1)))
    else:
        groups = g.attrs(conv).get("group", 1)
        cin, cout_g = w.shape[0], w.shape[1]
        grouped = w.astype(np.float64).reshape(groups, cin // groups, cout_g, *w.shape[2:])
        scale = s.reshape(groups, 1, cout_g, *([1] * (w.ndim - 2)))
        w_new = (grouped * scale).reshape(w.shape)
    b64 = np.zeros_like(s) if b is None else b.astype(np.float64)
    set_const_input(g, conv, 1, w_new.astype(dtype), f"{conv}.weight")
    set_const_input(g, conv, 2, (b64 * s + shift).astype(dtype), f"{conv}.bias")
    return Value(conv)


def _fold_gemm(g: Graph, m: Match) -> Value | Decline:
    operands = _operands(g, m, "c")
    if isinstance(operands, Decline):
        return operands
    s, shift, w, c = operands
    gemm = m.nodes["producer"]
    attrs = g.attrs(gemm)
    axis = 0 if attrs.get("transB", 0) else 1
    shape = [1, 1]
    shape[axis] = -1
    w_new = w.astype(np.float64) * s.reshape(shape)
    c64 = np.zeros(1) if c is None else c.astype(np.float64) * attrs.get("beta", 1.0)
    set_const_input(g, gemm, 1, w_new.astype(w.dtype), f"{gemm}.weight")
    set_const_input(g, gemm, 2, (c64 * s + shift).astype(w.dtype), f"{gemm}.bias")
    attrs.pop("beta", None)
    return Value(gemm)


def _fold_matmul(g: Graph, m: Match) -> Value | Decline:
    add = m.nodes.get("add")
    operands = _operands(g, m, "c" if add else None)
    if isinstance(operands, Decline):
        return operands
    s, shift, w, c = operands
    mm = m.nodes["producer"]
    bn_input = g.in_values(m.nodes["bn"])[0]
    if w.ndim != 2 or len(g.type_of(Value(mm)).shape) != 2 or len(g.type_of(bn_input).shape) != 2:
        return Decline("MatMul folds only with a 2-D constant weight and a 2-D output "
                       "(BatchNormalization's channel axis must be the weight's columns)")
    c = np.zeros(1) if c is None else c
    set_const_input(g, mm, 1, (w.astype(np.float64) * s).astype(w.dtype), f"{mm}.weight")
    bias = (c.astype(np.float64) * s + shift).astype(w.dtype)
    if add:
        port = next(p for p, v in enumerate(g.in_values(add)) if v == m.values["c"])
        set_const_input(g, add, port, bias, f"{add}.bias")
        return Value(add)
    return g.add_node("Add", [Value(mm), g.add_const(f"{mm}.bias", bias)],
                      name=f"{m.nodes['bn']}.add")


def _to_affine(g: Graph, m: Match) -> Value | Decline:
    producer = m.values["x"]
    if g.op(producer.node) in FOLDABLE:
        return Decline("a foldable producer refused above", quiet=True)
    stats = _stats(g, m)
    if isinstance(stats, Decline):
        return stats
    s, shift = stats
    bn = m.nodes["bn"]
    ttype = g.type_of(producer)
    shape = (-1,) + (1,) * (len(ttype.shape) - 2)
    scale = g.add_const(f"{bn}.scale", s.reshape(shape).astype(ttype.dtype))
    offset = g.add_const(f"{bn}.shift", shift.reshape(shape).astype(ttype.dtype))
    mul = g.add_node("Mul", [producer, scale], name=f"{bn}.mul")
    return g.add_node("Add", [mul, offset], name=f"{bn}.add")


RULES = [
    Rule("fold-into-conv", _bn(pat(("Conv", "ConvTranspose"), "x", "w", "b?", name="producer")),
         _fold_conv, FORMULA),
    Rule("fold-into-gemm", _bn(pat("Gemm", "x", "w", "c?", name="producer")), _fold_gemm,
         "B' = B * s (per output column), s = gamma / sqrt(var + eps)\n"
         "C' = (beta_gemm * C - mu) * s + beta"),
    Rule("fold-into-matmul-add",
         _bn(pat("Add", pat("MatMul", "x", "w", name="producer"), "c", name="add")),
         _fold_matmul, "B' = B * s (per output column), s = gamma / sqrt(var + eps)\n"
                       "c' = (c - mu) * s + beta"),
    Rule("fold-into-matmul-add",
         _bn(pat("Add", "c", pat("MatMul", "x", "w", name="producer"), name="add")),
         _fold_matmul, "B' = B * s (per output column), s = gamma / sqrt(var + eps)\n"
                       "c' = (c - mu) * s + beta"),
    Rule("fold-into-matmul", _bn(pat("MatMul", "x", "w", name="producer")), _fold_matmul,
         "B' = B * s (per output column), s = gamma / sqrt(var + eps)\n"
         "y' = x B' + (beta - mu * s)"),
    Rule("batchnorm-to-affine", _bn("x"), _to_affine,
         "y = x * s + (beta - mu * s), s = gamma / sqrt(var + eps)"),
]


def fold_batchnorm(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Return ``g`` with every inference BatchNormalization folded or made a Mul + Add.

    >>> from graphc.models import load
    >>> folded = fold_batchnorm(load("cnn").build())
    >>> [g for g in (n for n in folded.op_nodes()) if "bn" in g]
    []
    """
    g = g.copy()
    rewrite(g, RULES, report)
    return g

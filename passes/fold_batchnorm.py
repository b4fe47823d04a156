"""Fold inference BatchNormalization into the weights of the layer before it, or after it.

With s = gamma / sqrt(var + eps) and shift = beta - mu * s, BN(y) = s * y + shift is affine per
channel, so it folds into a producer whose output channels own their weights:

- Conv (also grouped and depthwise): W'[o] = W[o] * s[o], b' = (b - mu) * s + beta.
- ConvTranspose, weight (C_in, C_out / groups, kh, kw): output channel o = group * C_out/groups
  + j owns W[group's inputs, j]; that slice is scaled by s[o]; the bias as for Conv.
- Gemm, Y = alpha * A op(B) + beta_g * C: the columns of op(B) are scaled by s (rows of B when
  transB=1), C' = (beta_g * C - mu) * s + beta and beta_g' = 1.
- MatMul with a constant 2-D B and a 2-D output, with or without a constant bias Add:
  B'[:, o] = B[:, o] * s[o], c' = (c - mu) * s + beta (an Add of beta - mu * s without one).

A BN that cannot fold backward (after a Concat, an Add, a graph input, or a producer whose
output has other users) folds forward into the layer that is its only user, when that is exact:

- Conv without padding: W'[o, i] = W[o, i] * s[c], b'[o] = b[o] + sum_(i, kernel) W[o, i] *
  shift[c], c the input channel that input i of output o's group reads. A padded Conv is
  refused: its zero border would become shift after the fold, which no bias can undo.
- Gemm, on the BN's 2-D output or through a Flatten at axis 1 (s and shift repeated over each
  channel's H*W features): op(B)' = diag(s) op(B), C' = beta_g * C + alpha * shift op(B).

Otherwise the BN stays one BatchNormalization node. It is never rewritten as Mul(x, s) + shift:
onnxruntime runs BatchNormalization as one kernel, and the Mul + Add pair measured 1.24-1.76x
its time (one thread, batch 1 and 32, 64x56x56 and 256x14x14, after an input or a Concat, on an
AVX2 EPYC; ``python bench/real_models.py --bn-forms`` measures it again).

Refuses when the producer's output has another user (a conv feeding both a BN and a skip Add:
folding would change the skip), when weights or BN statistics are not constants, and when BN
is in training mode. Folded weights are computed in float64 and stored in the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from graphc.ir import INPUT, Graph, Value
from graphc.rewrite import (
    Decline,
    Match,
    PassReport,
    Rule,
    escapes,
    match,
    pat,
    remove_if_dead,
    rewrite,
    set_const_input,
)

FORMULA = ("W' = W * gamma / sqrt(var + eps)\n"
           "b' = (b - mu) * gamma / sqrt(var + eps) + beta")
FOLDABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_BN_STATS = ("gamma", "beta", "mean", "var")
# Why a BN that folds nowhere is left alone (measured: see the module docstring).
KEPT_WHY = "one onnxruntime kernel; as Mul + Add it measured 1.24-1.76x slower"


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


# ----- folding forward, into the layer after -------------------------------------------------


def _bypass(g: Graph, node: str, bn: str, x: Value) -> None:
    """Feed ``x`` (BatchNormalization's input) to ``node``'s port 0 instead of ``bn``, then
    drop ``bn`` and its statistics."""
    key = next(k for k, d in g.nx[bn][node].items() if d["port"] == 0)
    g.nx.remove_edge(bn, node, key)
    g.nx.add_edge(x.node, node, port=0, out=x.out)
    remove_if_dead(g, bn)


def _conv_padding(g: Graph, conv: str, x_shape: tuple[int, ...], kernel: tuple[int, ...]
                  ) -> list[int]:
    """Return the padding ``conv`` adds to its input (explicit pads, or SAME's totals)."""
    attrs = g.attrs(conv)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "VALID":
        return []
    if auto_pad == "NOTSET":
        return [int(p) for p in attrs.get("pads") or ()]
    spatial = len(kernel)
    strides = list(attrs.get("strides") or [1] * spatial)
    dilations = list(attrs.get("dilations") or [1] * spatial)
    return [max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            for size, k, s, d in zip(x_shape[2:], kernel, strides, dilations, strict=True)]


def _forward_conv(g: Graph, m: Match, apply: bool = True) -> Value | Decline | None:
    """Fold BN into the Conv after it: W'[o, i] = W[o, i] * s[c(o, i)] and
    b'[o] = b[o] + sum over i and the kernel of W[o, i] * shift[c(o, i)], where c(o, i) is the
    input channel that input i of output o's group reads. With ``apply`` false, only check."""
    stats = _stats(g, m)
    if isinstance(stats, Decline):
        return stats
    s, shift = stats
    conv = m.nodes["consumer"]
    w = m.const(g, "w")
    if w is None:
        return Decline(f"the weight %{m.values['w'].node} of %{conv} is not a constant")
    b = m.const(g, "b")
    if m.values.get("b") is not None and b is None:
        return Decline(f"the bias %{m.values['b'].node} of %{conv} is not a constant")
    pads = _conv_padding(g, conv, g.type_of(m.values["x"]).shape, w.shape[2:])
    if any(pads):
        # A zero-padded border of BN's output is a zero; of its input, it would become
        # s * 0 + shift after the fold. No per-channel bias can correct only the border.
        return Decline(f"%{conv} pads its input (pads {pads}): its zero border would become "
                       "beta - mu * s after folding")
    if not apply:
        return None
    groups = g.attrs(conv).get("group", 1)
    out_c, cin_g = w.shape[0], w.shape[1]
    # Row o of these is the factor of each input channel that output channel o reads.
    group_of = np.arange(out_c) // (out_c // groups)
    tail = (slice(None), slice(None)) + (None,) * (w.ndim - 2)
    s_in = s.reshape(groups, cin_g)[group_of][tail]
    shift_in = shift.reshape(groups, cin_g)[group_of][tail]
    w64 = w.astype(np.float64)
    b64 = np.zeros(out_c) if b is None else b.astype(np.float64)
    b_new = b64 + (w64 * shift_in).sum(axis=tuple(range(1, w.ndim)))
    set_const_input(g, conv, 1, (w64 * s_in).astype(w.dtype), f"{conv}.weight")
    set_const_input(g, conv, 2, b_new.astype(w.dtype), f"{conv}.bias")
    _bypass(g, conv, m.nodes["bn"], m.values["x"])
    return Value(conv)


def _forward_gemm(g: Graph, m: Match, apply: bool = True) -> Value | Decline | None:
    """Fold BN into the Gemm after it (through a Flatten of axis 1): with s and shift repeated
    over each channel's H*W features, op(B)' = diag(s) op(B) and
    C' = beta_gemm * C + alpha * shift op(B). With ``apply`` false, only check."""
    stats = _stats(g, m)
    if isinstance(stats, Decline):
        return stats
    s, shift = stats
    gemm = m.nodes["consumer"]
    attrs = g.attrs(gemm)
    if attrs.get("transA", 0):
        return Decline(f"%{gemm} has transA=1: BatchNormalization's channels would be the "
                       "rows of its A")
    x_shape = g.type_of(m.values["x"]).shape
    flatten = m.nodes.get("flatten")
    if flatten:
        axis = g.attrs(flatten).get("axis", 1)
        if axis % len(x_shape) != 1:
            return Decline(f"%{flatten} flattens at axis {axis}: a feature is then not one "
                           "channel's value")
    w = m.const(g, "w")
    if w is None:
        return Decline(f"the weight %{m.values['w'].node} of %{gemm} is not a constant")
    c = m.const(g, "c")
    if m.values.get("c") is not None and c is None:
        return Decline(f"the bias %{m.values['c'].node} of %{gemm} is not a constant")
    if not apply:
        return None
    # Flatten at axis 1 lays each channel's H*W values next to each other.
    per_channel = int(np.prod(x_shape[2:], dtype=np.int64))
    s_f, shift_f = np.repeat(s, per_channel), np.repeat(shift, per_channel)
    trans_b = attrs.get("transB", 0)
    w64 = w.astype(np.float64)
    op_b = w64.T if trans_b else w64
    w_new = w64 * (s_f[None, :] if trans_b else s_f[:, None])
    c64 = np.zeros(1) if c is None else c.astype(np.float64) * attrs.get("beta", 1.0)
    c_new = c64 + attrs.get("alpha", 1.0) * (shift_f @ op_b)
    set_const_input(g, gemm, 1, w_new.astype(w.dtype), f"{gemm}.weight")
    set_const_input(g, gemm, 2, c_new.astype(w.dtype), f"{gemm}.bias")
    attrs.pop("beta", None)
    _bypass(g, flatten or gemm, m.nodes["bn"], m.values["x"])
    return Value(gemm)


FORWARD_RULES = [
    Rule("fold-forward-into-conv", pat("Conv", _bn("x"), "w", "b?", name="consumer"),
         _forward_conv,
         "W'[o, i] = W[o, i] * s[i], s = gamma / sqrt(var + eps)\n"
         "b'[o] = b[o] + sum over i, kh, kw of W[o, i, kh, kw] * (beta[i] - mu[i] * s[i])"),
    Rule("fold-forward-into-gemm", pat("Gemm", _bn("x"), "w", "c?", name="consumer"),
         _forward_gemm,
         "op(B)' = diag(s) op(B), s = gamma / sqrt(var + eps)\n"
         "C' = beta_gemm * C + alpha * (beta - mu * s) op(B)"),
    Rule("fold-forward-into-gemm",
         pat("Gemm", pat("Flatten", _bn("x"), name="flatten"), "w", "c?", name="consumer"),
         _forward_gemm,
         "op(B)' = diag(s) op(B), s = gamma / sqrt(var + eps) repeated over H*W\n"
         "C' = beta_gemm * C + alpha * (beta - mu * s) op(B)"),
]


def _forward_plan(g: Graph, bn: str) -> Decline | None:
    """Return None if ``bn`` folds forward into the layer after it, else why not (``quiet``
    when there is no Conv or Gemm after it to try)."""
    if Value(bn) in g.outputs:
        return Decline("it is a graph output", quiet=True)
    users = sorted({u for u, _ in g.users(Value(bn))})
    if len(users) != 1:
        return Decline(f"it has {len(users)} users ({', '.join('%' + u for u in users)})",
                       quiet=True)
    (user,) = users
    consumer = user
    if g.op(user) == "Flatten":
        after = sorted({u for u, _ in g.users(Value(user))})
        if len(after) == 1 and Value(user) not in g.outputs:
            consumer = after[0]
    for rule in FORWARD_RULES:
        m = match(g, rule.pattern, consumer)
        if m is None or m.nodes["bn"] != bn:
            continue
        reason = escapes(g, m)
        if reason:
            return Decline(reason)
        return rule.apply(g, m, apply=False)
    return Decline(f"its user %{user} ({g.op(user)}) is not a Conv or Gemm", quiet=True)


def _forward_quietly(apply: Callable[..., Value | Decline | None]
                     ) -> Callable[[Graph, Match], Value | Decline]:
    """Wrap a forward fold so that its refusals are quiet: ``keep-batchnorm`` reports them on
    the BatchNormalization's own line."""
    def run(g: Graph, m: Match) -> Value | Decline:
        result = apply(g, m)
        if result is None or isinstance(result, Decline):
            return Decline(result.reason if result else "not applied", quiet=True)
        return result

    return run


# ----- what stays -------------------------------------------------------------------------------


def _tried_backward(g: Graph, producer: str) -> bool:
    """Return whether a fold-into-<producer> rule matched (and so reported its refusal)."""
    if g.op(producer) in FOLDABLE:
        return True
    return g.op(producer) == "Add" and any(
        v is not None and g.op(v.node) == "MatMul" for v in g.in_values(producer))


def _keep(g: Graph, m: Match) -> Decline:
    """Leave a BatchNormalization that folds neither way as it is, and say why."""
    bn = m.nodes["bn"]
    producer = m.values["x"].node
    forward = _forward_plan(g, bn)
    if forward is None:
        return Decline("folds forward", quiet=True)
    if _tried_backward(g, producer):
        # The refusal of fold-into-<producer> already says why it did not fold backward.
        if forward.quiet:
            return Decline(forward.reason, quiet=True)
        return Decline(f"stays a BatchNormalization node: no forward fold: {forward.reason}")
    stats = _stats(g, m)
    if isinstance(stats, Decline):
        return stats
    if g.op(producer) == INPUT:
        before = f"%{producer} is a graph input"
    else:
        before = f"%{producer} ({g.op(producer)}) has no per-channel weights"
    return Decline(f"stays one BatchNormalization node ({KEPT_WHY}): no fold backward "
                   f"({before}), nor forward ({forward.reason})")


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
    Rule("keep-batchnorm", _bn("x"), _keep),
    *(Rule(r.name, r.pattern, _forward_quietly(r.apply), r.formula) for r in FORWARD_RULES),
]


def fold_batchnorm(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Return ``g`` with every inference BatchNormalization folded where that is exact.

    A BN folds into the layer before it, else forward into the Conv or Gemm after it, else it
    stays one BatchNormalization node; ``report.refusals`` says why for each one that stays.

    >>> from graphc.models import load
    >>> folded = fold_batchnorm(load("cnn").build())
    >>> [g for g in (n for n in folded.op_nodes()) if "bn" in g]
    []
    """
    g = g.copy()
    rewrite(g, RULES, report)
    return g

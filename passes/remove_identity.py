"""Remove Identity nodes and the ops that are the identity: every use of y reads x instead.

- y = Identity(x).
- y = Concat(x), Sum(x), Max(x), Min(x) or Mean(x): with one input, each returns that input
  unchanged (same shape, dtype and values; Mean divides by 1, which is exact). PyTorch's
  exporter writes ``torch.cat([x], 1)`` as such a Concat: the first layer of each DenseNet block
  has one. Removing it saves a copy of the tensor on onnxruntime, which keeps the node.

Refuses one that gives a graph output its name when its input cannot take that name: an input,
a constant, a node's second output, or a node that is already an output.
"""

from __future__ import annotations

from collections import Counter

from graphc.ir import Graph, Value
from graphc.rewrite import Decline, Match, PassReport, Rule, can_take_name, pat, rewrite

# Ops that return their input unchanged when they have exactly one.
ONE_INPUT_IDENTITY = ("Concat", "Sum", "Max", "Min", "Mean")


def _remove(g: Graph, m: Match) -> Value | Decline:
    x = m.values["x"]
    me = Value(m.root)
    op = g.op(m.root)
    if op != "Identity" and len(g.in_values(m.root)) != 1:
        return Decline(f"{op} of several inputs", quiet=True)
    if me in g.outputs and not can_take_name(g, x, [v for v in g.outputs if v != me]):
        return Decline("it gives a graph output its name, and its input (an input, a constant, "
                       "a second output or another output) cannot take that name")
    return x


RULES = [Rule("remove-identity", pat(("Identity", *ONE_INPUT_IDENTITY), "x"), _remove,
              "y = x (Identity, or Concat / Sum / Max / Min / Mean of one input)")]


def remove_identity(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Return ``g`` without removable Identity nodes and one-input Concat/Sum/Max/Min/Mean.

    ``report.notes`` names the one-input ops it removed (an Identity needs no explanation).

    >>> from graphc.dsl import GraphBuilder
    >>> b = GraphBuilder("i")
    >>> y = b.output(b.op("Identity", b.op("Relu", b.input("x", (2,)))), "y")
    >>> remove_identity(b.build()).op("y")
    'Relu'
    """
    g = g.copy()
    before = Counter(g.op(n) for n in g.op_nodes() if g.op(n) in ONE_INPUT_IDENTITY
                     and len(g.in_values(n)) == 1)
    rewrite(g, RULES, report)
    if report is not None:
        after = Counter(g.op(n) for n in g.op_nodes() if g.op(n) in ONE_INPUT_IDENTITY
                        and len(g.in_values(n)) == 1)
        removed = before - after
        if removed:
            report.notes.append("removed as the identity (one input): " + ", ".join(
                f"{count} {op}" for op, count in sorted(removed.items())))
    return g

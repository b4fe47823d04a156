"""Remove Identity nodes: every use of y = Identity(x) reads x instead.

Refuses an Identity that carries a graph output's name from an input, a constant or another
output (ONNX needs a node to produce each named output).
"""

from __future__ import annotations

from graphc.ir import CONST, INPUT, Graph, Value
from graphc.rewrite import Decline, Match, PassReport, Rule, pat, rewrite


def _remove(g: Graph, m: Match) -> Value | Decline:
    x = m.values["x"]
    if Value(m.root) in g.outputs and (g.op(x.node) in (INPUT, CONST) or x in g.outputs):
        return Decline("it names a graph output that is an input, a constant or another output")
    return x


RULES = [Rule("remove-identity", pat("Identity", "x"), _remove, "y = x")]


def remove_identity(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Return ``g`` without removable Identity nodes.

    >>> from graphc.dsl import GraphBuilder
    >>> b = GraphBuilder("i")
    >>> y = b.output(b.op("Identity", b.op("Relu", b.input("x", (2,)))), "y")
    >>> remove_identity(b.build()).op("y")
    'Relu'
    """
    g = g.copy()
    rewrite(g, RULES, report)
    return g

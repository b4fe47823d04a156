"""Remove Identity nodes: every use of y = Identity(x) reads x instead.

Refuses an Identity that gives a graph output its name when its input cannot take that name:
an input, a constant, a node's second output, or a node that is already an output.
"""

from __future__ import annotations

from graphc.ir import Graph, Value
from graphc.rewrite import Decline, Match, PassReport, Rule, can_take_name, pat, rewrite


def _remove(g: Graph, m: Match) -> Value | Decline:
    x = m.values["x"]
    me = Value(m.root)
    if me in g.outputs and not can_take_name(g, x, [v for v in g.outputs if v != me]):
        return Decline("it gives a graph output its name, and its input (an input, a constant, "
                       "a second output or another output) cannot take that name")
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

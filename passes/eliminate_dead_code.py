"""Remove nodes that no graph output depends on (graph inputs always stay)."""

from __future__ import annotations

from graphc.ir import Graph
from graphc.rewrite import Explanation, PassReport


def eliminate_dead_code(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Return ``g`` without dead nodes.

    >>> from graphc.dsl import GraphBuilder
    >>> b = GraphBuilder("d")
    >>> x = b.input("x", (2,))
    >>> unused = b.op("Exp", x)
    >>> y = b.output(b.op("Relu", x), "y")
    >>> eliminate_dead_code(b.build()).op_nodes()
    ['y']
    """
    g = g.copy()
    lines = {n: g.format_node(n) for n in g.nx} if report is not None else {}
    removed = g.remove_dead()
    if report is not None:
        report.rewrites += len(removed)
        report.explanations += [Explanation("remove-dead", [lines[n]], [], "") for n in removed]
    return g

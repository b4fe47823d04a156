"""Evaluate subgraphs whose inputs are all constants, and replace them by constants.

A node whose every input is a constant is run on graphc's interpreter and its used outputs
become constants (named after the node). Repeated in topological order, this folds whole
constant subgraphs. A graph output keeps its node, and a node whose result would be larger
than 2^20 elements and than its inputs together is left alone (folding would grow the file).
DequantizeLinear and FakeQuantizeLinear of constants are quantized weights, not computations:
they stay, since folding them would store the weights as float again (4x the size, and no int8
kernel for onnxruntime to fuse).
"""

from __future__ import annotations

from graphc.interpret import run_node
from graphc.ir import Graph, Value
from graphc.rewrite import Explanation, PassReport, remove_if_dead

MAX_GROWTH = 1 << 20
KEEP = ("DequantizeLinear", "FakeQuantizeLinear")


def fold_constants(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Return ``g`` with constant subgraphs evaluated.

    >>> from graphc.dsl import GraphBuilder
    >>> b = GraphBuilder("c")
    >>> x = b.input("x", (2,))
    >>> y = b.output(x * (b.const(2.0) + b.const(3.0)), "y")
    >>> folded = fold_constants(b.build())
    >>> [folded.op(n) for n in folded.topo()]
    ['Input', 'Const', 'Mul']
    """
    g = g.copy()
    outputs = {v.node for v in g.outputs}
    for node in g.op_nodes():
        values = g.in_values(node)
        consts = [g.const_value(v) for v in values if v is not None]
        if node in outputs or not consts or any(c is None for c in consts):
            continue
        if g.op(node) in KEEP:
            if report is not None:
                report.refuse(g.format_node(node, types=False),
                              f"fold-constants: {g.op(node)} keeps a quantized weight")
            continue
        out_size = sum(t.size for t in g.types(node))
        if out_size > max(MAX_GROWTH, sum(c.size for c in consts)):
            if report is not None:
                report.refuse(g.format_node(node, types=False),
                              f"fold-constants: the result has {out_size:,} elements")
            continue
        before = g.format_node(node)
        trainable = any(g.nx.nodes[v.node].get("trainable") for v in values if v is not None)
        results = run_node(g, node, [None if v is None else g.const_value(v) for v in values])
        uses = {k: g.users(Value(node, k)) for k in range(len(results))}
        names = [g.value_name(Value(node, k)) for k in range(len(results))]
        preds = list(g.nx.predecessors(node))
        g.nx.remove_node(node)
        for pred in preds:
            remove_if_dead(g, pred)
        after = []
        for k, array in enumerate(results):
            if not uses[k]:
                continue
            const = g.add_const(names[k], array, trainable=trainable)
            for user, port in uses[k]:
                g.nx.add_edge(const.node, user, port=port, out=0)
            after.append(g.format_node(const.node))
        if report is not None:
            report.rewrites += 1
            report.explanations.append(Explanation("fold-constant", [before], after, ""))
    return g


"""Evaluate subgraphs whose inputs are all constants, and replace them by constants.

A node whose every input is a constant is run on graphc's interpreter and its used outputs
become constants (named after the node). Repeated in topological order, this folds whole
constant subgraphs. A graph output keeps its node, and a node whose result would be larger
than 2^20 elements and than its inputs together is left alone (too much work to evaluate).
DequantizeLinear and FakeQuantizeLinear of constants are quantized weights, not computations:
they stay, since folding them would store the weights as float again (4x the size, and no int8
kernel for onnxruntime to fuse).

Folding never makes the file larger. Each connected region of foldable nodes is folded whole
or not at all: it is left alone when the constants it would leave (its results that nodes
outside it read) take more bytes than the constants it would remove (those only it reads).
That keeps a weight stored compactly and expanded by a small subgraph, such as a pruned weight
stored as a bitmask and its kept values (graphc.compress.sparse): onnxruntime folds such a
subgraph itself when it loads the model, so expanding it here would only grow the file.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from graphc.interpret import run_node
from graphc.ir import CONST, Graph, Value
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
    growing = _growing_regions(g, _foldable(g, report), report)
    for node in g.op_nodes():
        values = g.in_values(node)
        consts = [g.const_value(v) for v in values if v is not None]
        if node in outputs or not consts or any(c is None for c in consts) or node in growing:
            continue
        if g.op(node) in KEEP or sum(t.size for t in g.types(node)) > max(
                MAX_GROWTH, sum(c.size for c in consts)):
            continue  # refused (and reported) by _foldable
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



def _foldable(g: Graph, report: PassReport | None) -> set[str]:
    """Return the nodes the pass would fold, by their types alone: every input a constant or
    a foldable node's result, no graph output, not kept (KEEP) and not too large to evaluate."""
    outputs = {v.node for v in g.outputs}
    found: set[str] = set()
    for node in g.op_nodes():
        values = [v for v in g.in_values(node) if v is not None]
        if node in outputs or not values or not all(
                g.op(v.node) == CONST or v.node in found for v in values):
            continue
        where = g.format_node(node, types=False)
        if g.op(node) in KEEP:
            if report is not None:
                report.refuse(where, f"fold-constants: {g.op(node)} keeps a quantized weight")
            continue
        out_size = sum(t.size for t in g.types(node))
        if out_size > max(MAX_GROWTH, sum(g.type_of(v).size for v in values)):
            if report is not None:
                report.refuse(where, f"fold-constants: the result has {out_size:,} elements")
            continue
        found.add(node)
    return found


def _nbytes(g: Graph, value: Value) -> int:
    t = g.type_of(value)
    return t.size * np.dtype(t.dtype).itemsize


def _growing_regions(g: Graph, foldable: set[str], report: PassReport | None) -> set[str]:
    """Return the foldable nodes of regions whose folding would store more bytes of constants
    than it removes (see the module docstring)."""
    left: set[str] = set()
    region_graph = g.nx.subgraph(foldable)
    for region in nx.weakly_connected_components(region_graph):
        results = {Value(src, d["out"]) for src in region
                   for _, dst, d in g.nx.out_edges(src, data=True) if dst not in region}
        read = {v.node for n in region for v in g.in_values(n)
                if v is not None and g.op(v.node) == CONST}
        removed = [c for c in read if c not in {v.node for v in g.outputs}
                   and all(dst in region for dst in g.nx.successors(c))]
        after = sum(_nbytes(g, v) for v in results)
        before = sum(_nbytes(g, Value(c)) for c in removed)
        if after > before:
            left |= region
            if report is not None:
                last = max(region, key=lambda n: (len(nx.ancestors(region_graph, n)), n))
                report.refuse(g.format_node(last, types=False),
                              f"fold-constants: folding its {len(region)} constant node(s) "
                              f"would store {after:,} bytes of constants instead of {before:,}")
    return left

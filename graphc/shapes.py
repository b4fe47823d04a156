"""Shape and dtype inference over a whole graph, and the per-layer table of ``graphc show``."""

from __future__ import annotations

from dataclasses import dataclass

from graphc import ops
from graphc.errors import GraphcError
from graphc.ir import CONST, Graph, Value


def reinfer(g: Graph) -> None:
    """Recompute every node's output types in topological order (after a rewrite)."""
    for node in g.topo():
        try:
            g.nx.nodes[node]["types"] = g.infer(node)
        except GraphcError as err:
            raise err.located(g.format_node(node, types=False)) from None


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table: an op node, its output, parameters and FLOPs."""

    node: str
    op: str
    output: str
    params: int
    flops: int


def layer_table(g: Graph) -> list[LayerRow]:
    """Return one row per op node: output type, trainable parameters it reads, FLOPs."""
    rows = []
    for node in g.op_nodes():
        params = sum(g.nx.nodes[v.node]["value"].size for v in g.in_values(node)
                     if v is not None and g.op(v.node) == CONST
                     and g.nx.nodes[v.node].get("trainable"))
        opdef = ops.get(g.op(node))
        flops = opdef.flops(g.view(node)) if opdef.flops else 0
        rows.append(LayerRow(node, g.op(node), str(g.type_of(Value(node))), int(params),
                             int(flops)))
    return rows


def format_table(rows: list[LayerRow]) -> str:
    """Return the per-layer table as aligned text with a total line."""
    header = ("layer", "op", "output", "params", "FLOPs")
    body = [(r.node, r.op, r.output, f"{r.params:,}", f"{r.flops:,}") for r in rows]
    total = ("total", "", "", f"{sum(r.params for r in rows):,}",
             f"{sum(r.flops for r in rows):,}")
    table = [header, *body, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for k, row in enumerate(table):
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0 or k == len(table) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""The per-layer table of ``graphc show``: output type, parameters and FLOPs of each op node.

Shapes themselves are inferred node by node as the graph is built (``Graph.infer``).
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc import ops
from graphc.ir import CONST, Graph, Value
from graphc.ops.base import TensorType


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table: an op node, its output, parameters and FLOPs."""

    node: str
    op: str
    output: TensorType
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
        rows.append(LayerRow(node, g.op(node), g.type_of(Value(node)), int(params),
                             int(flops)))
    return rows


def format_table(rows: list[LayerRow]) -> str:
    """Return the per-layer table as aligned text with a total line."""
    header = ("layer", "op", "output", "params", "FLOPs")
    body = [(r.node, r.op, str(r.output), f"{r.params:,}", f"{r.flops:,}") for r in rows]
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

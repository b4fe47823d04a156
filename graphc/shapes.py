"""The per-layer table of ``graphc show``: output type, parameters and FLOPs of each op node.

Shapes themselves are inferred node by node as the graph is built (``Graph.infer``).

Parameters are the trainable constants; stored state is what a trained model keeps besides them
and does not train by gradient: BatchNorm's running mean and variance. The course counts both,
4 numbers per feature map for a BatchNorm layer (N_BN = 4LM), so the table shows them apart and
their sum.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc import ops
from graphc.ir import CONST, Graph, Value
from graphc.ops.base import TensorType

# The inputs of an op that hold stored state (updated by averaging while training, not by the
# gradient); a constant there counts as state, whether or not the graph came from ONNX.
STATE_INPUTS: dict[str, tuple[int, ...]] = {"BatchNormalization": (3, 4)}


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table: an op node, its output, parameters, FLOPs and state."""

    node: str
    op: str
    output: TensorType
    params: int
    flops: int
    state: int = 0
    drop: float | None = None  # Dropout: the drop probability (ONNX's ratio), when constant


def layer_table(g: Graph) -> list[LayerRow]:
    """Return one row per op node: output type, trainable parameters and stored state it reads,
    FLOPs.

    >>> from graphc.models import load
    >>> bn = [r for r in layer_table(load("cnn").build()) if r.op == "BatchNormalization"][0]
    >>> bn.output.shape, bn.params, bn.state
    ((1, 16, 8, 8), 32, 32)
    """
    rows = []
    for node in g.op_nodes():
        params = state = 0
        state_at = STATE_INPUTS.get(g.op(node), ())
        for k, v in enumerate(g.in_values(node)):
            if v is None or g.op(v.node) != CONST:
                continue
            data = g.nx.nodes[v.node]
            if data.get("trainable"):
                params += data["value"].size
            elif k in state_at:
                state += data["value"].size
        opdef = ops.get(g.op(node))
        flops = opdef.flops(g.view(node)) if opdef.flops else 0
        rows.append(LayerRow(node, g.op(node), g.type_of(Value(node)), int(params),
                             int(flops), int(state),
                             dropout_ratio(g, node) if g.op(node) == "Dropout" else None))
    return rows


def dropout_ratio(g: Graph, node: str) -> float | None:
    """Return Dropout ``node``'s drop probability: its constant ``ratio``, ONNX's default 0.5
    when absent, or None when it is fed at run time."""
    ins = g.in_values(node)
    if len(ins) < 2 or ins[1] is None:
        return 0.5
    ratio = g.const_value(ins[1])
    return None if ratio is None else float(ratio)


def format_table(rows: list[LayerRow]) -> str:
    """Return the per-layer table as aligned text with a total line.

    A graph with stored state (BatchNorm's running statistics) gets a ``state`` column and a
    line adding it to the trainable parameters; a graph with Dropout, a line giving each one's
    keep probability (the course's p) and drop probability (ONNX's ratio).

    >>> from graphc.models import load
    >>> for line in format_table(layer_table(load("cnn").build())).splitlines()[-2:]:
    ...     print(line)
    25,978 trainable parameters + 224 stored state = 26,202 numbers
    dropout, as keep p (the course's) / drop ratio (ONNX's): drop 0.7 / 0.3
    """
    with_state = any(r.state for r in rows)
    header = ("layer", "op", "output", "params", *(("state",) if with_state else ()), "FLOPs")
    body = [(r.node, r.op, str(r.output), f"{r.params:,}",
             *((f"{r.state:,}",) if with_state else ()), f"{r.flops:,}") for r in rows]
    params, state = sum(r.params for r in rows), sum(r.state for r in rows)
    total = ("total", "", "", f"{params:,}", *((f"{state:,}",) if with_state else ()),
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
    if with_state:
        lines.append(f"{params:,} trainable parameters + {state:,} stored state = "
                     f"{params + state:,} numbers")
    drops = [r for r in rows if r.op == "Dropout"]
    if drops:
        # ONNX stores the probability of dropping; the course's p is the one of keeping.
        lines.append("dropout, as keep p (the course's) / drop ratio (ONNX's): " + ", ".join(
            f"{r.node} {_fmt_p(1 - r.drop)} / {_fmt_p(r.drop)}" if r.drop is not None
            else f"{r.node} set at run time" for r in drops))
    return "\n".join(lines)


def _fmt_p(p: float) -> str:
    return f"{p:.4g}"

"""Draw symbolic backprop as the course's figure: values above the edges, gradients below.

One box per scalar operation (labelled with its op: ``+``, ``*``, ``σ``, ``Σ`` for a neuron's
weighted sum, ...) and one per input or parameter leaf; an edge from each value to every node
that reads it, laid out left to right. Above each edge, in green, the forward value; below it,
in red, the gradient of the objective flowing back along that edge. A value read by one node
carries its whole gradient d(objective)/d(value) on its edge; a value read by several nodes
carries each path's share on each edge, and its box shows their sum ("grad sum"), since
gradients add where a value branches. The objective leaves on an output edge (gradient 1).

Graphviz ``dot`` draws the figure when it is installed; otherwise a small layered layout drawn
with matplotlib does, so drawing never fails for want of Graphviz.

>>> from graphc.models import load
>>> from graphc.symbolic import backprop
>>> r = backprop(load("backprop_example").build(), at={"x": -2, "y": 5, "z": -4})
>>> for e in edges(r):
...     print(e.source, "->", e.target, format_number(e.value), format_number(e.grad))
x -> add -2 -4
y -> add 5 -4
add -> f 3 -4
z -> f -4 3
f -> None -12 1
>>> to_dot(r).splitlines()[0]
'digraph "backprop_example" {'
>>> render(r, "png", backend="matplotlib")[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import html
import io
import itertools
import math
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sympy as sp

from graphc.errors import GraphcError, unknown

if TYPE_CHECKING:
    from graphc.symbolic.chain_rule import BackpropResult

DEFAULT_MAX_NODES = 80
BACKENDS = ("auto", "graphviz", "matplotlib")
FORMATS = ("svg", "png")

VALUE_COLOR = "#1a7f1a"
GRAD_COLOR = "#cc1f1f"
INPUT_FILL = "#e8f0fb"
PARAM_FILL = "#fbf3dc"
NAME_COLOR = "#666666"
PNG_DPI = 150

# The symbol drawn in an op's box; other ops show their name.
OP_LABELS = {
    "Add": "+", "Sub": "\u2212", "Mul": "*", "Div": "/", "Neg": "neg", "Pow": "^",
    "Exp": "exp", "Log": "log", "Sqrt": "\u221a", "Sigmoid": "\u03c3", "Tanh": "tanh",
    "Relu": "ReLU", "LeakyRelu": "LeakyReLU", "Heaviside": "H",
    "Gemm": "\u03a3", "MatMul": "\u03a3", "Conv": "\u03a3", "ConvTranspose": "\u03a3",
    "Sum": "\u03a3", "AveragePool": "avg", "GlobalAveragePool": "avg",
    "BatchNormalization": "BN", "Softmax": "softmax", "LogSoftmax": "log softmax",
}

_BINARY = {"Add", "Sub", "Mul", "Div", "Pow"}


@dataclass(frozen=True)
class Box:
    """One scalar node as drawn: its big title, small name line and optional gradient sum."""

    name: str
    title: str
    subtitle: str
    kind: str  # "input", "param" or "op"
    grad_sum: float | None
    is_objective: bool


@dataclass(frozen=True)
class Edge:
    """A value read by a node (target None: the objective's output) and its two numbers."""

    source: str
    target: str | None
    value: float
    grad: float


def format_number(v: float) -> str:
    """Return ``v`` with at most 4 significant digits and no noise: -12.0 -> ``-12``.

    >>> [format_number(v) for v in (-12.0, 0.012432, 3e-7, -0.0, 123456.0)]
    ['-12', '0.01243', '3e-7', '0', '1.235e5']
    """
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    text = f"{v:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _subtitle(node: Any, name: str) -> str:
    """Return the small line under an op's symbol: its name, and its expression when one
    operand is a constant (constants are numbers inside the expression, not drawn nodes, so a
    ``*`` box with a single input edge would otherwise hide what it multiplies by)."""
    if node.op in _BINARY and len(node.parents) < 2:
        text = f"{name} = {node.expr}"  # a local expression: a few symbols, cheap to print
        if len(text) <= 32:
            return text
    return name


def _check_size(result: BackpropResult, max_nodes: int) -> None:
    n = len(result.nodes)
    if n > max_nodes:
        raise GraphcError(
            f"graph {result.graph.name!r} has too many scalar nodes to draw",
            expected=f"at most {max_nodes} nodes (max_nodes)", got=f"{n} nodes",
            hint="Draw a smaller graph (fewer units, a smaller input), or pass max_nodes="
                 f"{n} to draw it anyway (a figure this big is hard to read).")


def boxes(result: BackpropResult, max_nodes: int = DEFAULT_MAX_NODES) -> list[Box]:
    """Return the boxes to draw, one per scalar node, in topological order."""
    _check_size(result, max_nodes)
    readers: dict[sp.Symbol, int] = defaultdict(int)
    for node in result.nodes.values():
        for p in node.parents:
            readers[p] += 1
    grads = result._all_grads()
    out = []
    for s, node in result.nodes.items():
        is_objective = s == result.objective
        fan_out = readers[s] + (1 if is_objective else 0)
        grad_sum = grads.get(s, 0.0) if fan_out > 1 else None
        if node.is_leaf:
            kind = "param" if node.op == "param" else "input"
            out.append(Box(s.name, s.name, "", kind, grad_sum, is_objective))
        else:
            out.append(Box(s.name, OP_LABELS.get(node.op, node.op), _subtitle(node, s.name),
                           "op", grad_sum, is_objective))
    return out


def edges(result: BackpropResult, max_nodes: int = DEFAULT_MAX_NODES) -> list[Edge]:
    """Return every edge with its forward value and the gradient flowing back along it.

    The gradient on the edge p -> v is (dv/dp) * d(objective)/dv, the term this edge adds to
    d(objective)/dp; it is 0 on edges the objective does not depend on.
    """
    _check_size(result, max_nodes)
    flows = {(st.node, st.wrt): st.product_value for st in result.steps_list}
    out = []
    for s, node in result.nodes.items():
        for p in node.parents:
            out.append(Edge(p.name, s.name, result.nodes[p].value, flows.get((s, p), 0.0)))
    out.append(Edge(result.objective.name, None, result.nodes[result.objective].value, 1.0))
    return out


def _legend_parts(result: BackpropResult, bxs: Sequence[Box]) -> list[tuple[str, str]]:
    obj = result.objective.name
    parts = [(f"{result.graph.name}:  ", "black"), ("forward value above each edge", VALUE_COLOR),
             (",  ", "black"), (f"gradient \u2202{obj}/\u2202value below", GRAD_COLOR)]
    if any(b.grad_sum is not None for b in bxs):
        parts.append(("  (a value read by several nodes: each edge carries its share, "
                      "its box the sum)", "black"))
    return parts


# ----- Graphviz -------------------------------------------------------------------------------

_FONT = "Helvetica,Arial,sans-serif"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _font(text: str, color: str | None = None, size: float | None = None) -> str:
    attrs = (f' color="{color}"' if color else "") + (f' point-size="{size:g}"' if size else "")
    return f"<font{attrs}>{html.escape(text)}</font>" if attrs else html.escape(text)


def to_dot(result: BackpropResult, max_nodes: int = DEFAULT_MAX_NODES) -> str:
    """Return the figure as Graphviz DOT text (deterministic: same result, same text).

    Each edge is drawn through a small label node whose underline is the edge itself, so the
    value sits exactly above the edge and the gradient below it (a plain edge label would sit
    beside the edge).
    """
    bxs = boxes(result, max_nodes)
    eds = edges(result, max_nodes)
    ids = {b.name: f"n{k}" for k, b in enumerate(bxs)}
    legend = "".join(_font(text, None if color == "black" else color)
                     for text, color in _legend_parts(result, bxs))
    lines = [
        f"digraph {_quote(result.graph.name)} {{",
        f'  graph [rankdir=LR, nodesep=0.25, ranksep=0.12, fontname="{_FONT}", fontsize=11, '
        f"labelloc=t, labeljust=l, label=<{legend}>];",
        f'  node [shape=box, fontname="{_FONT}", fontsize=11, margin="0.12,0.05", width=0.45, '
        'height=0.35];',
        "  edge [arrowsize=0.7];",
    ]
    for b in bxs:
        rows = [_font(b.title, size=18 if b.kind == "op" else None)]
        if b.subtitle:
            rows.append(_font(b.subtitle, NAME_COLOR, 9))
        if b.grad_sum is not None:
            rows.append(_font(f"grad sum {format_number(b.grad_sum)}", GRAD_COLOR, 9))
        attrs = [f"label=<{'<br/>'.join(rows)}>"]
        if b.kind != "op":
            fill = INPUT_FILL if b.kind == "input" else PARAM_FILL
            attrs.append(f'style=filled, fillcolor="{fill}"')
        if b.is_objective:
            attrs.append("penwidth=2")
        lines.append(f"  {ids[b.name]} [{', '.join(attrs)}];")
    inputs = [ids[b.name] for b in bxs if b.kind == "input"]
    if inputs:
        # Inputs in the first column, in the graph's order (the invisible chain keeps it).
        chain = f" {' -> '.join(inputs)} [style=invis];" if len(inputs) > 1 else ""
        lines.append(f"  {{rank=min; {'; '.join(inputs)};{chain}}}")
    lines.append('  out [shape=point, width=0.01, height=0.01, style=invis];')
    for k, e in enumerate(eds):
        label = (
            '<table border="0" cellborder="0" cellspacing="0" cellpadding="1">'
            f'<tr><td port="v" border="1" sides="b" width="34">'
            f"{_font(format_number(e.value), VALUE_COLOR)}</td></tr>"
            f"<tr><td>{_font(format_number(e.grad), GRAD_COLOR)}</td></tr></table>")
        target = "out" if e.target is None else ids[e.target]
        lines.append(f"  e{k} [shape=plain, label=<{label}>];")
        lines.append(f"  {ids[e.source]} -> e{k}:v:sw [arrowhead=none];")
        lines.append(f"  e{k}:v:se -> {target};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _run_dot(dot_text: str, fmt: str) -> bytes:
    """Run Graphviz on ``dot_text``; raise GraphcError if it is missing or fails."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphcError("Graphviz is not installed (no 'dot' on PATH)",
                          hint="Install it (apt-get install graphviz) or use "
                               "backend='matplotlib'.")
    args = [exe, f"-T{fmt}"] + ([f"-Gdpi={PNG_DPI}"] if fmt == "png" else [])
    try:
        done = subprocess.run(args, input=dot_text.encode(), capture_output=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GraphcError(f"Graphviz failed to run: {err}") from None
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise GraphcError("Graphviz failed to draw the graph",
                          expected="exit status 0", got=done.returncode,
                          hint=message[-1] if message else None)
    return done.stdout


# ----- matplotlib -----------------------------------------------------------------------------

_TITLE_SIZE = {"op": 15.0, "input": 10.5, "param": 10.5}
_SMALL = 7.5
_LABEL_SIZE = 9.0
_LEGEND_SIZE = 9.5
_PAD_X = 0.10  # inches
_PAD_Y = 0.07
_COLUMN_GAP = 0.4  # between columns, room for the edges' curves
_LABEL_OFFSET = 0.025  # between an edge and its numbers
_PORT_STEP = 0.12  # between the edges entering (or leaving) a box


@dataclass
class _Item:
    """A point of the layered layout: a box, an edge's label, a bend of a long edge, or the
    output's end."""

    column: int
    w: float = 0.0
    h: float = 0.0
    x: float = 0.0
    y: float = 0.0  # downward while laying out
    box: Box | None = None
    edge: int | None = None  # for a label: the edge it belongs to


class _Measure:
    """Text widths in inches, from matplotlib's own renderer (so boxes fit their text)."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.renderer = FigureCanvasAgg(Figure(dpi=72)).get_renderer()
        self.cache: dict[tuple[str, float], float] = {}

    def width(self, text: str, size: float) -> float:
        from matplotlib.font_manager import FontProperties

        key = (text, size)
        if key not in self.cache:
            w, _, _ = self.renderer.get_text_width_height_descent(
                text, FontProperties(size=size), ismath=False)
            self.cache[key] = w / 72
        return self.cache[key]


def _box_lines(b: Box) -> list[tuple[str, float, str]]:
    lines = [(b.title, _TITLE_SIZE[b.kind], "black")]
    if b.subtitle:
        lines.append((b.subtitle, _SMALL, NAME_COLOR))
    if b.grad_sum is not None:
        lines.append((f"grad sum {format_number(b.grad_sum)}", _SMALL, GRAD_COLOR))
    return lines


def _line_height(size: float) -> float:
    return size * 1.25 / 72


def _pava(targets: list[float]) -> list[float]:
    """Return the nondecreasing sequence closest to ``targets`` in least squares."""
    blocks: list[list[float]] = []  # [mean, count]
    for t in targets:
        blocks.append([t, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    out: list[float] = []
    for mean, count in blocks:
        out += [mean] * int(count)
    return out


def _crossings(columns: list[list[int]], down: dict[int, list[int]]) -> int:
    """Count the crossings between consecutive columns (edges only join neighbours)."""
    total = 0
    for left, right in itertools.pairwise(columns):
        pos = {item: j for j, item in enumerate(right)}
        ends = [(i, pos[t]) for i, item in enumerate(left) for t in down[item]]
        for (a1, b1), (a2, b2) in itertools.combinations(ends, 2):
            if (a1 - a2) * (b1 - b2) < 0:
                total += 1
    return total


def _layout(bxs: list[Box], eds: list[Edge], measure: _Measure
            ) -> tuple[list[_Item], list[list[int]]]:
    """Lay the figure out; return its items and each edge's chain of items.

    Boxes go in even columns, by longest path from the inputs; a parameter sits just left of
    its first reader, so a layer's weights stay next to it. Each edge runs through a label
    item in the next (odd) column, the straight stretch where its two numbers are written
    (as Graphviz lays out edge labels), then through one bend per further column. Order
    within columns: barycenter sweeps, keeping the fewest crossings. Heights: each item moves
    towards the mean of its neighbours with order and spacing kept (isotonic regression).
    """
    index = {b.name: k for k, b in enumerate(bxs)}
    preds: dict[int, list[int]] = defaultdict(list)
    succs: dict[int, list[int]] = defaultdict(list)
    for e in eds:
        if e.target is not None:
            preds[index[e.target]].append(index[e.source])
            succs[index[e.source]].append(index[e.target])
    layer: dict[int, int] = {}
    for k, b in enumerate(bxs):
        layer[k] = 1 + max((layer[p] for p in preds[k]), default=-1) if b.kind == "op" else 0
    for k, b in enumerate(bxs):
        if b.kind == "param" and succs[k]:
            layer[k] = max(0, min(layer[t] for t in succs[k]) - 1)

    items = []
    for k, b in enumerate(bxs):
        lines = _box_lines(b)
        w = max(measure.width(text, size) for text, size, _ in lines) + 2 * _PAD_X
        h = sum(_line_height(size) for _, size, _ in lines) + 2 * _PAD_Y
        # Tall enough that the arrowheads of all its inputs fit side by side.
        h = max(h, 0.36, _PORT_STEP * (len(preds[k]) - 1) + 0.16)
        items.append(_Item(2 * layer[k], max(w, 0.42), h, box=b))
    objective = next(k for k, b in enumerate(bxs) if b.is_objective)
    sink = len(items)
    items.append(_Item(2 * layer[objective] + 2))
    chains = []
    for n, e in enumerate(eds):
        a = index[e.source]
        b = sink if e.target is None else index[e.target]
        w = max(measure.width(format_number(e.value), _LABEL_SIZE),
                measure.width(format_number(e.grad), _LABEL_SIZE)) + 0.12
        chain = [a, len(items)]
        items.append(_Item(items[a].column + 1, max(w, 0.3),
                           2 * _line_height(_LABEL_SIZE) + 2 * _LABEL_OFFSET, edge=n))
        for column in range(items[a].column + 2, items[b].column):
            chain.append(len(items))
            items.append(_Item(column))
        chain.append(b)
        chains.append(chain)

    # Initial order: walk the edges in the order a depth-first visit from the objective
    # finishes their targets, so each node's inputs start out next to each other.
    finished: dict[int, int] = {}

    def visit(start: int) -> None:
        stack = [(start, iter(preds[start]))]
        while stack:
            node, parents = stack[-1]
            nxt = next((p for p in parents if p not in finished and
                        all(p != s for s, _ in stack)), None)
            if nxt is None:
                stack.pop()
                finished[node] = len(finished)
            else:
                stack.append((nxt, iter(preds[nxt])))

    visit(objective)
    for k in range(len(bxs)):
        if k not in finished:
            visit(k)
    finished[sink] = len(finished)
    columns: list[list[int]] = [[] for _ in range(max(it.column for it in items) + 1)]
    placed: set[int] = set()
    for chain in sorted(chains, key=lambda c: finished[c[-1]]):
        for item in chain:
            if item not in placed:
                placed.add(item)
                columns[items[item].column].append(item)
    for k in range(len(items)):
        if k not in placed:
            columns[items[k].column].append(k)

    up: dict[int, list[int]] = defaultdict(list)
    down: dict[int, list[int]] = defaultdict(list)
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)

    best = [list(c) for c in columns]
    best_crossings = _crossings(columns, down)
    for sweep in range(8):
        forward = sweep % 2 == 0
        for i in range(1, len(columns)) if forward else range(len(columns) - 2, -1, -1):
            pos = {item: j for j, item in enumerate(columns[i - 1 if forward else i + 1])}
            nbrs = up if forward else down
            current = {item: j for j, item in enumerate(columns[i])}

            def key(item: int, pos: dict[int, int] = pos, nbrs: dict[int, list[int]] = nbrs,
                    current: dict[int, int] = current) -> tuple[float, int]:
                near = [pos[n] for n in nbrs[item] if n in pos]
                return (sum(near) / len(near) if near else current[item], current[item])

            columns[i].sort(key=key)
        crossings = _crossings(columns, down)
        if crossings < best_crossings:
            best, best_crossings = [list(c) for c in columns], crossings
    columns = best

    def gap(a: _Item, b: _Item) -> float:
        if a.box is not None and b.box is not None:
            return 0.22
        return 0.06 if a.edge is not None and b.edge is not None else 0.12

    def place(column: list[int], desired: list[float]) -> None:
        offsets = [0.0]
        for a, b in itertools.pairwise(column):
            offsets.append(offsets[-1] + (items[a].h + items[b].h) / 2 + gap(items[a], items[b]))
        fitted = _pava([d - o for d, o in zip(desired, offsets, strict=True)])
        for item, z, o in zip(column, fitted, offsets, strict=True):
            items[item].y = z + o

    for column in columns:
        place(column, [0.0] * len(column))
    for sweep in range(16):
        both = sweep >= 10
        forward = sweep % 2 == 0
        for i in range(len(columns)) if forward else range(len(columns) - 1, -1, -1):
            desired = []
            for item in columns[i]:
                near = up[item] + down[item] if both else up[item] if forward else down[item]
                desired.append(sum(items[n].y for n in near) / len(near) if near
                               else items[item].y)
            place(columns[i], desired)

    # Gaps between columns grow with the height the edges cross there, so that curves stay
    # readable instead of turning vertical.
    x = 0.0
    for column in columns:
        width = max((items[k].w for k in column), default=0.0)
        x += width / 2
        for k in column:
            items[k].x = x
        rise = max((abs(items[k].y - items[t].y) for k in column for t in down[k]), default=0.0)
        x += width / 2 + min(max(_COLUMN_GAP, 0.3 * rise), 1.5)
    return items, chains


def _ports(items: list[_Item], chains: list[list[int]]
           ) -> tuple[dict[int, float], dict[int, float]]:
    """Return, per edge, the height where it leaves its source and enters its target: spread
    over the box's side in the order of the other ends, so the edges do not cross there."""
    leaving: dict[int, list[int]] = defaultdict(list)
    entering: dict[int, list[int]] = defaultdict(list)
    for k, chain in enumerate(chains):
        leaving[chain[0]].append(k)
        entering[chain[-1]].append(k)
    out: dict[int, float] = {}
    into: dict[int, float] = {}
    for ends, side, result in ((leaving, 1, out), (entering, -2, into)):
        for item, ks in ends.items():
            box = items[item]
            ks = sorted(ks, key=lambda k, side=side: (items[chains[k][side]].y, k))
            n = len(ks)
            step = min(_PORT_STEP, (box.h - 0.12) / (n - 1)) if n > 1 else 0.0
            for j, k in enumerate(ks):
                result[k] = box.y + (j - (n - 1) / 2) * step
    return out, into


def _edge_path(points: list[tuple[float, float]], straight: int) -> tuple[list, list]:
    """Return the vertices and codes of a smooth curve through ``points`` (level at each
    point, as Graphviz draws), straight from point ``straight`` to the next."""
    from matplotlib.path import Path as MplPath

    vertices = [points[0]]
    codes = [MplPath.MOVETO]
    for k, ((x0, y0), (x1, y1)) in enumerate(itertools.pairwise(points)):
        if k == straight or y0 == y1:
            vertices.append((x1, y1))
            codes.append(MplPath.LINETO)
        else:
            dx = (x1 - x0) / 2
            vertices += [(x0 + dx, y0), (x1 - dx, y1), (x1, y1)]
            codes += [MplPath.CURVE4] * 3
    return vertices, codes


def _render_matplotlib(result: BackpropResult, fmt: str, max_nodes: int) -> bytes:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
        from matplotlib.path import Path as MplPath
    except ImportError:
        raise GraphcError("cannot draw: neither Graphviz nor matplotlib is installed",
                          hint="Install one of them (pip install matplotlib, or apt-get "
                               "install graphviz).") from None
    bxs = boxes(result, max_nodes)
    eds = edges(result, max_nodes)
    measure = _Measure()
    items, chains = _layout(bxs, eds, measure)
    out_y, in_y = _ports(items, chains)

    margin = 0.25
    legend = _legend_parts(result, bxs)
    legend_h = 0.4
    xmin = min(it.x - it.w / 2 for it in items) - margin
    xmax = max(it.x + it.w / 2 for it in items) + margin
    ymin = min(it.y - it.h / 2 for it in items) - margin
    ymax = max(it.y + it.h / 2 for it in items) + margin
    width = max(xmax - xmin, sum(measure.width(t, _LEGEND_SIZE) for t, _ in legend) + 3 * margin)
    height = ymax - ymin + legend_h

    def xy(x: float, y: float) -> tuple[float, float]:
        """Layout inches (y down) to figure inches (y up)."""
        return x - xmin, ymax - y

    fig = Figure(figsize=(width, height), dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()

    # The legend in several colours: each piece starts where the previous one ends.
    previous: Any = None
    for text, color in legend:
        where = {"xy": (margin, height - legend_h / 2)} if previous is None else \
            {"xy": (1, 0), "xycoords": previous, "va": "bottom"}
        previous = ax.annotate(text, color=color, fontsize=_LEGEND_SIZE, ha="left",
                               annotation_clip=False, **({"va": "center"} | where))

    for k, chain in enumerate(chains):
        src, label, dst = items[chain[0]], items[chain[1]], items[chain[-1]]
        points = [xy(src.x + src.w / 2, out_y[k]), xy(label.x - label.w / 2, label.y),
                  xy(label.x + label.w / 2, label.y)]
        points += [xy(items[i].x, items[i].y) for i in chain[2:-1]]
        points.append(xy(dst.x - dst.w / 2, in_y[k]))
        vertices, codes = _edge_path(points, straight=1)
        ax.add_patch(FancyArrowPatch(
            path=MplPath(vertices, codes), arrowstyle="-|>,head_length=0.5,head_width=0.22",
            mutation_scale=12, shrinkA=0, shrinkB=0, lw=1.0, color="#222222", zorder=1))
        e = eds[k]
        cx, cy = xy(label.x, label.y)
        style = {"fontsize": _LABEL_SIZE, "ha": "center", "parse_math": False, "zorder": 3}
        ax.text(cx, cy + _LABEL_OFFSET, format_number(e.value), color=VALUE_COLOR,
                va="bottom", **style)
        ax.text(cx, cy - _LABEL_OFFSET, format_number(e.grad), color=GRAD_COLOR, va="top",
                **style)

    for it in items:
        b = it.box
        if b is None:
            continue
        x0, y0 = xy(it.x - it.w / 2, it.y + it.h / 2)
        fill = {"input": INPUT_FILL, "param": PARAM_FILL}.get(b.kind, "white")
        ax.add_patch(FancyBboxPatch((x0, y0), it.w, it.h,
                                    boxstyle="round,pad=0,rounding_size=0.04", fc=fill,
                                    ec="black", lw=2.0 if b.is_objective else 1.0, zorder=2))
        lines = _box_lines(b)
        top = it.y - sum(_line_height(size) for _, size, _ in lines) / 2
        for text, size, color in lines:
            cx, cy = xy(it.x, top + _line_height(size) / 2)
            ax.text(cx, cy, text, fontsize=size, color=color, ha="center",
                    va="center_baseline", parse_math=False, zorder=4)
            top += _line_height(size)

    buffer = io.BytesIO()
    # Fixed ids and no date in SVG, no version in PNG: the same figure gives the same bytes.
    with matplotlib.rc_context({"svg.hashsalt": "graphc", "svg.fonttype": "path"}):
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        # Cap the pixels of a figure drawn with a raised max_nodes.
        dpi = min(PNG_DPI, 8000 / max(width, height))
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")
    return buffer.getvalue()


# ----- public entry points --------------------------------------------------------------------


def _render(result: BackpropResult, fmt: str, max_nodes: int, backend: str
            ) -> tuple[bytes, str]:
    if fmt not in FORMATS:
        raise GraphcError(f"cannot draw in format {fmt!r}", expected="'svg' or 'png'",
                          got=repr(fmt))
    if backend not in BACKENDS:
        raise unknown("drawing backend", backend, BACKENDS)
    _check_size(result, max_nodes)
    if backend == "graphviz" or backend == "auto" and shutil.which("dot"):
        try:
            return _run_dot(to_dot(result, max_nodes), fmt), "graphviz"
        except GraphcError:
            if backend == "graphviz":
                raise
    return _render_matplotlib(result, fmt, max_nodes), "matplotlib"


def render(result: BackpropResult, fmt: str = "svg", max_nodes: int = DEFAULT_MAX_NODES,
           backend: str = "auto") -> bytes:
    """Return the figure as SVG or PNG bytes.

    ``backend="auto"`` uses Graphviz when ``dot`` is on PATH (and falls back to matplotlib if
    it fails), ``"graphviz"`` or ``"matplotlib"`` force one. Same result, same bytes.
    """
    return _render(result, fmt, max_nodes, backend)[0]


def draw(result: BackpropResult, path: str | Path, max_nodes: int = DEFAULT_MAX_NODES,
         backend: str = "auto") -> str:
    """Write the figure to ``path`` (.png or .svg, atomically); return the backend that drew
    it, ``"graphviz"`` or ``"matplotlib"``."""
    from graphc.files import write_atomic

    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise GraphcError(f"cannot draw to {str(path)!r}", expected="a path ending in .png or .svg",
                          got=repr(suffix) if suffix else "no suffix")
    data, used = _render(result, suffix[1:], max_nodes, backend)
    write_atomic(path, data)
    return used

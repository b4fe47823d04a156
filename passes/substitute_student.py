"""Replace a teacher by its trained student, behind an accuracy gate.

Whole model (``subgraph=None``): the student S has exactly the teacher T's interface, the same
input names and output names with the same shapes (batch included) and dtypes, and the result
is S itself, its inputs and outputs in T's order: for every input x, ``result(x) = S(x)``.

Named subgraph (``subgraph="backbone"``): the region R of T is every node whose id is
``backbone`` or starts with ``backbone.`` (inputs excluded). Exactly one non-constant value e
enters R and exactly one value o leaves it (read by a node outside R, or a graph output);
constants outside R that R reads are parameters, not entries. S has one input and one output,
of e's and o's types. The result computes ``o = S(e)`` in place of R: S's nodes are copied in
under R's scope (``backbone.<node>``), its output node takes o's name (so a graph output keeps
its name), every user of o reads S's output, and R's nodes and the constants only R read are
removed. Everything outside R is unchanged.

The gate: with held-out ``data = (x, y)``, the accuracy (argmax of the first output against y)
of T and of the result is measured on onnxruntime (or the interpreter), and the pass refuses
when ``100 * acc(result) < 100 * acc(T) - gate``. The report says both accuracies, parameters,
FLOPs and ONNX file size of each, and the latency of the result relative to T on onnxruntime at
the model's batch size.

Refuses: an interface that differs (a missing or extra input or output name, a shape or dtype
that differs; each named), a scope that names no node, a region with several (or no) values
entering or leaving it, a student block whose input or output type differs from the region's,
a region whose output is a graph output that the student block cannot keep the name of, and a
student below the gate (both accuracies in the message).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from graphc.compress.gate import Gate, check_data, check_points, compare
from graphc.errors import GraphcError, UsageError
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.ops.base import TensorType
from graphc.rewrite import PassReport

WHERE = "substitute-student"
# Few rounds: the report shows the order of magnitude of the gain (a student is typically
# many times cheaper), not a benchmark.
LATENCY_ROUNDS = 7
TIMING_SEED = 0


@dataclass(frozen=True)
class Region:
    """A named subgraph: its nodes (topological order), the value entering and the one
    leaving it."""

    scope: str
    nodes: tuple[str, ...]
    entry: Value
    exit: Value


# ----- the interface ------------------------------------------------------------------------


def _describe(names: Sequence[str], types: Sequence[TensorType]) -> str:
    return ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True)) or "none"


def _check_same(kind: str, want: dict[str, TensorType], got: dict[str, TensorType]) -> None:
    """Refuse when the student's inputs or outputs (``kind``) differ from the teacher's."""
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    if missing or extra:
        what = []
        if missing:
            what.append(f"no {kind} {', '.join(map(repr, missing))}")
        if extra:
            what.append(f"an extra {kind} {', '.join(map(repr, extra))}")
        theirs = _describe(list(want), list(want.values()))
        raise GraphcError(f"the student has {' and '.join(what)}", where=f"student {kind}s",
                          expected=f"the teacher's {kind}s {theirs}",
                          got=_describe(list(got), list(got.values())),
                          hint=f"Name the student's {kind}s as the teacher's.")
    for name, ttype in want.items():
        if got[name] != ttype:
            raise GraphcError(f"the student's {kind} {name!r} differs from the teacher's",
                              where=f"student {kind} {name!r}", expected=str(ttype),
                              got=str(got[name]),
                              hint="Build the student at the teacher's batch size and shapes.")


def _inputs(g: Graph) -> dict[str, TensorType]:
    return {name: g.type_of(Value(name)) for name in g.inputs}


def _outputs(g: Graph) -> dict[str, TensorType]:
    return {name: g.type_of(v) for name, v in zip(g.output_names(), g.outputs, strict=True)}


def whole_model(g: Graph, student: Graph) -> Graph:
    """Return a copy of ``student`` with ``g``'s interface order, refusing any difference in
    input or output names, shapes and dtypes.

    >>> from graphc.models import load
    >>> teacher, student = load("teacher").build(), load("student").build()
    >>> whole_model(teacher, student).num_params() == student.num_params()
    True
    """
    _check_same("input", _inputs(g), _inputs(student))
    _check_same("output", _outputs(g), _outputs(student))
    new = student.copy()
    new.inputs = list(g.inputs)
    by_name = dict(zip(student.output_names(), student.outputs, strict=True))
    new.outputs = [by_name[name] for name in g.output_names()]
    # Facts about the teacher's interface (a dynamic batch of an imported model) carry over.
    new.meta = {**student.meta, **g.meta}
    return new


# ----- a named subgraph ---------------------------------------------------------------------


def _scopes(g: Graph) -> list[str]:
    return sorted({n.split(".")[0] for n in g.nx if "." in n and g.op(n) not in (INPUT, CONST)})


def find_region(g: Graph, scope: str) -> Region:
    """Return the region of ``g`` named ``scope``: its nodes, its one entry and one exit.

    >>> from graphc.models import load
    >>> r = find_region(load("cnn").build(), "block3")
    >>> r.entry, r.exit
    (Value(node='pool2', out=0), Value(node='block3.relu', out=0))
    """
    if not isinstance(scope, str) or not scope:
        raise UsageError("the subgraph must be a scope name", where=WHERE,
                         expected="a prefix such as 'backbone' (nodes 'backbone.*')",
                         got=repr(scope))
    prefix = scope + "."
    nodes = tuple(n for n in g.topo()
                  if (n == scope or n.startswith(prefix)) and g.op(n) != INPUT)
    if not any(g.op(n) != CONST for n in nodes):
        from graphc.errors import unknown

        raise unknown("subgraph", scope, _scopes(g), where=f"graph {g.name}")
    inside = set(nodes)
    entries: list[Value] = []
    exits: list[Value] = []
    for node in nodes:
        for v in g.in_values(node):
            if v is not None and v.node not in inside and g.op(v.node) != CONST \
                    and v not in entries:
                entries.append(v)
        for _, dst, d in g.nx.out_edges(node, data=True):
            v = Value(node, d["out"])
            if dst not in inside and v not in exits:
                exits.append(v)
    for v in g.outputs:
        if v.node in inside and v not in exits:
            exits.append(v)
    for kind, values in (("entering", entries), ("leaving", exits)):
        if len(values) != 1:
            raise GraphcError(f"{len(values)} values are {kind} subgraph {scope!r}",
                              where=f"subgraph {scope!r}",
                              expected=f"one value {kind} it",
                              got=", ".join("%" + g.value_name(v) for v in values) or "none",
                              hint="Substitute a region with one input and one output (a "
                                   "backbone, a block without a skip around it).")
    return Region(scope, nodes, entries[0], exits[0])


def _free_names(g: Graph, student: Graph, live: Sequence[str], scope: str,
                out_node: str | None) -> dict[str, str]:
    """Choose the id of each copied student node: ``scope.node``, and ``out_node`` for the
    student's output node; ids already taken get ``_1``, ``_2``, ..."""
    taken = set(g.nx) | ({out_node} if out_node else set())
    names: dict[str, str] = {}
    for node in live:
        if out_node is not None and node == student.outputs[0].node:
            names[node] = out_node
            continue
        base = f"{scope}.{node}"
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names[node] = name
    return names


def splice(g: Graph, region: Region, student: Graph) -> Graph:
    """Return a copy of ``g`` in which ``student`` (one input, one output) computes the
    region's exit from its entry, in place of the region's nodes.

    >>> from graphc.dsl import GraphBuilder
    >>> from graphc.models import load
    >>> b = GraphBuilder("block")
    >>> x = b.input("x", (1, 16, 8, 8))
    >>> _ = b.output(b.op("Concat", x, x, name="twice", axis=1))
    >>> g = load("cnn").build()
    >>> h = splice(g, find_region(g, "block2"), b.build())
    >>> h.op("block2.relu"), h.in_values("block2.relu")
    ('Concat', [Value(node='block1.relu', out=0), Value(node='block1.relu', out=0)])
    """
    if len(student.inputs) != 1 or len(student.outputs) != 1:
        raise GraphcError(f"the student block has {len(student.inputs)} inputs and "
                          f"{len(student.outputs)} outputs", where=f"student {student.name!r}",
                          expected=f"one input and one output, for subgraph {region.scope!r}",
                          got=f"inputs {student.inputs}, outputs {student.output_names()}")
    for kind, value, theirs in (("input", region.entry, Value(student.inputs[0])),
                                ("output", region.exit, student.outputs[0])):
        if g.type_of(value) != student.type_of(theirs):
            raise GraphcError(f"the student block's {kind} differs from the value "
                              f"{'entering' if kind == 'input' else 'leaving'} subgraph "
                              f"{region.scope!r}", where=f"student {kind} "
                              f"%{student.value_name(theirs)}",
                              expected=f"{g.type_of(value)} (%{g.value_name(value)})",
                              got=str(student.type_of(theirs)))
    inside = set(region.nodes)
    users = [(dst, port) for dst, port in g.users(region.exit) if dst not in inside]
    positions = [k for k, v in enumerate(g.outputs) if v == region.exit]
    read = {v.node for n in region.nodes for v in g.in_values(n)
            if v is not None and v.node not in inside and g.op(v.node) == CONST}
    out = student.outputs[0]
    keep_name = (region.exit.out == 0 and out.out == 0
                 and student.op(out.node) not in (INPUT, CONST))
    if positions and not keep_name:
        raise GraphcError(f"the student block cannot keep the name of graph output "
                          f"%{g.value_name(region.exit)}", where=f"subgraph {region.scope!r}",
                          expected="a block whose output is the first output of an op",
                          got=f"%{student.value_name(out)} ({student.op(out.node)})")
    needed = nx.ancestors(student.nx, out.node) | {out.node}
    live = [n for n in student.topo() if n != student.inputs[0] and n in needed]
    new = g.copy()
    new.nx.remove_nodes_from(region.nodes)
    names = _free_names(new, student, live, region.scope,
                        region.exit.node if keep_name else None)
    mapped = {Value(student.inputs[0]): region.entry}

    def copied(v: Value) -> Value:
        return mapped.get(v, Value(names.get(v.node, v.node), v.out))

    for node in live:
        data = student.nx.nodes[node]
        if data["op"] == CONST:
            new.add_const(names[node], data["value"], trainable=data.get("trainable", False),
                          copy=False)
        else:
            new.add_node(data["op"], [None if v is None else copied(v)
                                      for v in student.in_values(node)],
                         dict(data["attrs"]), name=names[node])
    result = copied(out)
    for dst, port in users:
        new.nx.add_edge(result.node, dst, port=port, out=result.out)
    for k in positions:
        new.outputs[k] = result
    new.nx.remove_nodes_from([n for n in read if new.nx.out_degree(n) == 0
                              and Value(n) not in new.outputs])
    return new


# ----- the report ---------------------------------------------------------------------------


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f} KiB" if nbytes < 1024**2 else f"{nbytes / 1024**2:,.1f} MiB"


def _flops(g: Graph) -> int:
    from graphc.shapes import layer_table

    return sum(row.flops for row in layer_table(g))


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.3g}x" if before else "-"


def _timing_feeds(g: Graph, data: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
    """One batch to time both models on: the first held-out samples when there are any (and
    the model has one input), else seeded N(0, 1) values of each input's type."""
    rng = np.random.default_rng(TIMING_SEED)
    feeds = {}
    for name in g.inputs:
        ttype = g.type_of(Value(name))
        if data is not None and len(g.inputs) == 1 and len(data[0]) >= ttype.shape[0] \
                and data[0][:ttype.shape[0]].size == ttype.size:
            feeds[name] = np.asarray(data[0][:ttype.shape[0]], ttype.dtype).reshape(ttype.shape)
        elif np.issubdtype(ttype.dtype, np.floating):
            feeds[name] = rng.standard_normal(ttype.shape).astype(ttype.dtype)
        else:
            feeds[name] = np.zeros(ttype.shape, ttype.dtype)
    return feeds


def _notes(g: Graph, new: Graph, gate: Gate | None, samples: int, backend: str,
           region: Region | None, student: Graph,
           data: tuple[np.ndarray, np.ndarray] | None) -> list[str]:
    from graphc.compress.latency import measure
    from graphc.onnxio.export import to_bytes

    lines = []
    if region is not None:
        ops = sum(1 for n in region.nodes if g.op(n) != CONST)
        lines.append(f"replaced     subgraph {region.scope!r} ({ops} ops, "
                     f"%{g.value_name(region.entry)} -> %{g.value_name(region.exit)}) by "
                     f"{student.name!r} ({len(student.op_nodes())} ops)")
    if gate is None:
        lines.append("accuracy     not measured (no held-out data): the gate did not run")
    else:
        lines.append(f"accuracy     {gate.describe()}, {samples} held-out samples "
                     f"({backend})")
    before, after = g.num_params(), new.num_params()
    lines.append(f"parameters   teacher {before:,} -> student {after:,} "
                 f"({_ratio(after, before)})")
    flops_before, flops_after = _flops(g), _flops(new)
    lines.append(f"FLOPs        teacher {flops_before:,} -> student {flops_after:,} "
                 f"({_ratio(flops_after, flops_before)})")
    files = [to_bytes(g), to_bytes(new)]
    lines.append(f"file size    teacher {_size(len(files[0]))} -> student "
                 f"{_size(len(files[1]))} ({_ratio(len(files[1]), len(files[0]))})")
    feeds = _timing_feeds(g, data)
    batch = g.type_of(Value(g.inputs[0])).shape[0] if g.inputs else 1
    timing = measure(files, feeds, names=["teacher", "student"], rounds=LATENCY_ROUNDS)[1]
    lines.append(f"latency      student {timing.ratio:.3g}x teacher at batch {batch} "
                 f"(onnxruntime, median of {LATENCY_ROUNDS} interleaved rounds, 1 thread)")
    return lines


# ----- the pass -----------------------------------------------------------------------------


def substitute_student(g: Graph, *, student: Graph,
                       data: tuple[np.ndarray, np.ndarray] | None = None, gate: float = 1.0,
                       subgraph: str | None = None, backend: str = "onnxruntime",
                       report: PassReport | None = None) -> Graph:
    """Replace the teacher ``g`` (or its region ``subgraph``) by ``student``; with held-out
    ``data = (x, y)``, refuse a result more than ``gate`` points less accurate than ``g``.

    >>> from graphc.models import load
    >>> teacher, student = load("teacher").build(), load("student").build()
    >>> new = substitute_student(teacher, student=student)
    >>> new.name, new.inputs, new.output_names()
    ('student', ['x'], ['logits'])
    """
    points = check_points(gate, WHERE)
    if not isinstance(student, Graph):
        raise UsageError("substitute-student needs the student as a graph", where=WHERE,
                         expected="a graphc Graph (student=...)", got=type(student).__name__)
    if data is not None:
        data = check_data(data, WHERE)
    student.verify()
    region = None
    if subgraph is None:
        new = whole_model(g, student)
    else:
        region = find_region(g, subgraph)
        new = splice(g, region, student)
    result = None
    if data is not None:
        result = compare(g, new, data, points=points, backend=backend,
                         names=("teacher", "student"), where="accuracy gate")
        result.require("accuracy gate", hint="Train the student longer (distill it from the "
                       "teacher), or allow more points with --gate.")
    if report is not None:
        report.rewrites = 1
        report.notes += _notes(g, new, result, 0 if data is None else len(data[1]), backend,
                               region, student, data)
    return new

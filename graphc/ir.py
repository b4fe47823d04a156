"""graphc's IR: a ``Graph`` over ``networkx.MultiDiGraph``.

A node is one op application (``op`` is the ONNX op_type verbatim, ``attrs`` the ONNX attribute
names verbatim); graph inputs are ``Input`` nodes and constants are ``Const`` nodes holding a
numpy ``value``. An edge is a value flowing into an input port: edge data ``port`` (the consumer's
input index) and ``out`` (the producer's output index). It is a multigraph because ``Mul(x, x)``
has two parallel edges.

>>> g = Graph("demo")
>>> x = g.add_input("x", (2,))
>>> y = g.add_node("Relu", [x])
>>> g.outputs.append(y)
>>> print(g)
graph demo
  %x = Input # (2,) f32
  %relu = Relu(%x) # (2,) f32
  return %relu
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from graphc import ops
from graphc.errors import GraphcError, VerifyError
from graphc.ops.base import TensorType, type_of

INPUT = "Input"
CONST = "Const"


class Value(NamedTuple):
    """One output of one node: ``(node id, output index)``."""

    node: str
    out: int = 0


def _fmt_attr(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join(_fmt_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


class Graph:
    """A dataflow graph of op applications with ordered inputs and outputs."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.nx = nx.MultiDiGraph()
        self.inputs: list[str] = []
        self.outputs: list[Value] = []
        # Facts about the graph as a whole, e.g. "dynamic_batch" for imported models.
        self.meta: dict[str, Any] = {}
        self._next: dict[str, int] = {}

    # ----- construction -------------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """Return ``base`` if no node has that id, else ``base_1``, ``base_2``, ..."""
        if base not in self.nx:
            return base
        k = self._next.get(base, 1)
        while f"{base}_{k}" in self.nx:
            k += 1
        self._next[base] = k + 1
        return f"{base}_{k}"

    def add_input(self, name: str, shape: Sequence[int], dtype: Any = np.float32) -> Value:
        """Add a graph input called ``name`` (the name must be free)."""
        if name in self.nx:
            raise GraphcError(f"graph {self.name!r} already has a node called {name!r}",
                              hint="Give each input a distinct name.")
        ttype = TensorType(tuple(int(d) for d in shape), np.dtype(dtype))
        self.nx.add_node(name, op=INPUT, attrs={}, types=[ttype])
        self.inputs.append(name)
        return Value(name)

    def add_const(self, name: str, value: Any, trainable: bool = False,
                  dtype: Any = None, copy: bool = True) -> Value:
        """Add a constant; ``name`` is made unique. Its array is made read-only and shared.

        ``copy=False`` hands over an array nobody else holds, without copying it.
        """
        array = np.array(value, dtype=dtype, copy=True if copy else None)
        array.flags.writeable = False
        node = self.fresh_name(name)
        self.nx.add_node(node, op=CONST, attrs={}, types=[type_of(array)], value=array,
                         trainable=bool(trainable))
        return Value(node)

    def const_to_input(self, name: str) -> np.ndarray:
        """Turn the constant ``name`` into a graph input of its type; return its value."""
        data = self.nx.nodes[name]
        if data["op"] != CONST:
            raise GraphcError(f"{name!r} is not a constant", where=self.format_node(name),
                              expected="a Const node", got=data["op"])
        value = data.pop("value")
        data.pop("trainable", None)
        data["op"] = INPUT
        self.inputs.append(name)
        return value

    def add_node(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None,
                 name: str | None = None) -> Value:
        """Add an application of ``op`` to ``inputs`` (``None`` for an absent optional input).

        Attributes are checked and the output types inferred now, so a bad shape is reported
        where the node is written. Returns the node's first output.
        """
        opdef = ops.get(op)
        node = self.fresh_name(name or op.lower())
        self.nx.add_node(node, op=op, attrs={}, types=[])
        for port, value in enumerate(inputs):
            if value is not None:
                self.nx.add_edge(value.node, node, port=port, out=value.out)
        try:
            self.nx.nodes[node]["attrs"] = opdef.check_attrs(attrs or {})
            self._check_arity(node, opdef)
            self.nx.nodes[node]["types"] = self.infer(node)
        except GraphcError as err:
            where = self.format_node(node, types=False)
            self.nx.remove_node(node)
            raise err.located(where) from None
        return Value(node)

    # ----- queries ------------------------------------------------------------------------

    def op(self, node: str) -> str:
        return self.nx.nodes[node]["op"]

    def attrs(self, node: str) -> dict[str, Any]:
        return self.nx.nodes[node]["attrs"]

    def types(self, node: str) -> list[TensorType]:
        return self.nx.nodes[node]["types"]

    def type_of(self, value: Value) -> TensorType:
        return self.nx.nodes[value.node]["types"][value.out]

    def const_value(self, value: Value | None) -> np.ndarray | None:
        """Return the array of a ``Const`` value, or ``None`` for anything else."""
        if value is None:
            return None
        data = self.nx.nodes[value.node]
        return data.get("value") if data["op"] == CONST else None

    def in_values(self, node: str) -> list[Value | None]:
        """Return the values feeding ``node`` in port order (``None`` for absent ports)."""
        by_port = {d["port"]: Value(src, d["out"])
                   for src, keyed in self.nx.pred[node].items() for d in keyed.values()}
        if not by_port:
            return []
        return [by_port.get(p) for p in range(max(by_port) + 1)]

    def users(self, value: Value) -> list[tuple[str, int]]:
        """Return ``(node, port)`` for every use of ``value`` (graph outputs not included)."""
        return [(dst, d["port"]) for _, dst, d in self.nx.out_edges(value.node, data=True)
                if d["out"] == value.out]

    def value_name(self, value: Value) -> str:
        """Return the readable name of a value: the node id, or ``node.output`` for out > 0
        (``node.outputs_<k>`` for the k-th output of a variadic one, as Split's)."""
        if value.out == 0:
            return value.node
        outputs = ops.get(self.op(value.node)).outputs
        if outputs[-1].endswith("*") and value.out >= len(outputs) - 1:
            return f"{value.node}.{outputs[-1].rstrip('*')}_{value.out}"
        return f"{value.node}.{outputs[value.out].rstrip('?')}"

    def output_names(self) -> list[str]:
        """Return the names of the outputs, as the ONNX file has them.

        An output that is an input or a constant, or that repeats an earlier output, is named
        ``<value>_out`` (the export adds an Identity node for it).
        """
        names: list[str] = []
        for v in self.outputs:
            name = self.value_name(v)
            if self.op(v.node) in (INPUT, CONST) or name in names:
                base, k = name + "_out", 1
                name = base
                while name in names or name in self.nx:
                    name, k = f"{base}_{k}", k + 1
            names.append(name)
        return names

    def topo(self) -> list[str]:
        """Return the node ids in a deterministic topological order.

        Inputs come first; then a depth-first walk from the outputs (inputs of a node in port
        order), so each constant is listed just before its first user; nodes no output needs
        come last. A cycle raises VerifyError.
        """
        order: list[str] = list(self.inputs)
        state = dict.fromkeys(order, 2)  # 1: on the DFS stack, 2: emitted
        roots = [v.node for v in self.outputs] + list(self.nx.nodes)
        for root in roots:
            if root in state:
                continue
            stack = [(root, iter(self._preds(root)))]
            state[root] = 1
            while stack:
                node, it = stack[-1]
                for pred in it:
                    if state.get(pred) == 1:
                        raise VerifyError("the graph has a cycle", where=f"graph {self.name}",
                                          expected="an acyclic graph", got=f"through {pred!r}")
                    if pred not in state:
                        state[pred] = 1
                        stack.append((pred, iter(self._preds(pred))))
                        break
                else:
                    stack.pop()
                    state[node] = 2
                    order.append(node)
        return order

    def _preds(self, node: str) -> list[str]:
        return [v.node for v in self.in_values(node) if v is not None]

    def params(self) -> list[str]:
        """Return the ids of trainable constants, in topological order."""
        return [n for n in self.topo() if self.nx.nodes[n].get("trainable")]

    def num_params(self) -> int:
        return sum(self.nx.nodes[n]["value"].size for n in self.params())

    def op_nodes(self) -> list[str]:
        """Return the ids of op applications (not inputs or constants) in topological order."""
        return [n for n in self.topo() if self.op(n) not in (INPUT, CONST)]

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    # ----- rewriting ----------------------------------------------------------------------

    def copy(self, name: str | None = None) -> Graph:
        """Return an independent copy (constant arrays are read-only and shared)."""
        g = Graph(name or self.name)
        for node, data in self.nx.nodes(data=True):
            g.nx.add_node(node, **{**data, "attrs": dict(data["attrs"]),
                                   "types": list(data["types"])})
        g.nx.add_edges_from((u, v, k, dict(d)) for u, v, k, d in self.nx.edges(keys=True,
                                                                              data=True))
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.meta = dict(self.meta)
        g._next = dict(self._next)
        return g

    def rename(self, names: Mapping[str, str]) -> None:
        """Give nodes new ids (``old -> new``); edges, inputs and outputs follow."""
        nx.relabel_nodes(self.nx, dict(names), copy=False)
        self.inputs = [names.get(n, n) for n in self.inputs]
        self.outputs = [Value(names.get(v.node, v.node), v.out) for v in self.outputs]

    def replace_all_uses(self, old: Value, new: Value, keep: Iterable[str] = ()) -> None:
        """Make every user of ``old`` (and the graph outputs) use ``new`` instead, except the
        nodes in ``keep`` (those that compute ``new`` from ``old``, when ``new`` is inserted
        after ``old``)."""
        keep = set(keep)
        uses = [(dst, key, d) for _, dst, key, d in self.nx.out_edges(old.node, keys=True,
                                                                       data=True)
                if d["out"] == old.out and dst not in keep]
        for dst, key, d in uses:
            self.nx.remove_edge(old.node, dst, key)
            self.nx.add_edge(new.node, dst, port=d["port"], out=new.out)
        self.outputs = [new if v == old else v for v in self.outputs]

    def live(self) -> set[str]:
        """Return the ids of the inputs and of the nodes some output depends on."""
        live: set[str] = set(self.inputs)
        for v in self.outputs:
            live.add(v.node)
            live |= nx.ancestors(self.nx, v.node)
        return live

    def remove_dead(self) -> list[str]:
        """Remove nodes that no output depends on (inputs stay); return the removed ids."""
        live = self.live()
        dead = [n for n in self.nx.nodes if n not in live]
        self.nx.remove_nodes_from(dead)
        return dead

    def infer(self, node: str) -> list[TensorType]:
        """Return the output types of ``node`` from its op's shape rule and its inputs' types."""
        data = self.nx.nodes[node]
        if data["op"] in (INPUT, CONST):
            return data["types"]
        opdef = ops.get(data["op"])
        values = self.in_values(node)
        in_types = [None if v is None else self.type_of(v) for v in values]
        consts = [self.const_value(v) for v in values]
        full = opdef.full_attrs(data["attrs"])
        return opdef.infer(in_types, full, consts)

    def view(self, node: str) -> ops.NodeView:
        """Return what a lowering or FLOP count sees of ``node`` (all outputs named)."""
        data = self.nx.nodes[node]
        opdef = ops.get(data["op"])
        values = self.in_values(node)
        return ops.NodeView(
            name=node,
            inputs=["" if v is None else self.value_name(v) for v in values],
            outputs=[self.value_name(Value(node, k)) for k in range(len(data["types"]))],
            attrs=data["attrs"],
            full_attrs=opdef.full_attrs(data["attrs"]),
            in_types=[None if v is None else self.type_of(v) for v in values],
            out_types=data["types"],
            consts=[self.const_value(v) for v in values],
        )

    # ----- checking -----------------------------------------------------------------------

    def _check_arity(self, node: str, opdef: ops.OpDef) -> None:
        values = self.in_values(node)
        ports = [d["port"] for keyed in self.nx.pred[node].values() for d in keyed.values()]
        if len(ports) != len(set(ports)):
            raise VerifyError("two values feed the same input port",
                              expected="one value per port", got=f"ports {sorted(ports)}")
        top = opdef.max_inputs
        if top is not None and len(values) > top:
            raise VerifyError(f"{opdef.name} takes at most {top} inputs",
                              expected=f"ports 0..{top - 1}", got=f"port {len(values) - 1}")
        for port in range(opdef.min_inputs):
            if port >= len(values) or values[port] is None:
                raise VerifyError(f"{opdef.name} input {port} ({opdef.input_name(port)}) "
                                  "is missing", expected="a value", got="nothing")
        if opdef.variadic:
            if None in values:
                raise VerifyError(f"{opdef.name} has a gap in its variadic inputs",
                                  expected="ports 0..n-1", got=f"ports {sorted(ports)}")
        for v in values:
            if v is not None and v.out >= len(self.types(v.node)):
                raise VerifyError(f"input uses output {v.out} of {v.node!r}",
                                  expected=f"an output index < {len(self.types(v.node))}",
                                  got=v.out)

    def verify(self) -> None:
        """Check every IR invariant; raise VerifyError naming the first node that breaks one.

        A valid graph is acyclic; its inputs are ``Input`` nodes and its outputs exist; every
        node's op is known, its attributes valid, its ports 0..n-1 with the required ones
        present, and its stored types equal to what its shape rule infers.
        """
        if not nx.is_directed_acyclic_graph(self.nx):
            cycle = " -> ".join(u for u, _, *_ in nx.find_cycle(self.nx))
            raise VerifyError("the graph has a cycle", where=f"graph {self.name}",
                              expected="an acyclic graph", got=cycle)
        for name in self.inputs:
            if name not in self.nx or self.op(name) != INPUT:
                raise VerifyError(f"graph input {name!r} is not an Input node",
                                  where=f"graph {self.name}")
        if not self.outputs:
            raise VerifyError("the graph has no outputs", where=f"graph {self.name}",
                              hint="Mark at least one value as an output.")
        for v in self.outputs:
            if v.node not in self.nx or v.out >= len(self.types(v.node)):
                raise VerifyError(f"graph output %{v.node} (output {v.out}) does not exist",
                                  where=f"graph {self.name}", expected="a value of the graph",
                                  got=f"%{v.node}", hint="Mark an existing value as output.")
        for node in self.topo():
            self._verify_node(node)

    def _verify_node(self, node: str) -> None:
        data = self.nx.nodes[node]
        try:
            if data["op"] == INPUT:
                if node not in self.inputs:
                    raise VerifyError("Input node is not listed in graph.inputs")
                return
            if data["op"] == CONST:
                if not isinstance(data.get("value"), np.ndarray):
                    raise VerifyError("Const node has no numpy value")
                if type_of(data["value"]) != data["types"][0]:
                    raise VerifyError("Const type does not match its value",
                                      expected=type_of(data["value"]), got=data["types"][0])
                return
            opdef = ops.get(data["op"])
            opdef.check_attrs(data["attrs"])
            self._check_arity(node, opdef)
            inferred = self.infer(node)
            if list(inferred) != list(data["types"]):
                raise VerifyError("stored output types differ from the shape rule",
                                  expected=", ".join(map(str, inferred)),
                                  got=", ".join(map(str, data["types"])),
                                  hint="Re-infer types after rewriting a node's inputs.")
        except GraphcError as err:
            raise err.located(self.format_node(node)) from None

    # ----- printing -----------------------------------------------------------------------

    def format_node(self, node: str, types: bool = True) -> str:
        """Return the one-line text of ``node``, as used in ``graphc show`` and in errors.

        e.g. ``%conv = Conv(%x, %conv.weight) {strides=[2,2]} # (1,8,4,4) f32``.
        """
        data = self.nx.nodes[node]
        op = data["op"]
        n_out = max(1, len(data["types"]))
        lhs = ", ".join("%" + self.value_name(Value(node, k)) if op not in (INPUT, CONST)
                        else "%" + node for k in range(n_out))
        text = f"{lhs} = {op}"
        if op == CONST:
            value = data["value"]
            if value.size <= 4:
                text += " {value=" + np.array2string(value, separator=",") + "}"
            if data.get("trainable"):
                text += " [param]"
        elif op != INPUT:
            args = ", ".join("_" if v is None else "%" + self.value_name(v)
                             for v in self.in_values(node))
            text += f"({args})"
            if data["attrs"]:
                text += " {" + ", ".join(f"{k}={_fmt_attr(v)}"
                                         for k, v in data["attrs"].items()) + "}"
        if types and data["types"]:
            text += " # " + ", ".join(str(t) for t in data["types"])
        return text

    def format(self, nodes: Iterable[str] | None = None) -> str:
        """Return the whole graph as text: one line per node, then the outputs."""
        lines = [f"graph {self.name}"]
        lines += ["  " + self.format_node(n) for n in (nodes or self.topo())]
        lines.append("  return " + ", ".join("%" + n for n in self.output_names()))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self)} nodes, {self.num_params()} parameters>"

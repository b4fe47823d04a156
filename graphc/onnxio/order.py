"""The one order of an exported graph's nodes and initializers.

graphc lists a graph's nodes depth-first from its outputs, the inputs of a node in port order,
each constant just before its first user (``Graph.topo``). An op lowered to several ONNX nodes
emits them in its own order, and its helper constants after the graph's. ``canonical_order``
puts the lowered ONNX graph in the order ``Graph.topo`` gives the same graph once imported, and
drops initializers no node reads (a Pad's ``pads`` when the pad became Slice + Concat). So
export -> import -> export gives the bytes of the first export.
"""

from __future__ import annotations

import onnx


def canonical_order(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes and initializers in place (see the module's text)."""
    producer = {out: k for k, node in enumerate(graph.node) for out in node.output if out}
    constants = {tensor.name: k for k, tensor in enumerate(graph.initializer)}
    inputs = {value.name for value in graph.input}
    done: set[tuple[str, object]] = set()
    nodes: list[int] = []
    used: list[int] = []

    def visit(root: int) -> None:
        key = ("node", root)
        if key in done:
            return
        done.add(key)
        stack = [(root, iter(graph.node[root].input))]
        while stack:
            index, names = stack[-1]
            for name in names:
                if not name or name in inputs:
                    continue
                if name in constants and name not in producer:
                    if ("const", name) not in done:
                        done.add(("const", name))
                        used.append(constants[name])
                    continue
                k = producer.get(name)
                if k is not None and ("node", k) not in done:
                    done.add(("node", k))
                    stack.append((k, iter(graph.node[k].input)))
                    break
            else:
                stack.pop()
                nodes.append(index)

    for output in graph.output:
        if output.name in producer:
            visit(producer[output.name])
        elif output.name in constants and ("const", output.name) not in done:
            done.add(("const", output.name))
            used.append(constants[output.name])
    for k in range(len(graph.node)):
        visit(k)
    if nodes != list(range(len(graph.node))):
        _permute(graph.node, nodes, onnx.NodeProto)
    if used != list(range(len(graph.initializer))):
        _permute(graph.initializer, used, onnx.TensorProto)


def _permute(field, order: list[int], kind: type) -> None:
    """Keep the entries ``order`` of a repeated message field, in that order (protobuf's
    repeated fields cannot be permuted in place: the kept entries are copied once)."""
    kept = []
    for k in order:
        message = kind()
        message.CopyFrom(field[k])
        kept.append(message)
    del field[:]
    field.extend(kept)

"""Reading graphc's own multi-node lowerings back as the ops they lower (the importer's part).

Three of graphc's ops have no ONNX op at some opsets, and the export writes each as several
nodes: ``Heaviside`` as ``Cast(GreaterOrEqual(X, t))``, ``Gelu`` below opset 20 (Erf or Tanh
arithmetic) and ``GroupNormalization`` below 21 (Reshape, InstanceNormalization, Reshape, Mul,
Add). ``RECOMPOSED`` names them by the op_type of the last node, whose output is the op's. A
candidate is a last node ``y`` and the nodes before it whose outputs are named ``y_<step>``
and used by nothing else (``_find_lowered``); it becomes the op only if the op's own lowering,
run on it at the file's opset, writes exactly those nodes, names, attributes and constants
included (``_recompose``). Otherwise the nodes import as they are: PyTorch's
``(x >= t).float()`` stays GreaterOrEqual + Cast. (SpaceToDepth in CRD mode below opset 28,
written as Reshape, Transpose, Reshape, imports as those ops, which compute the same.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from graphc import ops
from graphc.errors import GraphcError
from graphc.onnxio.import_state import ImportState
from graphc.onnxio.load import DEFAULT_DOMAINS
from graphc.ops.base import LowerCtx

# graphc's ops whose lowering writes several ONNX nodes, by the op_type of the last one (whose
# output is the op's): read back as the op when the nodes are exactly what its lowering writes.
RECOMPOSED = {"Cast": "Heaviside", "Mul": "Gelu", "Add": "GroupNormalization"}


class Recomposer(ImportState):
    """The importer's recomposition steps, a base of ``graphc.onnxio.importer._Importer``:
    they read the import's state (``ImportState``) and call the importer's ``_add``,
    ``_value``, ``_const_array`` and ``_pending_array``."""

    def _find_lowered(self, order: list[onnx.NodeProto]) -> None:
        """Find what may be graphc's lowering of one op (``RECOMPOSED``): a last node ``y`` and
        the nodes before it whose outputs are named ``y_<step>`` and used only by each other
        and ``y``. Outer ones first; a node belongs to one at most."""
        position = {id(node): k for k, node in enumerate(order)}
        for last in reversed(order):
            if (last.op_type not in RECOMPOSED or last.domain not in DEFAULT_DOMAINS
                    or len(last.output) != 1 or not last.output[0] or id(last) in self.held
                    or id(last) in self.lowered):
                continue
            prefix = f"{last.output[0]}_"
            steps: dict[int, onnx.NodeProto] = {}
            todo = [last]
            while todo:
                for name in todo.pop().input:
                    step = self.producers.get(name, (None, 0))[0]
                    if name.startswith(prefix) and step is not None and id(step) not in steps:
                        steps[id(step)] = step
                        todo.append(step)
            inside = {id(last), *steps}
            if not steps or inside & (self.held | set(self.lowered)) or any(
                    out in self.output_names or any(
                        id(user) not in inside for user, _ in self.consumers.get(out, []))
                    for step in steps.values() for out in step.output if out):
                continue
            self.lowered[id(last)] = sorted(steps.values(), key=lambda n: position[id(n)])
            self.held |= set(steps)

    def _recompose(self, last: onnx.NodeProto, steps: list[onnx.NodeProto], where: str) -> bool:
        """Add the op ``RECOMPOSED`` names for ``last`` in place of ``steps`` + ``last`` if they
        are exactly what its lowering writes at this opset, names, attributes and constants
        included; return whether it did (if not, the caller imports the nodes as they are)."""
        op, y = RECOMPOSED[last.op_type], last.output[0]
        nodes = [*steps, last]
        made = {out for node in nodes for out in node.output}
        # The op's inputs: the values the nodes read that they do not make, first use first,
        # except constants named like the lowering's (<y>.c, <y>_shape).
        inputs: list[str] = []
        for node in nodes:
            for name in node.input:
                if name and name not in made and name not in inputs and not (
                        name in self.pending and name.startswith((f"{y}.", f"{y}_"))):
                    inputs.append(name)
        attrs = self._lowered_attrs(op, nodes)
        if attrs is None or len(inputs) != len(ops.get(op).inputs) or y in self.g.nx:
            return False
        try:
            value = self._add(op, [self._value(n, where) for n in inputs], attrs, y, where)
        except GraphcError:
            return False
        ctx = LowerCtx(self.opset)
        ctx.reserve([*inputs, y])
        view = self.g.view(value.node)
        try:
            ops.get(op).lower(ctx, view)
        except GraphcError:
            ctx.nodes = []
        written = {node.output[0]: node for node in nodes}
        same = len(ctx.nodes) == len(nodes) and all(
            written.get(node.output[0]) == node for node in ctx.nodes)
        ids = {id(node) for node in nodes}
        for name, array in ctx.initializers if same else ():
            data = self._pending_array(name) if name in self.pending else None
            same = (data is not None and name not in self.output_names
                    and data.dtype == array.dtype and data.shape == array.shape
                    and data.tobytes() == array.tobytes()
                    and all(id(user) in ids for user, _ in self.consumers.get(name, [])))
            if not same:
                break
        if not same:
            self.g.nx.remove_node(value.node)
            del self.values[y]
        return same

    def _lowered_attrs(self, op: str, nodes: list[onnx.NodeProto]) -> dict[str, Any] | None:
        """Return the attributes of ``op`` that its lowering wrote as ``nodes``, or ``None``."""
        if op == "Gelu":
            return {"approximate": "tanh"} if any(n.op_type == "Tanh" for n in nodes) else {}
        if op == "Heaviside":
            compare = nodes[0]
            threshold = (self._const_array(compare.input[1])
                         if compare.op_type == "GreaterOrEqual" and len(compare.input) == 2
                         else None)
            if threshold is None or threshold.size != 1:
                return None
            value = float(np.asarray(threshold).reshape(()))
            # Heaviside holds its threshold as a float32 attribute: only an exact one is kept.
            if float(np.float32(value)) != value:
                return None
            return {"threshold": value} if value != 0.0 else {}
        # GroupNormalization: Reshape(X, [0, G, -1]) -> InstanceNormalization {epsilon} -> ...
        norm = next((n for n in nodes if n.op_type == "InstanceNormalization"), None)
        grouped = self.producers.get(norm.input[0], (None, 0))[0] if norm else None
        shape = (self._const_array(grouped.input[1])
                 if grouped is not None and grouped.op_type == "Reshape"
                 and len(grouped.input) == 2 else None)
        if shape is None or shape.shape != (3,):
            return None
        epsilon = next((float(a.f) for a in norm.attribute if a.name == "epsilon"), 1e-5)
        return {"epsilon": epsilon, "num_groups": int(shape[1])}

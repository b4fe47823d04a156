"""Folding shape arithmetic to constants at import (the importer's part).

graphc's shapes are static, so ``Shape`` and ``Size`` of a value are constants, and so is
the arithmetic PyTorch's exporter writes on them (``x.view(x.size(0), -1)`` is Shape -> Gather
-> Unsqueeze -> Concat -> Reshape): a node whose inputs are all constants, one of them so
folded, is evaluated by its numpy reference and becomes a constant (``_fold_shape``). Each
folded constant keeps the list of nodes folded into it for ``graphc compile -v``
(``_fold_note``). A folded Reshape shape whose first entry is the batch keeps the batch free
(``_reshape_batch``), so that a dynamic-batch file stays one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from graphc.interpret import run_node
from graphc.ir import Value
from graphc.onnxio.import_state import ImportState

# Shape arithmetic folded at import makes shapes, indices and sizes: results larger than this
# are tensors computed from a shape, left to the fold-constants pass (which weighs file size).
MAX_SHAPE_FOLD = 4096


class ShapeFolder(ImportState):
    """The importer's shape folding, a base of ``graphc.onnxio.importer._Importer``: it reads
    the import's state (``ImportState``) and calls the importer's ``_add``, ``_value``,
    ``_const``, ``_const_array`` and ``_fresh``."""

    def _fold_shape(self, node: onnx.NodeProto, inputs: list[Value | None],
                    attrs: dict[str, Any], where: str) -> bool:
        """Make ``Shape``/``Size`` of a value, and a node of shape arithmetic (all inputs
        constant, one folded here), a constant; return whether it did.

        The node is added first, so that its shape rule checks it, then evaluated by its
        reference and replaced by its results; constants only it used go back to pending.
        """
        op = node.op_type
        consts = [v is None or self.g.const_value(v) is not None for v in inputs]
        if any(out in self.output_names for out in node.output) or not inputs or (
                op not in ("Shape", "Size") and not (all(consts) and any(
                    v is not None and v.node in self.folded for v in inputs))):
            return False
        value = self._add(op, inputs, attrs, node.output[0], where)
        if sum(t.size for t in self.g.types(value.node)) > MAX_SHAPE_FOLD:
            return True  # a tensor made from a shape (Expand of a scalar), not a shape: kept
        args = [None if v is None else self.g.const_value(v) for v in inputs]
        if op in ("Shape", "Size"):
            # Only the static type matters: a zero-stride view stands for the data.
            t = self.g.type_of(inputs[0])
            args[0] = np.broadcast_to(np.zeros((), t.dtype), t.shape)
        results = run_node(self.g, value.node, args)
        self.g.nx.remove_node(value.node)
        del self.values[node.output[0]]
        steps: list[str] = []
        for v in inputs:
            if v is None:
                continue
            steps += [s for s in self.folded.get(v.node, []) if s not in steps]
            data = self.g.nx.nodes.get(v.node, {})
            if data.get("op") == "Const" and not self.g.nx.out_degree(v.node):
                self.pending[v.node] = (data["value"], bool(data.get("trainable")))
                self.g.nx.remove_node(v.node)
                del self.values[v.node]
        steps.append(f"{op} {node.name!r}" if node.name else op)
        for name, array in zip(node.output, results, strict=False):
            if name:
                self._const(name, np.asarray(array), False, where)
                self.folded[name] = steps
        return True

    def _reshape_batch(self, node: onnx.NodeProto, attrs: dict[str, Any],
                       where: str) -> dict[int, Value | None]:
        """Keep a symbolic batch through ``x.view(x.size(0), -1)``: a folded Reshape shape
        whose first entry is the batch, for data whose first dimension is the batch, gets -1
        there (or 0, copying the data's dimension, when another entry is -1), so the file runs
        at any batch size. -1 first: onnxruntime runs ShuffleNet's channel shuffle (Reshape,
        Transpose, Reshape) 4-8% slower at batch 32 with 0 there than with -1."""
        name = node.input[1]
        shape = self._const_array(name)
        data = self.g.type_of(self._value(node.input[0], where))
        if attrs.get("allowzero", 0) or shape is None or shape.ndim != 1 or not shape.size or (
                int(shape[0]) != self.batch or not data.shape or data.shape[0] != self.batch):
            return {}
        kept = shape.copy()
        kept[0] = 0 if -1 in shape or (shape[1:] <= 0).any() else -1
        sole = len(self.consumers.get(name, [])) == 1 and name not in self.output_names
        if sole and name in self.pending:
            self.pending.pop(name)
        elif sole:
            self.g.nx.remove_node(self.values.pop(name).node)
        else:
            name = self._fresh(f"{name}_batch")
        value = self._const(name, kept, False, where)
        self.folded[name] = self.folded[node.input[1]]
        self.batch_kept[name] = f"Reshape {node.name or node.output[0]!r}"
        return {1: value}

    def _fold_note(self, name: str, steps: list[str]) -> str:
        array = self.g.const_value(self.values[name])
        if name in self.batch_kept:
            batch = f" ({int(array[0])}: {self.batch_kept[name]} keeps the batch)"
        else:
            batch = f" at batch {self.batch}" if self.dynamic_batch else ""
        return (f"folded {' -> '.join(steps)} into the constant {name!r} = "
                f"{array.tolist()}{batch}; graphc's shapes are static")

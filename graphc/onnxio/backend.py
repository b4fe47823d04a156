"""graphc as an ONNX backend: ``onnx.backend.base.Backend`` over graphc's numpy interpreter.

Any tool that drives ONNX backends (ONNX's own backend test runner, for one) can run models on
graphc: ``prepare(model)`` imports the model once and returns a ``BackendRep`` whose
``run(inputs)`` returns the outputs in the graph's order; ``run_model`` and ``run_node`` do both
in one call; ``is_compatible`` says whether graphc has every op of a model. The device is
``"CPU"``.

The model is imported as ``graphc.run_onnx`` imports it: a model older than opset 13 is
upgraded first, and the graph is specialized on the values fed where graphc needs them (the
batch size of a symbolic first dimension, and graph inputs that an op needs as constants, such
as Reshape's ``shape``; see ``graphc.onnxio.bind``). Such a model is imported again for each
run with other values; the others are imported once, in ``prepare``.

>>> import numpy as np
>>> from onnx import TensorProto, helper
>>> node = helper.make_node("Relu", ["x"], ["y"])
>>> graph = helper.make_graph(
...     [node], "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> rep = GraphcBackend.prepare(model)
>>> rep.run([np.array([-1.0, 0.5, 2.0], np.float32)])
Outputs(y=array([0. , 0.5, 2. ], dtype=float32))
>>> GraphcBackend.supports_device("CPU"), GraphcBackend.supports_device("CUDA")
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.onnxio.bind import graph_inputs
from graphc.onnxio.importer import _prepare, specialize, supported_ops
from graphc.onnxio.load import DEFAULT_DOMAINS

DEVICE = "CPU"


class GraphcRep(BackendRep):
    """A prepared model: ``run(inputs)`` returns its outputs, in the graph's order."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.input_names = list(graph_inputs(model))
        self.output_names = [o.name for o in model.graph.output]
        # The import is checked here, so that prepare reports what graphc refuses. A model
        # whose import depends on the values fed (a symbolic dimension, an input bound to its
        # value) is imported again for each run; the others only here.
        graph: Graph | None = None
        try:
            graph, _ = specialize(model, {})
        except GraphcError as err:
            if getattr(err, "bind_input", None) is None:
                raise
        self.graph = None if _depends_on_feeds(model) else graph

    def feeds(self, inputs: Any) -> dict[str, Any]:
        """Return ``inputs`` (a list in the graph's input order, one array, or a dict) by name."""
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if isinstance(inputs, np.ndarray) or np.isscalar(inputs):
            inputs = [inputs]
        values = list(inputs)
        if len(values) != len(self.input_names):
            raise UsageError("the number of inputs does not match the model",
                             where=f"ONNX graph {self.model.graph.name!r}",
                             expected=f"{len(self.input_names)} ({', '.join(self.input_names)})",
                             got=len(values))
        return dict(zip(self.input_names, values, strict=True))

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run the model on ``inputs``; return the outputs as a named tuple, in order."""
        feeds = self.feeds(inputs)
        if self.graph is not None:
            results = run(self.graph, feeds)
        else:
            g, rest = specialize(self.model, feeds)
            results = run(g, rest)
        return namedtupledict("Outputs", self.output_names)(*results.values())


def _depends_on_feeds(model: onnx.ModelProto) -> bool:
    """Return whether the import depends on the values fed: a symbolic input dimension."""
    for info in graph_inputs(model).values():
        ttype = info.type.tensor_type
        if ttype.HasField("shape") and any(not d.HasField("dim_value") for d in ttype.shape.dim):
            return True
    return False


class GraphcBackend(Backend):
    """The ONNX backend interface to graphc's interpreter (CPU)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = DEVICE,
                      **kwargs: Any) -> bool:
        """Return whether every node of the model is an op graphc imports, on the CPU."""
        return cls.supports_device(device) and all(
            node.domain in DEFAULT_DOMAINS and node.op_type in supported_ops()
            for node in model.graph.node)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = DEVICE,
                **kwargs: Any) -> GraphcRep:
        """Check the model with ``onnx.checker``, import it, and return the prepared model."""
        if not cls.supports_device(device):
            raise UsageError("graphc runs on the CPU only", where="prepare",
                             expected=repr(DEVICE), got=repr(device))
        super().prepare(model, device, **kwargs)
        proto, _ = _prepare(model)
        return GraphcRep(proto)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = DEVICE,
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Prepare ``model`` and run it on ``inputs``."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = DEVICE,
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run one node on ``inputs`` (a list in the node's input order, or a dict by name).

        ``opset_version`` (keyword) is the default-domain opset; the newest by default.
        """
        super().run_node(node, inputs, device=device, outputs_info=outputs_info)
        names = [n for n in node.input if n]
        if isinstance(inputs, Mapping):
            feeds = {n: np.asarray(inputs[n]) for n in names}
        else:
            values = list(inputs)
            if len(values) != len(names):
                raise UsageError("the number of inputs does not match the node",
                                 where=f"node {node.name or node.op_type!r}",
                                 expected=f"{len(names)} ({', '.join(names)})", got=len(values))
            feeds = {n: np.asarray(v) for n, v in zip(names, values, strict=True)}
        opset = int(kwargs.get("opset_version", onnx.defs.onnx_opset_version()))
        graph = helper.make_graph(
            [node], f"{node.op_type}_node",
            [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
             for n, a in feeds.items()],
            [helper.make_empty_tensor_value_info(n) for n in node.output if n])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        # The outputs have no declared type (the checker in prepare wants one): graphc infers.
        return GraphcRep(_prepare(model)[0]).run(feeds)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Return whether graphc runs on ``device``: the CPU only."""
        try:
            return Device(device).type == DeviceType.CPU
        except (ValueError, KeyError, AttributeError):
            return False


is_compatible = GraphcBackend.is_compatible
prepare = GraphcBackend.prepare
run_model = GraphcBackend.run_model
run_node = GraphcBackend.run_node
supports_device = GraphcBackend.supports_device

__all__ = ["GraphcBackend", "GraphcRep", "is_compatible", "prepare", "run_model", "run_node",
           "supports_device"]

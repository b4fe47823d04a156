"""graphc: a neural-network compiler from a Python DSL (or ONNX) to checked, smaller ONNX.

>>> import graphc
>>> from graphc import nn
>>> b = graphc.GraphBuilder("neuron")
>>> x = b.input("x", (1, 3))
>>> y = b.output(nn.sigmoid(nn.linear(x, 1, name="fc")), "y")
>>> graphc.run(b.build(), {"x": [[0.0, 0.0, 0.0]]})["y"]
array([[0.5]], dtype=float32)
"""

from __future__ import annotations

from graphc.dsl import GraphBuilder, Tensor
from graphc.errors import GraphcError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.onnxio.export import save, to_bytes, to_onnx
from graphc.onnxio.importer import from_onnx, run_onnx
from graphc.onnxio.runtime import compare, run_onnxruntime
from graphc.version import __version__

__all__ = [
    "Graph",
    "GraphBuilder",
    "GraphcError",
    "Tensor",
    "Value",
    "__version__",
    "compare",
    "from_onnx",
    "run",
    "run_onnx",
    "run_onnxruntime",
    "save",
    "to_bytes",
    "to_onnx",
]

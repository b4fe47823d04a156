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

import importlib
from typing import TYPE_CHECKING, Any

from graphc.version import __version__

# The public names, each from the module that defines it. They are imported on first use
# (PEP 562), so that `import graphc` and `graphc --version` cost no networkx, onnx or numpy.
_LAZY = {
    "GraphBuilder": "graphc.dsl",
    "Tensor": "graphc.dsl",
    "GraphcError": "graphc.errors",
    "run": "graphc.interpret",
    "Graph": "graphc.ir",
    "Value": "graphc.ir",
    "save": "graphc.onnxio.export",
    "to_bytes": "graphc.onnxio.export",
    "to_onnx": "graphc.onnxio.export",
    "from_onnx": "graphc.onnxio.importer",
    "run_onnx": "graphc.onnxio.importer",
    "Comparison": "graphc.onnxio.runtime",
    "compare": "graphc.onnxio.runtime",
    "compare_outputs": "graphc.onnxio.runtime",
    "run_onnxruntime": "graphc.onnxio.runtime",
}

if TYPE_CHECKING:
    from graphc.dsl import GraphBuilder, Tensor
    from graphc.errors import GraphcError
    from graphc.interpret import run
    from graphc.ir import Graph, Value
    from graphc.onnxio.export import save, to_bytes, to_onnx
    from graphc.onnxio.importer import from_onnx, run_onnx
    from graphc.onnxio.runtime import Comparison, compare, compare_outputs, run_onnxruntime


# Public submodules, imported on first use like the names above.
_SUBMODULES = ("backend",)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"graphc.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'graphc' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


__all__ = [
    "Comparison",
    "Graph",
    "GraphBuilder",
    "GraphcError",
    "Tensor",
    "Value",
    "__version__",
    "backend",
    "compare",
    "compare_outputs",
    "from_onnx",
    "run",
    "run_onnx",
    "run_onnxruntime",
    "save",
    "to_bytes",
    "to_onnx",
]

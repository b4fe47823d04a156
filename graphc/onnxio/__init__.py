"""The ONNX bridge: export to ONNX, import from it, and run files on onnxruntime.

- ``export``: lower a graph to a checked, deterministic ONNX model (``to_onnx``, ``save``);
- ``importer``: read an ONNX model into the IR (``from_onnx``) or run it on the interpreter
  (``run_onnx``);
- ``load``: read a file or bytes safely (external data, opsets) before the import;
- ``runtime``: onnxruntime sessions (the one place that builds them), ``run_onnxruntime``,
  ``compare`` against the interpreter and ``compare_outputs`` of two results (a ``Comparison``:
  NaN and infinities exact, finite values within a tolerance of each output's scale).

>>> from graphc.models import backprop_example
>>> g = backprop_example.build()
>>> print(from_onnx(to_onnx(g)).format())
graph backprop_example
  %x = Input # () f32
  %y = Input # () f32
  %z = Input # () f32
  %add = Add(%x, %y) # () f32
  %f = Mul(%add, %z) # () f32
  return %f
"""

from __future__ import annotations

from graphc.onnxio.export import check, max_opset, save, to_bytes, to_onnx
from graphc.onnxio.importer import from_onnx, run_onnx
from graphc.onnxio.runtime import (
    Comparison,
    compare,
    compare_outputs,
    max_abs_diff,
    run_onnxruntime,
    session,
)

__all__ = ["Comparison", "check", "compare", "compare_outputs", "from_onnx", "max_abs_diff",
           "max_opset", "run_onnx", "run_onnxruntime", "save", "session", "to_bytes", "to_onnx"]

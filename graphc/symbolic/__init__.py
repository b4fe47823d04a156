"""Symbolic backprop for teaching: sympy derives every local derivative of a small graph.

- ``chain_rule``: the chain rule node by node (``backprop``, ``BackpropResult``, the size limit
  ``DEFAULT_LIMIT``);
- ``codegen``: the straight-line program as Python code and as an ONNX model of the gradients
  (``gradient_onnx``);
- ``draw``: the picture, forward values above the edges and gradients below.

>>> from graphc.models import load
>>> r = backprop(load("backprop_example").build(), at={"x": -2, "y": 5, "z": -4})
>>> r.grad("x"), r.grad("y"), r.grad("z")
(-4.0, -4.0, 3.0)
"""

from __future__ import annotations

from graphc.symbolic.chain_rule import DEFAULT_LIMIT, BackpropResult, backprop
from graphc.symbolic.codegen import gradient_onnx

__all__ = ["DEFAULT_LIMIT", "BackpropResult", "backprop", "gradient_onnx"]

"""A McCulloch-Pitts neuron y = H(w1 x1 + w2 x2 + w0 x0) with x0 = 1: logical AND.

With w1 = w2 = 1 and bias weight w0 = -1.5, the step function fires only when both inputs are 1.
"""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph


def build(seed: int = 0) -> Graph:
    """Return y = heaviside(w1*x1 + w2*x2 + w0*x0) on scalar inputs x1, x2 (x0 = 1)."""
    b = GraphBuilder("neuron", seed=seed)
    x1, x2 = b.inputs("x1", "x2")
    x0 = b.const(1.0, name="x0")
    w1 = b.param("w1", (), init=np.float32(1.0))
    w2 = b.param("w2", (), init=np.float32(1.0))
    w0 = b.param("w0", (), init=np.float32(-1.5))
    s = sum(w * x for w, x in [(w1, x1), (w2, x2), (w0, x0)])
    b.output(nn.heaviside(s, name="step"), "y")
    return b.build()


def example_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Return x1 = 1, x2 = 1 (AND fires)."""
    return {"x1": np.array(1.0, np.float32), "x2": np.array(1.0, np.float32)}

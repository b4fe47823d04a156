"""The course's backprop example: f = (x + y) * z (at x=-2, y=5, z=-4, f = -12)."""

from __future__ import annotations

import numpy as np

from graphc.dsl import GraphBuilder
from graphc.ir import Graph


def build(seed: int = 0) -> Graph:
    """Return the graph of f = (x + y) * z on scalars."""
    b = GraphBuilder("backprop_example", seed=seed)
    x, y, z = b.inputs("x", "y", "z")
    b.output((x + y) * z, "f")
    return b.build()


def example_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Return the course's point x=-2, y=5, z=-4."""
    return {k: np.array(v, np.float32) for k, v in {"x": -2.0, "y": 5.0, "z": -4.0}.items()}

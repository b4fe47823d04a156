"""A 2-2-1 sigmoid MLP: the smallest network on which backprop shows every step."""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return x (batch, 2) -> linear 2 -> sigmoid -> linear 1 -> sigmoid."""
    b = GraphBuilder("mlp_tiny", seed=seed)
    x = b.input("x", (batch, 2))
    h = nn.sigmoid(nn.linear(x, 2, init="xavier", name="fc1"), name="act1")
    y = nn.sigmoid(nn.linear(h, 1, init="xavier", name="fc2"), name="act2")
    b.output(y, "y")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return a seeded random input in [-1, 1)."""
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, (batch, 2)).astype(np.float32)}

"""A 64-128-64-10 MLP with ReLU and dropout, for the 8x8 digits flattened to 64 features."""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return x (batch, 64) -> 128 -> 64 -> 10 logits."""
    b = GraphBuilder("mlp", seed=seed)
    x = b.input("x", (batch, 64))
    h = nn.dropout(nn.relu(nn.linear(x, 128, name="fc1")), drop=0.2, name="drop1")
    h = nn.dropout(nn.relu(nn.linear(h, 64, name="fc2")), drop=0.2, name="drop2")
    b.output(nn.linear(h, 10, name="fc3"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return seeded random pixels in the digits' range [0, 16)."""
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(0, 16, (batch, 64)).astype(np.float32)}

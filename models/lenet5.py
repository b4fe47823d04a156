"""A LeNet-5 style CNN: conv 6@5x5, pool, conv 16@5x5, pool, 120-84-10, on 1x32x32 images."""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph
from graphc.models import random_images


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return LeNet-5 with tanh activations and average pooling, as in LeCun et al. 1998."""
    b = GraphBuilder("lenet5", seed=seed)
    x = b.input("x", (batch, 1, 32, 32))
    h = nn.avg_pool2d(nn.tanh(nn.conv2d(x, 6, 5, init="xavier", name="c1")), 2, name="s2")
    h = nn.avg_pool2d(nn.tanh(nn.conv2d(h, 16, 5, init="xavier", name="c3")), 2, name="s4")
    h = nn.flatten(h)
    h = nn.tanh(nn.linear(h, 120, init="xavier", name="f5"))
    h = nn.tanh(nn.linear(h, 84, init="xavier", name="f6"))
    b.output(nn.linear(h, 10, init="xavier", name="f7"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return seeded random 32x32 images."""
    return random_images((batch, 1, 32, 32), seed)

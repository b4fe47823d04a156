"""A residual block whose first conv feeds both a BatchNorm and the skip Add.

That shared conv output is the case where BatchNorm folding must refuse: folding the BN into
the conv would change the value the skip connection adds.
"""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph
from graphc.models import random_images


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return x -> conv1 -> (bn1 -> relu -> conv2 -> bn2) + conv1 -> relu -> pool -> linear."""
    b = GraphBuilder("residual", seed=seed)
    x = b.input("x", (batch, 1, 8, 8))
    h = nn.conv2d(x, 16, 3, padding="same", name="conv1")
    r = nn.relu(nn.batch_norm(h, name="bn1"), name="relu1")
    r = nn.batch_norm(nn.conv2d(r, 16, 3, padding="same", name="conv2"), name="bn2")
    y = nn.relu(r + h, name="relu2")
    y = nn.flatten(nn.global_avg_pool(y, name="pool"))
    b.output(nn.linear(y, 10, name="fc"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return seeded random 8x8 images."""
    return random_images((batch, 1, 8, 8), seed)

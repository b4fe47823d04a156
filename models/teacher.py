"""The teacher for distillation: a wider CNN for the 8x8 digits (about 100k parameters)."""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph
from graphc.models import random_images
from graphc.models.cnn import conv_bn_relu


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return x (batch, 1, 8, 8) -> 32, 32 -> pool -> 64, 64 -> pool -> 128 -> dropout -> 10."""
    b = GraphBuilder("teacher", seed=seed)
    x = b.input("x", (batch, 1, 8, 8))
    h = conv_bn_relu(conv_bn_relu(x, 32, "block1a"), 32, "block1b")
    h = nn.max_pool2d(h, 2, name="pool1")
    h = conv_bn_relu(conv_bn_relu(h, 64, "block2a"), 64, "block2b")
    h = nn.flatten(nn.max_pool2d(h, 2, name="pool2"))
    h = nn.dropout(nn.relu(nn.linear(h, 128, name="fc1")), drop=0.3, name="drop")
    b.output(nn.linear(h, 10, name="fc2"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return seeded random 8x8 images."""
    return random_images((batch, 1, 8, 8), seed)

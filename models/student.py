"""The student for distillation: a narrow CNN for the 8x8 digits (about 2k parameters)."""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.ir import Graph
from graphc.models import random_images
from graphc.models.cnn import conv_bn_relu


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return x (batch, 1, 8, 8) -> 8 -> pool -> 16 -> global pool -> 10 logits."""
    b = GraphBuilder("student", seed=seed)
    x = b.input("x", (batch, 1, 8, 8))
    h = nn.max_pool2d(conv_bn_relu(x, 8, "block1"), 2, name="pool1")
    h = nn.global_avg_pool(conv_bn_relu(h, 16, "block2"), name="pool2")
    b.output(nn.linear(nn.flatten(h), 10, name="fc"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return seeded random 8x8 images."""
    return random_images((batch, 1, 8, 8), seed)

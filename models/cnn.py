"""A small CNN for the 8x8 digits: Conv-BN-ReLU blocks, max pooling, dropout, a linear head."""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder, Tensor
from graphc.ir import Graph
from graphc.models import random_images


def conv_bn_relu(x: Tensor, channels: int, name: str) -> Tensor:
    """Return relu(batch_norm(conv3x3(x))) in scope ``name`` (conv, bn)."""
    with x.builder.scope(name):
        h = nn.conv2d(x, channels, 3, padding="same", bias=False, name="conv")
        return nn.relu(nn.batch_norm(h, name="bn"), name="relu")


def build(seed: int = 0, batch: int = 1) -> Graph:
    """Return x (batch, 1, 8, 8) -> 16 -> pool -> 32 -> pool -> 64 -> 10 logits."""
    b = GraphBuilder("cnn", seed=seed)
    x = b.input("x", (batch, 1, 8, 8))
    h = conv_bn_relu(x, 16, "block1")
    h = nn.max_pool2d(conv_bn_relu(h, 32, "block2"), 2, name="pool2")
    h = nn.max_pool2d(conv_bn_relu(h, 64, "block3"), 2, name="pool3")
    h = nn.dropout(nn.flatten(h), drop=0.3, name="drop")
    b.output(nn.linear(h, 10, name="fc"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return seeded random 8x8 images."""
    return random_images((batch, 1, 8, 8), seed)

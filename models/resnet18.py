"""ResNet-18 for 224x224 ImageNet images (11.7M parameters), laid out and named as torchvision.

Parameter names match torchvision's ``resnet18`` state dict (``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ``bn1.running_mean``), so its weights map one to one.
"""

from __future__ import annotations

import numpy as np

from graphc import nn
from graphc.dsl import GraphBuilder, Tensor
from graphc.ir import Graph
from graphc.models import random_images


def basic_block(x: Tensor, channels: int, stride: int, name: str) -> Tensor:
    """Return relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) in scope ``name``."""
    b = x.builder
    with b.scope(name):
        h = nn.conv2d(x, channels, 3, stride=stride, padding=1, bias=False, init="he_fan_out",
                      name="conv1")
        h = nn.relu(nn.batch_norm(h, name="bn1"), name="relu1")
        h = nn.conv2d(h, channels, 3, padding=1, bias=False, init="he_fan_out", name="conv2")
        h = nn.batch_norm(h, name="bn2")
        shortcut = x
        if stride != 1 or x.shape[1] != channels:
            shortcut = nn.conv2d(x, channels, 1, stride=stride, bias=False,
                                 init="he_fan_out", name="downsample.0")
            shortcut = nn.batch_norm(shortcut, name="downsample.1")
        return nn.relu(h + shortcut, name="relu2")


def build(seed: int = 0, batch: int = 1, num_classes: int = 1000) -> Graph:
    """Return ResNet-18: stem, four stages of two basic blocks, global pool, fc.

    Initialized as torchvision does: He normal (fan_out) convolutions, BN scale 1 and shift 0,
    PyTorch's default uniform initialization for the classifier.
    """
    b = GraphBuilder("resnet18", seed=seed)
    x = b.input("x", (batch, 3, 224, 224))
    h = nn.conv2d(x, 64, 7, stride=2, padding=3, bias=False, init="he_fan_out", name="conv1")
    h = nn.relu(nn.batch_norm(h, name="bn1"), name="relu")
    h = nn.max_pool2d(h, 3, stride=2, padding=1, name="maxpool")
    for stage, (channels, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], 1):
        h = basic_block(h, channels, stride, f"layer{stage}.0")
        h = basic_block(h, channels, 1, f"layer{stage}.1")
    h = nn.flatten(nn.global_avg_pool(h, name="avgpool"))
    b.output(nn.linear(h, num_classes, init="uniform", name="fc"), "logits")
    return b.build()


def example_inputs(seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Return a seeded random 224x224 RGB image."""
    return random_images((batch, 3, 224, 224), seed)

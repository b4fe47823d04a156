"""Write the small PyTorch exports that tests/test_torch_exports.py imports.

Each module uses what PyTorch's exporter writes as shape arithmetic or as ops beyond a plain
CNN: ``x.view(x.size(0), -1)`` (Shape -> Gather -> Unsqueeze -> Concat -> Reshape),
``torch.flatten``, ``nn.GELU`` (Erf, and the tanh form), ``F.interpolate`` (nearest,
bilinear and bicubic: Resize), ``chunk`` (Slices at computed offsets), ``split`` (Split),
``hardswish`` / ``hardsigmoid``, slicing, ``unsqueeze`` and ``torch.maximum``. For each,
``torch_<name>.onnx`` (opset 17 unless the name says another; a symbolic batch) and
``torch_<name>.npz`` (the input ``x`` and PyTorch's outputs ``y``) are written next to this
script, so the tests need neither torch nor a network. Run it again only to change the models:

    python tests/data/make_torch_exports.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own spelling
from torch import nn

HERE = Path(__file__).parent
OPSET = 17


class ViewNet(nn.Module):
    """A conv feature map flattened with x.view(x.size(0), -1), then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


class GeluNet(nn.Module):
    """torch.flatten, then linear layers with GELU (erf) and GELU(approximate='tanh')."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(48, 16)
        self.fc2 = nn.Linear(16, 8)
        self.fc3 = nn.Linear(8, 4)
        self.gelu = nn.GELU()
        self.gelu_tanh = nn.GELU(approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(self.gelu_tanh(self.fc2(self.gelu(self.fc1(x)))))


class InterpolateNet(nn.Module):
    """Nearest and bilinear upsampling (scale factors), and bilinear to a size with corners."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.conv1(x), scale_factor=2, mode="nearest")
        x = F.interpolate(self.conv2(x), scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=True)


class BicubicNet(nn.Module):
    """Bicubic upsampling (F.interpolate, mode="bicubic"), without and with corners aligned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.conv(x), scale_factor=2, mode="bicubic", align_corners=False)
        return F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=True)


class ChunkNet(nn.Module):
    """chunk into three, split in two, a gate, an elementwise maximum, a strided slice and an
    unsqueeze."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.conv(x).chunk(3, dim=1)  # Slices at computed offsets
        y = a * torch.sigmoid(b) + torch.maximum(c, a)
        p, q = y.split(1, dim=1)  # Split
        y = torch.cat([p * q, p - q], dim=1)[:, :, 1:-1, ::2]
        return y.mean(dim=1).unsqueeze(1)


class HardSwishNet(nn.Module):
    """MobileNetV3's pieces: hardswish, and squeeze-and-excitation gated by hardsigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.se_reduce = nn.Conv2d(8, 4, 1)
        self.se_expand = nn.Conv2d(4, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.conv(x))
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.se_expand(torch.relu(self.se_reduce(scale))))
        x = F.adaptive_avg_pool2d(x * scale, 1)
        return self.fc(torch.flatten(x, 1))


# name: (module, input shape, opset); gelu_opset20 holds ONNX's Gelu op (opset 20 and later).
MODELS = {
    "view": (ViewNet, (2, 3, 8, 8), OPSET),
    "gelu": (GeluNet, (2, 3, 4, 4), OPSET),
    "interpolate": (InterpolateNet, (1, 3, 5, 7), OPSET),
    "bicubic": (BicubicNet, (2, 3, 5, 6), OPSET),
    "chunk": (ChunkNet, (2, 3, 6, 8), OPSET),
    "hardswish": (HardSwishNet, (2, 3, 8, 8), OPSET),
    "gelu_opset20": (GeluNet, (2, 3, 4, 4), 20),
}


def export(name: str) -> None:
    """Write torch_<name>.onnx and torch_<name>.npz (input x, PyTorch's output y)."""
    cls, shape, opset = MODELS[name]
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    path = HERE / f"torch_{name}.onnx"
    # A symbolic batch, as deployed models have it: the exporter then computes shapes
    # (x.size(0), chunk sizes, interpolate sizes) with Shape arithmetic in the graph.
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                      opset_version=opset, dynamo=False)
    np.savez(HERE / f"torch_{name}.npz", x=x.numpy(), y=y.numpy())
    print(f"wrote {path.name} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    for model_name in MODELS:
        export(model_name)

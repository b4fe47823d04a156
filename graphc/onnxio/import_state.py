"""The state of one ONNX import, declared once for the importer and its parts.

``graphc.onnxio.importer._Importer`` sets it up; its bases ``graphc.onnxio.recompose.Recomposer``,
``graphc.onnxio.fold_shapes.ShapeFolder`` and ``graphc.onnxio.convert.Converter`` read and
extend it.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphc.ir import Graph, Value


class ImportState:
    """What an import knows while it builds the graph (``_Importer.__init__`` says what each
    holds)."""

    g: Graph
    opset: int
    batch: int
    dynamic_batch: bool
    values: dict[str, Value]
    pending: dict[str, tuple[np.ndarray | onnx.TensorProto, bool | None]]
    output_names: set[str]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
    producers: dict[str, tuple[onnx.NodeProto, int]]
    lowered: dict[int, list[onnx.NodeProto]]
    held: set[int]
    folded: dict[str, list[str]]
    batch_kept: dict[str, str]

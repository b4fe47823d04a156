"""graphc as an ONNX backend (``onnx.backend.base.Backend``), over graphc's interpreter.

``graphc.backend`` is what tools that drive ONNX backends take: ``prepare(model)`` returns a
``BackendRep`` whose ``run(inputs)`` gives the outputs; ``run_model``, ``run_node``,
``supports_device("CPU")`` and ``is_compatible(model)`` complete the interface
(``graphc.onnxio.backend`` has the details).

>>> import numpy as np
>>> from onnx import TensorProto, helper
>>> node = helper.make_node("Add", ["a", "b"], ["c"])
>>> graphc_run = run_node(node, [np.float32([1, 2]), np.float32([10, 20])])
>>> graphc_run[0]
array([11., 22.], dtype=float32)
"""

from __future__ import annotations

from graphc.onnxio.backend import (
    GraphcBackend,
    GraphcRep,
    is_compatible,
    prepare,
    run_model,
    run_node,
    supports_device,
)

__all__ = ["GraphcBackend", "GraphcRep", "is_compatible", "prepare", "run_model", "run_node",
           "supports_device"]

"""The op set: every op graphc knows, each declared once as an ``OpDef`` record.

>>> REGISTRY["Conv"].inputs
('X', 'W', 'B?')
"""

from __future__ import annotations

from graphc.errors import OpError, unknown
from graphc.ops import (
    activation,
    binary,
    conv,
    depth,
    elementwise,
    gather,
    im2col,
    linalg,
    logic,
    norm,
    pad,
    pool,
    quant,
    quant_conv,
    quant_fake,
    reduce,
    resize,
    shape,
    tensor,
    variadic,
)
from graphc.ops.base import Attr, Example, NodeView, OpDef, TensorType

REGISTRY: dict[str, OpDef] = {
    op.name: op
    for op in [*elementwise.OPS, *linalg.OPS, *conv.OPS, *pad.OPS, *pool.OPS, *norm.OPS,
               *tensor.OPS, *reduce.OPS, *logic.OPS, *gather.OPS, *im2col.OPS,
               *quant.OPS, *quant_fake.OPS, *quant_conv.OPS, *binary.OPS,
               *shape.OPS, *activation.OPS, *variadic.OPS, *resize.OPS, *depth.OPS]
}


def get(name: str, where: str | None = None) -> OpDef:
    """Return the record of op ``name``, or raise an error that lists the known ops."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise unknown("op", name, REGISTRY, where=where, cls=OpError) from None


__all__ = ["REGISTRY", "Attr", "Example", "NodeView", "OpDef", "TensorType", "get"]

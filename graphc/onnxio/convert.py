"""Converting the forms of some ONNX nodes into graphc's on import (the importer's part).

- ReduceMean / ReduceMax at opsets 13-17 take their axes as an attribute; graphc's IR has the
  opset-18 form, the axes as a constant input (``_reduce_axes``);
- GroupNormalization-18 (opsets 18 to 20) takes scale and bias per group: constant ones are
  repeated per channel, which is graphc's (and GroupNormalization-21's) form
  (``_group_norm_18``);
- Pad-18's ``axes`` input, when constant, is folded into pads for every axis (``_pad_axes``);
- BatchNormalization in training mode, or with its running statistics as outputs, is refused
  with the way to an inference export (``_check_batchnorm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from graphc.errors import OpError
from graphc.ir import Value
from graphc.onnxio.import_state import ImportState


class Converter(ImportState):
    """The importer's conversions, a base of ``graphc.onnxio.importer._Importer``: they read
    the import's state (``ImportState``) and call the importer's ``_value``, ``_const``,
    ``_const_array``, ``_replace_const`` and ``_fresh``."""

    def _reduce_axes(self, node: onnx.NodeProto, where: str) -> tuple[onnx.NodeProto, Value]:
        """Opsets 13-17 give ReduceMean/ReduceMax their axes as an attribute; graphc's IR has
        the opset-18 form, axes as a constant input. Return the node without the attribute
        and the constant."""
        axes = next(a for a in node.attribute if a.name == "axes")
        array = np.array(list(helper.get_attribute_value(axes)), dtype=np.int64)
        stripped = onnx.NodeProto()
        stripped.CopyFrom(node)
        del stripped.attribute[:]
        stripped.attribute.extend(a for a in node.attribute if a.name != "axes")
        while len(stripped.input) < 2:
            stripped.input.append("")
        stripped.input[1] = self._fresh(node.output[0] + ".axes")
        return stripped, self._const(stripped.input[1], array, False, where)

    def _check_batchnorm(self, node: onnx.NodeProto, attrs: dict[str, Any],
                         where: str) -> None:
        extra = [out for out in node.output[1:] if out]
        if attrs.get("training_mode", 0) or extra:
            got = (f"training_mode={attrs['training_mode']}" if attrs.get("training_mode")
                   else f"{len(extra) + 1} outputs (running or saved statistics)")
            raise OpError("BatchNormalization in training mode is not an inference op",
                          where=where, expected="the inference form (one output, "
                          "training_mode=0)", got=got,
                          hint="Export the model in eval mode: model.eval() and "
                               "torch.onnx.export(..., training=TrainingMode.EVAL).")

    def _group_norm_18(self, node: onnx.NodeProto, attrs: dict[str, Any],
                       where: str) -> dict[int, Value | None]:
        """Repeat GroupNormalization-18's per-group scale and bias for each channel.

        Returns the converted inputs by port; anything odd is left to the op record to refuse.
        """
        if len(node.input) != 3 or not all(node.input):
            return {}
        x_type = self.g.type_of(self._value(node.input[0], where))
        groups = attrs.get("num_groups")
        if len(x_type.shape) < 2 or not isinstance(groups, int) or groups <= 0 or (
                x_type.shape[1] % groups):
            return {}
        channels = x_type.shape[1]
        since = onnx.defs.get_schema(node.op_type, self.opset, "").since_version
        converted: dict[int, Value | None] = {}
        for port, label in ((1, "scale"), (2, "bias")):
            name = node.input[port]
            array = self._const_array(name)
            if array is None:
                raise OpError(f"GroupNormalization-{since} {label} is per group and computed, "
                              "so it cannot be made per channel", where=where,
                              expected="a constant of shape (num_groups,)",
                              got="a computed value",
                              hint="Export at opset 21, or make it a constant.")
            if array.shape != (groups,):
                raise OpError(f"GroupNormalization-{since} {label} must hold one value per "
                              "group", where=where, expected=f"shape ({groups},)",
                              got=f"shape {array.shape}")
            if groups != channels:
                per_channel = np.repeat(array, channels // groups)
                converted[port] = self._replace_const(name, per_channel, where)
        return converted

    def _pad_axes(self, node: onnx.NodeProto, where: str) -> dict[int, Value | None]:
        """Fold Pad-18's constant ``axes`` input into pads for every axis (port 3 dropped)."""
        pads, axes = self._const_array(node.input[1]), self._const_array(node.input[3])
        if pads is None or axes is None:
            raise OpError("Pad with axes needs constant pads and axes", where=where,
                          expected="constants", got="a computed value",
                          hint="graphc shapes are static: give pads and axes as constants.")
        rank = len(self.g.type_of(self._value(node.input[0], where)).shape)
        axes_list = [int(a) + rank if int(a) < 0 else int(a) for a in axes.reshape(-1)]
        flat = [int(p) for p in pads.reshape(-1)]
        if len(flat) != 2 * len(axes_list) or len(set(axes_list)) != len(axes_list) or any(
                not 0 <= a < rank for a in axes_list):
            raise OpError("Pad pads and axes do not fit the data", where=where,
                          expected=f"distinct axes in [-{rank}, {rank - 1}] and 2 pads per "
                                   "axis", got=f"axes {axes.reshape(-1).tolist()}, pads {flat}")
        full = np.zeros(2 * rank, np.int64)
        for k, axis in enumerate(axes_list):
            full[axis] = flat[k]
            full[axis + rank] = flat[k + len(axes_list)]
        return {1: self._replace_const(node.input[1], full, where), 3: None}

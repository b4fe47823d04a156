"""Remove inference Dropout: y = x, and a used mask output becomes a constant all-true mask.

At inference Dropout is the identity for every opset form (ratio as attribute or input, with or
without a training_mode input), so its output is replaced by its input. A mask output that is
used is replaced by a constant all-true tensor of its shape, never by the data. Refuses when
training_mode is a constant true or a runtime input. ``keep_dropout=True`` leaves every Dropout
in place, for Monte-Carlo dropout at inference.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import Graph, Value
from graphc.rewrite import Decline, Match, PassReport, Rule, pat, replace, rewrite


def _remove(g: Graph, m: Match) -> Value | Decline:
    node = m.root
    mode = m.values.get("training_mode")
    if mode is not None:
        flag = g.const_value(mode)
        if flag is None:
            return Decline("training_mode is a runtime input, so the Dropout may be active")
        if bool(flag):
            return Decline("training_mode is true: the Dropout is active")
    if len(g.types(node)) > 1 and (g.users(Value(node, 1)) or Value(node, 1) in g.outputs):
        mask_type = g.types(node)[1]
        mask = g.add_const(f"{node}.all_true", np.ones(mask_type.shape, dtype=np.bool_))
        replace(g, Value(node, 1), mask)
    return m.values["data"]


RULES = [Rule("remove-dropout", pat("Dropout", "data", None, "training_mode?"), _remove,
              "y = x (inference); mask = all true")]


def remove_dropout(g: Graph, *, keep_dropout: bool = False,
                   report: PassReport | None = None) -> Graph:
    """Return ``g`` without inference Dropout nodes (unchanged with ``keep_dropout``).

    >>> from graphc.models import load
    >>> [n for n in remove_dropout(load("mlp").build()).op_nodes() if "drop" in n]
    []
    """
    g = g.copy()
    if not keep_dropout:
        rewrite(g, RULES, report)
    return g

"""``graphc show``: a model's graph, one line per node, and its per-layer table."""

from __future__ import annotations

import argparse
from typing import Any

from graphc.cli.common import load_model, non_negative_int


def cmd_show(args: argparse.Namespace) -> int:
    from graphc.shapes import format_table, layer_table

    graph = load_model(args.model, args.seed).graph
    if not args.table:
        print(graph.format())
        print()
    print(format_table(layer_table(graph)))
    return 0



def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``show`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("show", parents=[common],
                       help="print a model's graph and per-layer table")
    p.add_argument("model", help="a zoo model name, a .py file with build(), or an .onnx file")
    p.add_argument("--table", action="store_true", help="print only the per-layer table")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="parameter initialization seed (an int >= 0)")
    p.set_defaults(func=cmd_show)

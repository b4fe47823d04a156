"""The listing commands: ``graphc passes``, ``graphc models`` and ``graphc ops``."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_passes(args: argparse.Namespace) -> int:
    from graphc.pipeline import doc_line, pipelines, registry

    known = registry()
    width = max(len(n) for n in known)
    for name, fn in known.items():
        print(f"{name.ljust(width)}  {doc_line(fn)}")
    print()
    for name, passes in pipelines().items():
        print(f"pipeline {name}: {', '.join(passes)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from graphc.models import MODELS, summary

    width = max(len(n) for n in MODELS)
    for name in MODELS:
        print(f"{name.ljust(width)}  {summary(name)}")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from graphc.ops import REGISTRY

    width = max(len(n) for n in REGISTRY)
    for name, op in REGISTRY.items():
        print(f"{name.ljust(width)}  ({', '.join(op.inputs)}) -> ({', '.join(op.outputs)})")
        print(f"{''.ljust(width)}  {op.doc}")
        if op.attrs and args.verbose:
            attrs = ", ".join(f"{k}={v.default!r}" for k, v in op.attrs.items())
            print(f"{''.ljust(width)}  attributes: {attrs}")
    return 0



def add_passes_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``passes`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("passes", parents=[common], help="list the passes and pipelines")
    p.set_defaults(func=cmd_passes)


def add_models_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``models`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("models", parents=[common], help="list the zoo models")
    p.set_defaults(func=cmd_models)


def add_ops_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``ops`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("ops", parents=[common], help="list the op set")
    p.add_argument("-v", "--verbose", action="store_true", help="also list attributes")
    p.set_defaults(func=cmd_ops)

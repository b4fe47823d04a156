"""The ``graphc`` command line: ``main()`` and the parser.

One module per command (``compile``, ``train``, ``prune``, ``grad``, ``show``, ``explain``, and
``listing`` for ``passes``, ``models`` and ``ops``); what they share is in ``common`` (loading
MODEL, output paths) and ``checkpoints`` (data sets, checkpoints, accuracy). No command module
imports another.

Errors print one line, ``graphc: error: ...``, and exit 1 (2 for usage errors); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from graphc.errors import GraphcError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"graphc: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    from graphc.cli import bench, compile, explain, grad, listing, prune, show, train
    from graphc.version import __version__

    # --debug is accepted before and after the subcommand; SUPPRESS keeps the subcommand's
    # default from overwriting a --debug given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    parser = _Parser(prog="graphc", parents=[common],
                     description="Compile neural networks from graphc's DSL to checked ONNX.")
    parser.add_argument("--version", action="version", version=f"graphc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compile.add_parser(sub, common)
    train.add_parser(sub, common)
    prune.add_parser(sub, common)
    listing.add_passes_parser(sub, common)
    show.add_parser(sub, common)
    grad.add_parser(sub, common)
    explain.add_parser(sub, common)
    listing.add_models_parser(sub, common)
    listing.add_ops_parser(sub, common)
    bench.add_parser(sub, common)
    return parser


def _user_frame(err: BaseException) -> str:
    """Return ``file:line`` of the innermost frame outside graphc, for errors in user code."""
    import graphc
    import graphc.models

    ours = tuple(str(Path(m.__file__).parent.resolve()) + os.sep
                 for m in (graphc, graphc.models) if m.__file__)
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not str(Path(frame.filename).resolve()).startswith(ours):
            return f"{frame.filename}:{frame.lineno}: "
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``graphc`` command; return the exit status."""
    from graphc.models import MODELS

    parser = make_parser()
    parser.epilog = "zoo models: " + ", ".join(MODELS)
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    try:
        return args.func(args)
    except GraphcError as err:
        if args.debug:
            raise
        print(f"graphc: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `graphc ops | head`): stop quietly.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except Exception as err:  # noqa: BLE001 - errors from user model files, shown in one line
        if args.debug:
            raise
        print(f"graphc: error: {_user_frame(err)}{type(err).__name__}: {err} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

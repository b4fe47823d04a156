"""The ``graphc`` command line: ``main()`` and the parser.

One module per command (``compile``, ``train``, ``prune``, ``grad``, ``show``, ``explain``,
``run``, and ``listing`` for ``passes``, ``models`` and ``ops``); what they share is in
``common`` (loading MODEL, output paths) and ``checkpoints`` (data sets, checkpoints, accuracy).
No command module imports another.

Errors print one line, ``graphc: error: ...``, and exit 1 (2 for usage errors); ``--debug``
shows the traceback instead. Ctrl-C prints one line and exits 130.
"""

from __future__ import annotations

import argparse
import os
import re
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
    from graphc.cli import bench, compile, explain, grad, listing, prune, run, show, train
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
    run.add_parser(sub, common)
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


def _syntax_error(err: SyntaxError) -> str:
    """Return ``file:line:column: message`` and the line with a caret under the column, in one
    line (the error is one line; the caret marks the place within the quoted code).

    >>> _syntax_error(SyntaxError("invalid syntax", ("m.py", 3, 5, "x = = 1\\n", 3, 6)))
    "m.py:3:5: SyntaxError: invalid syntax: 'x = = 1' at '^= 1'"
    """
    where = f"{err.filename}:{err.lineno}" + (f":{err.offset}" if err.offset else "")
    text = (err.text or "").rstrip("\n")
    if not text.strip():
        return f"{where}: SyntaxError: {err.msg}"
    column = max((err.offset or 1) - 1, 0)
    return f"{where}: SyntaxError: {err.msg}: {text.strip()!r} at {'^' + text[column:]!r}"


# onnxruntime's messages: "[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : <what>", where <what> may
# name a C++ source file and function before the readable part.
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : ")
_ORT_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with "
                            r"name '([^']*)'")


def _onnxruntime_error(err: Exception) -> str:
    """Return onnxruntime's error in one line without its C++ source paths.

    >>> _onnxruntime_error(RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not "
    ...                                 "find an implementation for Conv(11) node with name 'y'"))
    "onnxruntime: node 'y': no CPU kernel for Conv (opset 11) with these input types; expected \
float32 inputs and weights (most ops), got another dtype. Cast the model to float32."
    """
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    kind = _ORT_PREFIX.match(text)
    body = text[kind.end():] if kind else text
    missing = _ORT_NO_KERNEL.search(body)
    if missing:
        op, version, node = missing.groups()
        return (f"onnxruntime: node {node!r}: no CPU kernel for {op} (opset {version}) with "
                "these input types; expected float32 inputs and weights (most ops), got another "
                "dtype. Cast the model to float32.")
    # Drop "/path/file.cc:123 function(args) " and keep onnxruntime's own sentence.
    body = re.sub(r"(/|[A-Za-z]:\\)\S+:\d+ (\S+\(.*?\) )?", "", body)
    body = body.split(" was false. ", 1)[-1]
    return f"onnxruntime ({kind[1] if kind else type(err).__name__}): {body.strip()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``graphc`` command; return the exit status (130 after Ctrl-C)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C at any point, start-up (imports, parsing, loading MODEL) included: one line.
        # Outputs are written atomically, so none is left half-written.
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            raise
        print("graphc: error: interrupted (Ctrl-C); no output was left half-written",
              file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
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
    except BrokenPipeError:
        # The reader of our output went away (e.g. `graphc ops | head`): stop quietly.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except Exception as err:  # noqa: BLE001 - errors from user model files, shown in one line
        if args.debug:
            raise
        line = _syntax_error(err) if isinstance(err, SyntaxError) else \
            _onnxruntime_error(err) if type(err).__module__.startswith("onnxruntime") else \
            f"{_user_frame(err)}{type(err).__name__}: {err}"
        print(f"graphc: error: {line} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

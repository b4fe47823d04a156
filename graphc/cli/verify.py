"""What ``graphc compile --verify`` and ``--check-speed`` do: the compiled file compared with
its reference (the interpreter, the original file, a second batch size for a dynamic-batch
file, the fused and unfused int8 runs), each comparison one ``Check``; and the speed check
against the given file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphc.cli.common import Loaded
from graphc.errors import GraphcError

if TYPE_CHECKING:
    import numpy as np

    from graphc.onnxio.runtime import Comparison


@dataclass(frozen=True)
class Check:
    """One line of ``--verify``: what was compared and its ``Comparison`` (or a number shown as
    ``text``); a failed ``checked`` comparison fails the command."""

    what: str
    result: Comparison | None
    checked: bool = True
    text: str = ""


def speed_check_feeds(given: bytes, data: bytes, args: argparse.Namespace
                      ) -> dict[str, np.ndarray]:
    """Return the inputs ``--check-speed`` times both files on, checked before anything is
    written: ``--check-speed-batch`` needs a symbolic batch dimension in both files."""
    from graphc.compress.speed_check import feeds_for

    batch = args.check_speed_batch or 1
    feeds = feeds_for(given, batch=batch, seed=args.seed)
    shapes = [v.shape for v in feeds.values() if v.ndim]
    if batch != 1 and any(s[0] != batch for s in shapes):
        raise GraphcError(f"cannot time the files at batch {batch}: the input's batch size is "
                          "fixed", where="--check-speed-batch",
                          expected=f"inputs of shape ({batch}, ...)",
                          got=", ".join(str(s) for s in shapes),
                          hint="Compile with --dynamic-batch (a DSL model), or time at the "
                               "file's own batch size.")
    # The compiled file's inputs must take the same arrays (it may have lost the symbol).
    compiled = feeds_for(data, batch=batch, seed=args.seed)
    if {k: v.shape for k, v in compiled.items()} != {k: v.shape for k, v in feeds.items()}:
        raise GraphcError(f"cannot time the files at batch {batch}: the compiled file has "
                          "other input shapes", where="--check-speed-batch",
                          expected=", ".join(str(v.shape) for v in feeds.values()),
                          got=", ".join(str(v.shape) for v in compiled.values()),
                          hint="Compile with --dynamic-batch.")
    # One run of each before anything is written: a file onnxruntime cannot load or run (no
    # kernel for an op and dtype) fails here, in one line, and no file is left behind.
    from graphc.onnxio.runtime import session

    for model, inputs in ((given, feeds), (data, compiled)):
        session(model).run(None, inputs)
    return feeds


def print_speed_check(given: bytes, data: bytes, feeds: dict[str, np.ndarray],
                      name: str) -> None:
    """Time the written file against ``given`` (the input file, or the model compiled without
    passes) on onnxruntime and print the ratio, with a warning line when it is slower."""
    from graphc.compress.speed_check import check_speed

    result = check_speed(given, data, feeds)
    shapes = [v.shape for v in feeds.values() if v.ndim]
    at = shapes[0][0] if shapes else 1
    print(f"  speed check  {result.describe(before=name)} (batch {at})")
    if result.slower:
        print(f"  warning      the compiled file is {100 * (result.ratio - 1):.1f}% slower than "
              f"the {name} file here, beyond the noise band of +-{100 * result.noise:.1f}%: "
              "keep the faster one")


def verify_feeds(loaded: Loaded, options: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Inputs to verify an int8 file on: the first calibration samples (inputs like the ones it
    was calibrated for; random ones would fall off its grids), else the model's example inputs."""
    import numpy as np

    data = options.get("quantize-int8", {}).get("calibration")
    if data is None or len(loaded.feeds) != 1:
        return loaded.feeds
    (name, example), = loaded.feeds.items()
    return {name: np.asarray(data[:len(example)], example.dtype).reshape(example.shape)}


def verify_fp32(reference: Any, data: bytes, feeds: dict[str, np.ndarray], what: str,
                tolerance: float | None, original_file: bytes | None = None,
                dynamic_batch: bool = False) -> list[Check]:
    """Compare the compiled file on onnxruntime with ``reference`` on the interpreter (also at
    a second batch size for a ``dynamic_batch`` file), and, for an ONNX input, with the
    original file on onnxruntime; return what each compared and its ``Comparison``."""
    from graphc.interpret import run
    from graphc.onnxio.runtime import compare_outputs, run_onnxruntime

    got = run_onnxruntime(data, feeds)
    expected = run(reference, feeds)
    checks = [Check(what, compare_outputs(expected, got, tolerance))]
    if dynamic_batch:
        checks.append(verify_batch(data, feeds, expected, tolerance))
    if original_file is not None:
        checks.append(Check("compiled vs original file, both on onnxruntime",
                            compare_outputs(run_onnxruntime(original_file, feeds), got,
                                            tolerance)))
    return checks


def verify_int8(original: Any, graph: Any, fp32: Any, data: bytes,
                feeds: dict[str, np.ndarray], tolerance: float | None = None,
                dynamic_batch: bool = False) -> list[Check]:
    """Compare the int8 file on onnxruntime without fusion (the ops as written: must equal the
    interpreter) and fused (as it will run: shown, may differ by quantization steps) with the
    interpreter; print the relative RMS error against the fp32 model."""
    from graphc.compress.int8 import relative_rms
    from graphc.interpret import run
    from graphc.onnxio.runtime import compare_outputs, session

    expected = run(graph, feeds)
    names = list(expected)

    def on_ort(optimize: bool) -> dict[str, np.ndarray]:
        sess = session(data, threads=1, optimize=optimize)
        return dict(zip(names, sess.run(None, feeds), strict=True))

    fused = on_ort(True)
    want = run(original, feeds)
    rms = relative_rms([fused[n] for n in names], [want[n] for n in names])
    return [Check("int8 file on onnxruntime without fusion vs the interpreter: the ops as "
                  "written", compare_outputs(expected, on_ort(False), tolerance)),
            Check("fused int8 kernels, as the file will run, vs the interpreter: may differ "
                  "by quantization steps; shown, not checked",
                  compare_outputs(expected, fused, tolerance), checked=False),
            Check("fused int8 vs the original model on the interpreter: the quantization "
                  "error", None, text=f"relative RMS {rms:.3g}")] + \
        ([verify_batch(data, feeds, expected, tolerance, optimize=False)] if dynamic_batch
         else [])


# How many copies of the example inputs a dynamic-batch file is verified on, besides one.
BATCH_COPIES = 3


def verify_batch(data: bytes, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                 tolerance: float | None, optimize: bool = True) -> Check:
    """Run a dynamic-batch file on the example inputs repeated along axis 0 and compare with
    the expected outputs repeated the same way; a file that does not run at that batch size
    is an error that names the node onnxruntime stopped at."""
    import re

    import numpy as np
    import onnxruntime as ort

    from graphc.onnxio.runtime import compare_outputs, session

    def repeat(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.concatenate([np.asarray(v)] * BATCH_COPIES) if np.ndim(v) else
                np.asarray(v) for k, v in arrays.items()}

    big = repeat(feeds)
    batch = next((v.shape[0] for v in big.values() if v.ndim), BATCH_COPIES)
    sess = session(data, threads=1, optimize=optimize)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the error is reported below, in one line
    try:
        outputs = sess.run(None, big, quiet)
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors share no public base class
        text = str(err)
        op = re.search(r"running (\w+) node", text)
        node = re.search(r"Name:'([^']*)'", text)
        detail = text.split("Status Message: ", 1)[-1]
        detail = detail.split(" was false. ", 1)[-1] if " was false. " in detail else \
            re.sub(r"^\S+:\d+ ", "", detail)
        where = f"--dynamic-batch: {op[1] if op else 'node'} node {node[1]!r}" if node else \
            "--dynamic-batch"
        raise GraphcError(f"the compiled file does not run at batch {batch} (the example "
                          f"inputs repeated {BATCH_COPIES} times)", where=where,
                          expected="a file that runs at any batch size",
                          got=detail.strip().rstrip("."),
                          hint="A shape with a constant batch dimension (e.g. a Reshape to "
                               "(1, 8)) fixes it to 1: use 0 or -1 there (nn.flatten).") \
            from None
    got = dict(zip(expected, outputs, strict=True))
    return Check(f"the dynamic-batch file at batch {batch} on onnxruntime, the example inputs "
                 f"repeated, vs the expected outputs repeated",
                 compare_outputs(repeat(expected), got, tolerance))

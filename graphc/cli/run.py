"""``graphc run``: run a compiled ONNX file on the user's data (onnxruntime, or graphc's
interpreter), print what went in and came out, write the outputs, and, for a classifier with
``--labels``, its accuracy.

Samples are the first axis of every input array; they run in batches of the file's batch size
(a fixed batch: the last batch is padded with zeros and the padding dropped) or of ``--batch``
(a dynamic batch). A sample of another shape with the same number of values is reshaped (64
pixels for a (1, 8, 8) image); integer and float64 data are converted to the input's float
dtype when that loses nothing but precision.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphc.cli.common import check_writable, positive_int, refuse_overwriting
from graphc.errors import GraphcError, UsageError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_BATCH = 256  # for a file with a dynamic batch


def parse_inputs(items: list[str], names: list[str]) -> dict[str, str]:
    """Parse ``--input NAME=FILE`` items (``FILE`` alone for a model with one input).

    >>> parse_inputs(["x=a.npy"], ["x"]), parse_inputs(["a.npz"], ["x"])
    ({'x': 'a.npy'}, {'x': 'a.npz'})
    """
    given: dict[str, str] = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            if len(names) != 1:
                raise UsageError(f"--input {item!r} names no input", where="--input",
                                 expected=f"NAME=FILE for each of {', '.join(names)}",
                                 got=repr(item))
            name, path = names[0], item
        if name not in names:
            from graphc.errors import unknown

            raise unknown("input", name, names, where="--input", cls=UsageError)
        if name in given or not path:
            raise UsageError(f"--input {item!r}", where="--input",
                             expected="one NAME=FILE per input", got=repr(item))
        given[name] = path
    missing = [n for n in names if n not in given]
    if missing:
        raise UsageError(f"no --input for {', '.join(missing)}", where="--input",
                         expected=" ".join(f"--input {n}=FILE.npy" for n in names),
                         got=" ".join(f"--input {k}={v}" for k, v in given.items()) or "none")
    return given


def _array(path: str, name: str, option: str, prefer: tuple[str, ...]) -> np.ndarray:
    """The array of ``path`` for ``name``: an .npy file's array; in an .npz file the array
    ``name`` (then each of ``prefer``), or its only array."""
    from graphc.train.datafiles import read_arrays

    arrays = read_arrays(path, option)
    if "" in arrays:
        return arrays[""]
    for key in (name, *prefer):
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise UsageError(f"{path} has several arrays and none is called {name!r}", where=option,
                     expected=f"one array, or one named {' or '.join(map(repr, (name, *prefer)))}",
                     got=", ".join(sorted(arrays)))


def _fit(array: np.ndarray, name: str, shape: list[Any], dtype: Any, path: str) -> np.ndarray:
    """``array`` as samples of the input's per-sample ``shape`` and ``dtype``."""
    import numpy as np

    where = f"--input {name}={path}"
    per_sample = tuple(shape[1:])
    if array.ndim == 0 or array.shape[0] == 0:
        raise GraphcError(f"{path} holds no samples", where=where,
                          expected=f"samples of shape {per_sample} along the first axis",
                          got=f"shape {array.shape} (a batch of 0)" if array.ndim else
                          "a single number")
    if array.shape[1:] != per_sample:
        if any(not isinstance(d, int) for d in per_sample) or \
                int(np.prod(array.shape[1:])) != int(np.prod(per_sample)):
            raise GraphcError(f"the samples of {path} do not fit input {name!r}", where=where,
                              expected=f"samples of shape {per_sample} (the input is "
                              f"{tuple(shape)})", got=f"samples of shape {array.shape[1:]}",
                              hint="Samples are the first axis of the array.")
        array = array.reshape((array.shape[0], *per_sample))
    if array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise GraphcError(f"the data of {path} cannot become input {name!r}", where=where,
                              expected=f"{np.dtype(dtype)} (or a type that converts to it)",
                              got=str(array.dtype))
        array = array.astype(dtype)
    return array


class _Model:
    """A compiled file ready to run: its inputs and outputs and a call on one batch."""

    def __init__(self, path: str, interpreter: bool) -> None:
        import onnx
        from onnx import helper

        from graphc.onnxio.load import file_bytes

        self.data = file_bytes(path)  # refuses a file that is no ONNX model, or too new
        proto = onnx.load_model_from_string(self.data)
        init = {t.name for t in proto.graph.initializer}
        self.inputs: dict[str, tuple[list[Any], Any]] = {}
        for value in proto.graph.input:
            if value.name in init:
                continue
            ttype = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in ttype.shape.dim]
            if 0 in dims:
                raise GraphcError(f"input {value.name!r} has a dimension of size 0",
                                  where=path, expected="sizes >= 1", got=f"shape {dims}",
                                  hint="Compile the model with a batch of at least 1.")
            self.inputs[value.name] = (dims, helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        self.outputs = [o.name for o in proto.graph.output]
        batches = {dims[0] for dims, _ in self.inputs.values() if dims}
        fixed = [b for b in batches if isinstance(b, int)]
        self.batch: int | None = fixed[0] if fixed else None
        self.interpreter = interpreter
        if interpreter:
            from graphc.onnxio.importer import from_onnx

            self.graph = from_onnx(self.data)
            self.graph_batch = self.batch
        else:
            from graphc.onnxio.runtime import session

            self.session = session(self.data)

    def for_batch(self, size: int) -> Any:
        """The interpreter's graph at batch ``size`` (a dynamic-batch file is re-imported)."""
        from graphc.onnxio.importer import from_onnx

        if self.batch is None and self.graph_batch != size:
            self.graph, self.graph_batch = from_onnx(self.data, batch=size), size
        return self.graph

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.interpreter:
            from graphc.interpret import run

            size = next(iter(feeds.values())).shape[0]
            got = run(self.for_batch(size), feeds)
            return [got[name] for name in self.outputs]
        return self.session.run(self.outputs, feeds)


def run_batches(model: _Model, arrays: dict[str, np.ndarray], batch: int
                ) -> dict[str, np.ndarray]:
    """Run ``arrays`` (equal numbers of samples) through ``model`` in batches of ``batch``
    (padded with zeros to a fixed batch); return each output's results concatenated."""
    import numpy as np

    n = len(next(iter(arrays.values())))
    parts: list[list[np.ndarray]] = [[] for _ in model.outputs]
    for start in range(0, n, batch):
        count = min(batch, n - start)
        feeds = {}
        for name, array in arrays.items():
            chunk = array[start:start + count]
            if model.batch is not None and count < model.batch:
                padded = np.zeros((model.batch, *array.shape[1:]), array.dtype)
                padded[:count] = chunk
                chunk = padded
            feeds[name] = chunk
        for k, out in enumerate(model(feeds)):
            out = np.asarray(out)
            if out.ndim == 0 or (model.batch is not None and out.shape[0] != model.batch):
                raise GraphcError(f"output {model.outputs[k]!r} has no batch axis",
                                  expected=f"shape ({batch}, ...) for a batch of {batch}",
                                  got=f"shape {out.shape}",
                                  hint="graphc run joins outputs along their first axis.")
            parts[k].append(out[:count])
    return {name: np.concatenate(p) for name, p in zip(model.outputs, parts, strict=True)}


def stats_line(name: str, array: np.ndarray) -> str:
    """One line on an output: shape, dtype, and min, max, mean, std of its finite values
    (and how many are not finite).

    >>> import numpy as np
    >>> stats_line("y", np.array([[1.0, np.nan], [3.0, 5.0]], np.float32))
    '  output  y  (2, 2) float32  min 1  max 5  mean 3  std 1.633  (1 NaN)'
    """
    import numpy as np

    text = f"  output  {name}  {array.shape} {array.dtype}"
    if array.size == 0 or array.dtype.kind not in "biuf":
        return text
    values = array.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size:
        text += (f"  min {finite.min():.4g}  max {finite.max():.4g}  mean {finite.mean():.4g}"
                 f"  std {finite.std():.4g}")
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    bad = [f"{nan} NaN"] * bool(nan) + [f"{inf} inf"] * bool(inf)
    return text + (f"  ({', '.join(bad)})" if bad else "")


def _labels(path: str, n: int) -> np.ndarray:
    import numpy as np

    labels = _array(path, "y", "--labels", ("labels",))
    if labels.ndim == 2:  # one-hot rows
        labels = np.argmax(labels, axis=1)
    if labels.ndim != 1 or labels.shape[0] != n or (
            labels.size and not np.all(labels == np.round(labels))):
        raise GraphcError(f"{path} does not hold one class id per sample", where="--labels",
                          expected=f"shape ({n},) of integers (or ({n}, classes) one-hot)",
                          got=f"shape {labels.shape} {labels.dtype}")
    return labels.astype(np.int64)


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from graphc.files import write_atomic

    if not args.model.lower().endswith(".onnx"):
        raise UsageError(f"cannot run {args.model!r}", expected="an .onnx file",
                         got=f"a {Path(args.model).suffix or 'model name'}"
                         if Path(args.model).suffix else repr(args.model),
                         hint=f"Compile it first: graphc compile {args.model} -o model.onnx")
    if args.output:
        if not args.output.lower().endswith(".npz") and not Path(args.output).is_char_device():
            raise UsageError(f"cannot write {args.output!r}", where="-o",
                             expected="an .npz file", got=repr(Path(args.output).suffix or
                                                               "no suffix"))
        files = [spec.partition("=")[2] or spec for spec in args.input]
        refuse_overwriting([("-o", args.output)], [args.model, args.labels, *files])
        check_writable(args.output, "-o")
    model = _Model(args.model, args.interpreter)
    names = list(model.inputs)
    given = parse_inputs(args.input, names)
    if args.batch is not None and model.batch is not None and args.batch != model.batch:
        raise UsageError(f"{args.model} takes batches of {model.batch}", where="--batch",
                         expected=f"{model.batch} or no --batch (the file's batch is fixed)",
                         got=args.batch, hint="Compile with --dynamic-batch for other sizes.")
    arrays = {}
    for name, path in given.items():
        dims, dtype = model.inputs[name]
        arrays[name] = _fit(_array(path, name, f"--input {name}", ("x",)), name, dims, dtype,
                            path)
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise GraphcError("the inputs hold different numbers of samples", where="--input",
                          expected="the same number for every input",
                          got=", ".join(f"{k} {v}" for k, v in counts.items()))
    n = next(iter(counts.values()))
    labels = _labels(args.labels, n) if args.labels else None
    batch = model.batch or args.batch or min(n, DEFAULT_BATCH)
    outputs = run_batches(model, arrays, batch)
    backend = "graphc's interpreter" if args.interpreter else "onnxruntime"
    runs = -(-n // batch)
    print(f"ran {args.model} on {backend}: {n} sample{'s' * (n != 1)} in {runs} "
          f"batch{'es' * (runs != 1)} of {batch}")
    for name, path in given.items():
        print(f"  input   {name}  {arrays[name].shape} {arrays[name].dtype}  from {path}")
    for name, array in outputs.items():
        print(stats_line(name, array))
    first = outputs[model.outputs[0]]
    if labels is not None:
        if first.ndim != 2:
            raise GraphcError(f"output {model.outputs[0]!r} is no classifier's scores",
                              where="--labels", expected="shape (samples, classes)",
                              got=f"shape {first.shape}")
        right = int(np.sum(np.argmax(first, axis=1) == labels))
        print(f"  accuracy  {100 * right / n:.2f}% ({right} of {n}; argmax of "
              f"{model.outputs[0]} vs {args.labels})")
    if args.output:
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        write_atomic(args.output, buffer.getvalue())
        print(f"  wrote   {args.output} ({', '.join(outputs)})")
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``run`` command to ``sub`` (the sub-parsers of ``graphc``)."""
    p = sub.add_parser("run", parents=[common],
                       help="run a compiled .onnx file on your data (.npy/.npz), print a "
                            "summary, write the outputs, measure accuracy")
    p.add_argument("model", metavar="MODEL.onnx", help="a compiled .onnx file")
    p.add_argument("--input", action="append", required=True, metavar="NAME=FILE",
                   help="the data of an input: an .npy file, or an .npz file (its array NAME, "
                        "x, or its only array); samples along the first axis; FILE alone for "
                        "a model with one input (repeat for several inputs)")
    p.add_argument("--batch", type=positive_int, metavar="B",
                   help=f"samples per run for a dynamic-batch file (default {DEFAULT_BATCH}); "
                        "a fixed-batch file runs at its own batch")
    p.add_argument("-o", "--output", metavar="FILE.npz",
                   help="write the outputs, one array per output name")
    p.add_argument("--interpreter", action="store_true",
                   help="run on graphc's numpy interpreter instead of onnxruntime")
    p.add_argument("--labels", metavar="FILE",
                   help="class ids (.npy, or .npz array y) of the samples: print the accuracy "
                        "of the first output's argmax")
    p.set_defaults(func=cmd_run)

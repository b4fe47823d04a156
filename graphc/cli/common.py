"""What the commands share: loading MODEL (a zoo name, a .py file with build(), an .onnx
file), example inputs, and checking an output path before any work is done."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from graphc.errors import GraphcError, UsageError

if TYPE_CHECKING:
    import numpy as np


def load_module(spec: str, verb: str = "compile") -> ModuleType:
    """Import MODEL, a zoo name or a .py file (another file is a usage error of ``verb``)."""
    from graphc.models import MODELS, load, load_file

    if spec in MODELS:
        return load(spec)
    if spec.endswith(".py") or "/" in spec or Path(spec).suffix or Path(spec).exists():
        if Path(spec).suffix not in ("", ".py"):
            allowed = "a .py file with build()" + (" or an .onnx file" if verb == "compile"
                                                   else "")
            raise UsageError(f"cannot {verb} {spec!r}", expected=f"a zoo model name, {allowed}",
                             got=f"a {Path(spec).suffix} file")
        return load_file(spec)
    return load(spec)


def _origin(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or module.__name__


def _check_graph(graph: Any, origin: str) -> None:
    """Refuse what a model's ``build()`` returned unless it is a graphc Graph."""
    from graphc.ir import Graph

    if not isinstance(graph, Graph):
        raise GraphcError(f"build() of {origin} returned {type(graph).__name__}",
                          expected="a graphc Graph (return b.build())", got=type(graph).__name__)


def _build(module: ModuleType, seed: int) -> Any:
    try:
        graph = module.build(seed=seed)
    except TypeError as err:
        if "seed" not in str(err):
            raise
        graph = module.build()
    _check_graph(graph, _origin(module))
    graph.verify()
    return graph


def build_at(module: ModuleType, seed: int, batch: int) -> Any:
    """Build MODEL's graph at a training batch size: ``build(seed=..., batch=...)``."""
    from graphc.ir import Value

    origin = _origin(module)
    try:
        graph = module.build(seed=seed, batch=batch)
    except TypeError as err:
        if "batch" not in str(err) and "seed" not in str(err):
            raise
        raise GraphcError(f"cannot train {Path(origin).stem}: its build() takes no seed and "
                          "batch arguments", where=origin,
                          expected="def build(seed=0, batch=1) -> Graph",
                          got=str(err)) from None
    _check_graph(graph, origin)
    shape = graph.type_of(Value(graph.inputs[0])).shape if graph.inputs else ()
    if not shape or shape[0] != batch:
        raise GraphcError(f"build(batch={batch}) of {origin} made an input of another batch size",
                          where=f"input {graph.inputs[0]!r}" if graph.inputs else None,
                          expected=f"shape ({batch}, ...)", got=shape,
                          hint="Use the batch argument for the first dimension of the input.")
    return graph


def example_feeds(module: ModuleType | None, graph: Any, seed: int = 0
                  ) -> dict[str, np.ndarray]:
    """Return the module's ``example_inputs()``, or seeded random inputs of the right shapes."""
    from graphc.testing import random_feeds

    if module is not None and callable(getattr(module, "example_inputs", None)):
        return check_examples(module.example_inputs(), graph, _origin(module))
    return random_feeds(graph, seed)


def check_examples(feeds: Any, graph: Any, origin: str) -> dict[str, np.ndarray]:
    """Refuse example inputs that onnxruntime would refuse (another name, dtype or shape than
    the graph's inputs), naming the input, instead of onnxruntime's raw message later."""
    import numpy as np

    from graphc.ir import Value

    where = f"example_inputs() of {origin}"
    if not isinstance(feeds, dict):
        raise GraphcError("example_inputs() must return a dict", where=where,
                          expected="{input name: array}", got=type(feeds).__name__)
    if sorted(feeds) != sorted(graph.inputs):
        raise GraphcError("the example inputs are not the model's inputs", where=where,
                          expected=", ".join(graph.inputs) or "no inputs",
                          got=", ".join(map(str, feeds)) or "none")
    arrays = {}
    for name in graph.inputs:
        want = graph.type_of(Value(name))
        array = np.asarray(feeds[name])
        if array.dtype != want.dtype or array.shape != tuple(want.shape):
            raise GraphcError(f"input {name!r} has the wrong dtype or shape", where=where,
                              expected=f"{want.dtype} of shape {tuple(want.shape)}",
                              got=f"{array.dtype} of shape {array.shape}",
                              hint=f"Return np.asarray(..., np.{want.dtype}) of that shape "
                                   "(onnxruntime converts no dtypes).")
        arrays[name] = array
    return arrays


def check_no_empty_input(graph: Any, origin: str) -> None:
    """Refuse an input with a dimension of size 0 (a batch of 0): there is nothing to run,
    verify or measure on it."""
    from graphc.ir import Value

    for name in graph.inputs:
        shape = tuple(graph.type_of(Value(name)).shape)
        if 0 in shape:
            what = "a batch of 0" if shape and shape[0] == 0 else "a dimension of size 0"
            raise GraphcError(f"input {name!r} has {what}", where=origin,
                              expected="sizes >= 1", got=f"shape {shape}",
                              hint="Give the input at least one sample (batch 1).")


@dataclass
class Loaded:
    """A model given on the command line: its graph, example inputs, and the original file."""

    graph: Any
    feeds: dict[str, np.ndarray]
    onnx_file: Path | None = None


def load_model(spec: str, seed: int = 0) -> Loaded:
    """Load MODEL: a zoo name, a .py file with build(), or an .onnx file (any case)."""
    if spec.lower().endswith(".onnx"):
        from graphc.onnxio.importer import from_onnx

        graph = from_onnx(spec)
        graph.verify()
        check_no_empty_input(graph, spec)
        return Loaded(graph, example_feeds(None, graph, seed), Path(spec))
    module = load_module(spec)
    graph = _build(module, seed)
    check_no_empty_input(graph, _origin(module))
    return Loaded(graph, example_feeds(module, graph, seed))


def check_writable(path: str, option: str) -> None:
    """Refuse an output path whose folder is missing, before any work is done (a device or
    FIFO, e.g. /dev/null, is written directly: only its own permission counts)."""
    target = Path(path)
    if target.exists() and not target.is_file() and not target.is_dir():
        if not os.access(target, os.W_OK):
            raise GraphcError(f"cannot write {path!r}: permission denied", where=option,
                              hint="Choose a writable location.")
        return
    if target.is_dir():
        raise GraphcError(f"cannot write {path!r}: it is a folder", where=option,
                          hint="Give a file name.")
    folder = target.parent
    if folder.exists() and not folder.is_dir():
        raise GraphcError(f"cannot write {path!r}: {str(folder)!r} is a file, not a folder",
                          where=option, hint="Give a path in an existing folder.")
    if not folder.is_dir():
        raise GraphcError(f"cannot write {path!r}: the folder {str(folder)!r} does not "
                          "exist", where=option, hint="Create it first.")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise GraphcError(f"cannot write {path!r}: permission denied", where=option,
                          hint="Choose a writable location.")


def positive_int(text: str) -> int:
    """Parse an int >= 1 (argparse turns the ValueError into a usage error).

    >>> positive_int("32")
    32
    """
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def non_negative_int(text: str) -> int:
    """Parse an int >= 0 (argparse turns the ValueError into a usage error).

    >>> non_negative_int("0")
    0
    """
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def cores() -> int:
    """Return the number of CPU cores of this machine (1 when Python cannot tell)."""
    return os.cpu_count() or 1


def check_threads(value: int | None, option: str = "--threads") -> int | None:
    """Refuse a thread count below 1 or above the machine's cores (onnxruntime starts that many
    threads and gives each its memory: 100000 of them ran for minutes and grew to 16 GB).

    >>> check_threads(1), check_threads(None)
    (1, None)
    """
    if value is not None and not 1 <= value <= cores():
        raise UsageError(f"{option} must be between 1 and the machine's {cores()} cores",
                         where=option, expected=f"an int from 1 to {cores()}", got=value,
                         hint="More threads than cores only compete for them." if value > 1
                         else "Give 1 for one thread.")
    return value


def bound_threads(value: int | None, source: str) -> tuple[int | None, str | None]:
    """Return a thread count from a file (``source``) limited to the machine's cores, and a
    note saying so when it was larger (the file stays usable on a smaller machine).

    >>> bound_threads(100000, "run.ckpt")[0] == cores()
    True
    >>> bound_threads(1, "run.ckpt")
    (1, None)
    """
    if value is None or 1 <= value <= cores():
        return value, None
    if value < 1:
        return None, f"{source} asks for {value} threads; using onnxruntime's default"
    return cores(), (f"{source} asks for {value} threads, more than this machine's "
                     f"{cores()} cores; using {cores()}")


def format_size(nbytes: int) -> str:
    return f"{nbytes / 1024:,.1f} KiB" if nbytes < 1024**2 else f"{nbytes / 1024**2:,.1f} MiB"


def input_files(*specs: str | None) -> list[str]:
    """Return the files among MODEL-like arguments: a path, or both halves of ``SPEC:CKPT``
    (zoo names and missing paths are no files to protect).

    >>> input_files("cnn", None)
    []
    """
    files = []
    for spec in specs:
        if not spec:
            continue
        parts = [spec]
        if ":" in spec and not Path(spec).exists():
            parts = list(spec.partition(":")[::2])
        files += [p for p in parts if p and Path(p).is_file()]
    return files


def refuse_overwriting(outputs: list[tuple[str, str | None]], inputs: list[str | None]) -> None:
    """Refuse, before anything is loaded, an output that is an input file (hard and symbolic
    links included) or the same file as another output.

    >>> refuse_overwriting([("-o", "out.onnx"), ("--plot", None)], ["model.py"])
    """
    from graphc.files import check_not_an_input, same_file

    given = [(option, path) for option, path in outputs if path]
    sources = input_files(*inputs)
    for k, (option, path) in enumerate(given):
        check_not_an_input(path, sources, option)
        for first, other in given[:k]:
            if same_file(path, other) and not Path(path).is_char_device():
                raise UsageError(f"{first} {other!r} and {option} {path!r} name the same file",
                                 where=option, expected="a file of its own for each output",
                                 got=f"{path!r} twice", hint="Give each output its own file.")

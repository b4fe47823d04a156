"""Data sets and checkpoints on the command line, shared by ``compile`` (``--weights``,
``--accuracy``) and ``train``: the data sets (``--data``, ``--classes``), reading a checkpoint of
MODEL and fitting the model's head to it, and a compiled file's accuracy.

Every checkpoint ``graphc train`` writes records its data in ``Checkpoint.data``: the data set,
the ``--classes`` subset, the ``--init`` checkpoint and whether the head is new, so that
``--resume`` and ``compile --weights ... --accuracy`` use the same data; and the form it trained
(``qat``: fake quantization; ``binary``: binary weights and activations), which both rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphc.cli.common import Loaded
from graphc.errors import GraphcError, UsageError

# The data sets by name; --data also takes an .npz or .csv file or a folder of class folders
# (graphc.train.datafiles).
DATA_SETS = ("digits", "blobs", "xor", "spirals", "images")
DATA_HELP = ("digits, blobs, xor, spirals or images (e.g. blobs:n=600,classes=4), an .npz file "
             "(arrays x, y; optional x_test, y_test), a .csv file (label column: label, y, "
             "class, target or the last; FILE.csv:COLUMN), or a folder with one sub-folder of "
             "images per class")


def check_data(name: str, option: str) -> None:
    """Refuse a ``--data`` value that names no data set or file (a usage error of
    ``option``), before anything is loaded."""
    from graphc.train.datafiles import check_spec

    check_spec(name, option)


def has_labels(spec: str) -> bool:
    """Whether ``spec`` is a labeled data set (a name, a CSV file, a folder, or an .npz file
    with arrays x and y), rather than an .npz file of inputs alone (``--calibrate``)."""
    import zipfile

    from graphc.train.datafiles import data_kind

    kind = data_kind(spec)
    if kind != "npz":
        return kind is not None
    try:
        with zipfile.ZipFile(spec) as archive:
            names = {n.removesuffix(".npy") for n in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False  # the caller reports the file it cannot read
    return {"x", "y"} <= names


def parse_classes(text: str) -> list[int]:
    """Parse ``--classes``: ``0-4``, ``5,6,7`` or ``0-2,7`` into digit classes, in order.

    >>> parse_classes("5-7,0")
    [5, 6, 7, 0]
    """
    classes: list[int] = []
    try:
        for item in (part.strip() for part in text.split(",")):
            low, dash, high = item.partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if not 0 <= first <= last <= 9:
                raise ValueError(item)
            classes += range(first, last + 1)
    except ValueError:
        raise UsageError(f"cannot read --classes {text!r}", expected="digit classes 0..9 as "
                         "a range or a list, e.g. 0-4 or 5,6,7", got=repr(text)) from None
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise UsageError(f"bad --classes {text!r}", expected="at least 2 different classes",
                         got=classes)
    return classes


def load_data(name: str, classes: Sequence[int] | None = None) -> tuple[Any, Any]:
    """Return ``(train, test)`` of data set ``name`` as images (training and evaluation reshape
    them to the model's input, so image augmentation also serves an MLP); with ``classes``,
    only those classes, relabeled ``0..M-1`` in the given order."""
    import numpy as np

    from graphc.train.data import Dataset
    from graphc.train.datafiles import load_dataset

    splits = load_dataset(name, "--data")
    if not classes:
        return splits
    if max(classes) >= splits[0].classes:
        raise UsageError(f"--classes {_classes_label(classes)} names a class that {name} lacks",
                         where="--classes", expected=f"classes 0..{splits[0].classes - 1}",
                         got=max(classes))
    relabel = np.full(splits[0].classes, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    subsets = []
    for split in splits:
        keep = relabel[split.y] >= 0
        subsets.append(Dataset(split.x[keep], relabel[split.y[keep]], len(classes),
                               f"{split.name}[{_classes_label(classes)}]"))
    return subsets[0], subsets[1]


def samples_word(data: Any) -> str:
    """"images" for a data set of images (N, C, H, W), "samples" for other data."""
    return "images" if data.x.ndim == 4 else "samples"


def _classes_label(classes: Sequence[int]) -> str:
    return ",".join(str(c) for c in classes)


def classes_text(classes: Sequence[int] | None) -> str:
    return f", classes {_classes_label(classes)}" if classes else ""


def check_fits(graph: Any, data: Any, name: str, option: str = "--accuracy") -> None:
    """Refuse a model whose input or number of outputs does not fit data set ``name`` (given
    with ``option``)."""
    from graphc.ir import Value
    from graphc.train.loop import fit_data

    fit_data(data, graph.type_of(Value(graph.inputs[0])).shape, f"{option} {name}")
    out = graph.type_of(graph.outputs[0]).shape
    if len(out) != 2 or out[1] != data.classes:
        raise UsageError(f"the model's output does not fit the {name} test split",
                         where=f"{option} {name}", expected=f"(batch, {data.classes}) "
                         "(one score per class)", got=out)


def onnx_accuracy(model: bytes, data: Any) -> float:
    """Return the accuracy of an ONNX classifier (first input, first output) on ``data``,
    run on onnxruntime in chunks of the file's batch size (all at once for a dynamic batch)."""
    import numpy as np
    import onnx
    from onnx import helper

    from graphc.onnxio.runtime import session
    from graphc.train.loop import fit_data, predict_in_batches

    sess = session(model)
    first = sess.get_inputs()[0]
    batch = first.shape[0] if isinstance(first.shape[0], int) else len(data)
    x = fit_data(data, [batch, *first.shape[1:]], "accuracy")
    output = sess.get_outputs()[0].name
    dtype = helper.tensor_dtype_to_np_dtype(
        onnx.load_model_from_string(model).graph.input[0].type.tensor_type.elem_type)
    scores = predict_in_batches(lambda chunk: sess.run([output], {first.name: chunk})[0], x,
                                batch, dtype)
    return float(np.mean(np.argmax(scores, axis=1) == data.y))


def model_name(spec: str) -> str:
    """The name a checkpoint records for MODEL: the zoo name, or a model file's stem."""
    from graphc.models import MODELS

    return spec if spec in MODELS else Path(spec).stem


@dataclass
class Weights:
    """A checkpoint applied to a model: the graph with its weights, the checkpoint (its
    ``data`` record names the data it was trained on) and a one-line summary."""

    graph: Any
    checkpoint: Any
    summary: str

    @property
    def classes(self) -> list[int] | None:
        """The ``--classes`` subset the checkpoint was trained on, or None for all."""
        return self.checkpoint.data.get("classes")


def read_checkpoint(path: str, spec: str, option: str) -> Any:
    """Load checkpoint ``path`` for MODEL ``spec``; a checkpoint of another model is a usage
    error."""
    from graphc.train.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    want = model_name(spec)
    if ck.model != want:
        raise UsageError(f"{option} {path} is a checkpoint of model {ck.model!r}",
                         expected=f"a checkpoint of {want!r}", got=repr(ck.model),
                         hint=f"Give {option} {ck.model}:{path}, or a checkpoint of {want}."
                         if option in ("--teacher", "--student") else
                         f"Give MODEL {ck.model}, or a checkpoint of {want}.")
    return ck


def head_classes(graph: Any, state: Any = None) -> int | None:
    """The class count of ``graph``'s head (in ``state`` if given), or None without a head."""
    from graphc.train.transfer import head_classes

    try:
        return head_classes(graph, state)
    except GraphcError:
        return None


def fit_head(graph: Any, state: Any, seed: int) -> tuple[Any, str]:
    """Rebuild ``graph`` with the head of ``state`` when their class counts differ."""
    from graphc.train.transfer import head_params, replace_head

    theirs, ours = head_classes(graph, state), head_classes(graph)
    if theirs is None or theirs == ours:
        return graph, ""
    return replace_head(graph, theirs, seed), f"head {', '.join(head_params(graph))} with " \
        f"{theirs} classes"


def need_all(path: str, names: Any, state: Any, spec: str) -> None:
    """Refuse a checkpoint that lacks any of ``names`` (a parameter or running statistic)."""
    from graphc.train.loop import require_all

    require_all(list(names), state, f"checkpoint {path} has no values for {{count}} of "
                f"{model_name(spec)}'s weights", expected="every parameter and running statistic",
                hint="Use a checkpoint written by `graphc train` for this model.")


def folded(graph: Any, state: Any = None) -> Any:
    """``graph`` with ``state``'s weights (if any) and its BatchNormalization folded: the form
    quantization-aware training trains and ships."""
    from graphc.pipeline import run_pipeline
    from graphc.train.step import apply_state

    return run_pipeline(apply_state(graph, state or {}), ["fold-batchnorm"])[0]


def qat_model(graph: Any, record: Any, state: Any = None) -> Any:
    """The graph of a quantization-aware trained model: ``graph`` folded (``folded``) with the
    fake quantization of ``record`` (what ``graphc.compress.qat.prepare`` recorded)."""
    from graphc.compress.qat import qat_graph

    return qat_graph(folded(graph, state), record)


def trained_form(graph: Any, config: Any) -> Any:
    """``graph`` in the conventions its checkpoint's run trained it with (``--dropout-scaling
    test``: each Dropout followed by its multiplication by the keep probability)."""
    from graphc.train.conventions import with_dropout_scaling

    return with_dropout_scaling(graph, config.dropout_scaling)


def binary_model(graph: Any, record: Any) -> Any:
    """The training form of a binary-trained model: ``graph`` with the binary weights (and
    activations) that ``record`` (a checkpoint's ``binary`` record) describes."""
    from graphc.compress.binary_train import from_record

    return from_record(graph, record)


def binary_text(record: Any) -> str:
    """A few words on a checkpoint's ``binary`` record: the mode and the layers.

    >>> binary_text({"mode": "all", "keep_fp32": ["conv1"], "layers": ["conv2", "fc"]})
    'binary weights and activations (conv2, fc; fp32: conv1)'
    """
    what = "binary weights and activations" if record["mode"] == "all" else "binary weights"
    kept = f"; fp32: {', '.join(record['keep_fp32'])}" if record["keep_fp32"] else ""
    return f"{what} ({', '.join(record['layers'])}{kept})"


def pruned_model(graph: Any, record: Any) -> tuple[Any, str]:
    """``graph`` with the channels a ``graphc prune`` checkpoint's record removed, and a few
    words on it ("" when the record prunes no channels)."""
    channels = (record.get("pruned") or {}).get("channels")
    if not channels:
        return graph, ""
    from graphc.compress.channels import slice_channels

    before = sum(len(v) for v in channels.values())
    sliced = slice_channels(graph, channels)
    return sliced, f"channels pruned ({before:,} kept in {len(channels)} groups)"


def apply_weights(path: str, spec: str, loaded: Loaded, seed: int) -> Weights:
    """``compile --weights``: MODEL ``spec``'s graph with the weights of checkpoint ``path``,
    its head rebuilt for the checkpoint's class count if that differs."""
    from graphc.train.loop import model_state
    from graphc.train.step import apply_state

    if loaded.onnx_file is not None:
        raise UsageError("--weights needs a zoo model or a .py file",
                         expected="a model graphc trains", got=f"the ONNX file {spec}",
                         hint="An .onnx file carries its own weights.")
    ck = read_checkpoint(path, spec, "--weights")
    graph, head = fit_head(loaded.graph, ck.state, seed)
    graph = trained_form(graph, ck.config)
    graph, pruned = pruned_model(graph, ck.data)
    if pruned:
        head = ", ".join([head, pruned] if head else [pruned])
    if ck.data.get("qat"):
        # A QAT checkpoint holds the folded model; its record, the fake quantization's grids.
        graph = qat_model(graph, ck.data["qat"])
        head = ", ".join([head, "quantization-aware"] if head else ["quantization-aware"])
    binary = ck.data.get("binary")
    if binary:
        graph = binary_model(graph, binary)
        head = ", ".join([head, binary_text(binary)] if head else [binary_text(binary)])
    need_all(path, model_state(graph), ck.state, spec)
    graph = apply_state(graph, ck.state)
    if binary:
        from graphc.compress.binary_train import evaluate_weights

        # The binary weights as constants (+-alpha), so that the inference pipeline folds
        # BatchNormalization into them; the model computes exactly what the training form does.
        graph = evaluate_weights(graph)
    parts = [f"epoch {ck.epoch}", *([head] if head else [])]
    if ck.history:
        parts.append(f"test accuracy {100 * ck.history[-1].test_accuracy:.2f}%")
    return Weights(graph, ck, ", ".join(parts))


def accuracy_data(name: str, graph: Any, weights: Weights | None) -> Any:
    """``compile --accuracy``: the test split of data set ``name`` (the checkpoint's classes)
    for ``graph``, refused before anything is written if it does not fit the model."""
    _, test_set = load_data(name, weights.classes if weights else None)
    check_fits(graph, test_set, name)
    return test_set


def print_accuracy(model: bytes, name: str, test_set: Any, weights: Weights | None,
                   accuracy: float | None = None) -> None:
    """Print the accuracy of the written ONNX file on ``test_set`` (``accuracy`` if it was
    measured before the file was written), and the checkpoint's own record of it after its last
    epoch."""
    if accuracy is None:
        accuracy = onnx_accuracy(model, test_set)
    print(f"  accuracy     {100 * accuracy:.2f}% on the {name} test split"
          f"{classes_text(weights.classes if weights else None)} ({len(test_set)} "
          f"{samples_word(test_set)}, "
          "the written file on onnxruntime)")
    if weights is not None and weights.checkpoint.history:
        last = weights.checkpoint.history[-1]
        right = round(accuracy * len(test_set))
        recorded = round(last.test_accuracy * len(test_set))
        same = "the same" if right == recorded else f"the file gets " \
            f"{abs(right - recorded)} {'more' if right > recorded else 'fewer'} images right"
        print(f"               {100 * last.test_accuracy:.2f}% recorded in the checkpoint "
              f"after epoch {last.epoch} ({same})")

"""Distillation: a frozen teacher's logits in a student's training, and teacher-labeled data.

The course's loss (``graphc.train.losses.distillation``) needs the teacher's logits z_t for
every training batch. ``Distillation`` holds its settings (temperature ``T``, weights ``alpha``
and ``beta``, Hinton's ``tau_squared``), how the logits are computed (``mode``) and how many
teacher-labeled samples extend the data (``teacher_labels``); ``Teacher`` adds the teacher
itself: ``build(batch)`` returns its inference graph with its trained weights.

Two ways to get z_t (``MODES``), both computing the same numbers; ``auto`` (the default) picks
the faster one measured on the digits (docs/distillation.md): ``separate`` with its cache when
the run does not augment, ``graph`` when it does.

- ``graph``: the teacher's inference graph inside the compiled training step
  (``embed_teacher``): its weights are constants, BatchNormalization uses its running
  statistics, Dropout is the identity; one onnxruntime call per batch computes the teacher and
  trains the student.
- ``separate``: the teacher runs in its own onnxruntime session and its logits are fed to the
  step as the batch input ``teacher_logits``: per batch after augmentation, or once for the
  whole run when nothing is random about the inputs (no augmentation).

The teacher is frozen either way: its weights are constants of the step, never inputs, so the
step has no update output for them.

``teacher_labels``: the course's data-set extension. N extra inputs (augmented copies of
training images, or the rows of an unlabeled array) are labeled with the teacher's soft outputs
softmax(z_t) at T = 1 (``label_with_teacher``); for them the hard term of the loss uses these
soft labels instead of one-hot ones.

>>> Distillation(T=4, alpha=0.5, beta=0.5).record()
{'T': 4.0, 'alpha': 0.5, 'beta': 0.5, 'tau_squared': False, 'mode': 'auto', \
'teacher_labels': 0}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from graphc.errors import UsageError, unknown
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.train.augment import DIGITS_AUGMENT, Augment
from graphc.train.losses import check_distillation

MODES = ("auto", "graph", "separate")
# The seed of the teacher-labeled samples is (run seed, this): their own stream, so that the
# batch order and augmentation of a run do not depend on whether it extends its data.
TEACHER_LABELS_STREAM = 7411


@dataclass(frozen=True)
class Distillation:
    """How a student learns from its teacher: L = alpha H(y, softmax(z_s)) + beta [T^2]
    H(softmax(z_t / T), softmax(z_s / T)); ``mode`` says how z_t is computed (``MODES``);
    ``teacher_labels`` extra samples are labeled with softmax(z_t)."""

    T: float = 4.0
    alpha: float = 0.5
    beta: float = 0.5
    tau_squared: bool = False
    mode: str = "auto"
    teacher_labels: int = 0

    def __post_init__(self) -> None:
        check_distillation(self.T, self.alpha, self.beta, flags=True)
        for name in ("T", "alpha", "beta"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.mode not in MODES:
            raise unknown("teacher mode", self.mode, MODES, cls=UsageError)
        n = self.teacher_labels
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UsageError("--teacher-labels must be an integer >= 0",
                             where="--teacher-labels", expected="an int >= 0", got=repr(n))

    def resolved(self, augmented: bool) -> str:
        """The mode a run uses: ``auto`` is ``separate`` (logits computed once, cached) without
        augmentation and ``graph`` (one onnxruntime call per batch) with it."""
        if self.mode != "auto":
            return self.mode
        return "graph" if augmented else "separate"

    def record(self) -> dict[str, Any]:
        """The settings as JSON-able values (a checkpoint's record)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Distillation:
        """The settings of ``record()`` (keys it does not know are ignored)."""
        names = {"T", "alpha", "beta", "tau_squared", "mode", "teacher_labels"}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass
class Teacher:
    """A frozen teacher: ``build(batch)`` is its inference graph with its trained weights;
    ``unlabeled`` (samples, first axis = sample) is what ``teacher_labels`` draws from instead
    of augmented training images."""

    build: Callable[[int], Graph]
    settings: Distillation
    name: str = "teacher"
    unlabeled: np.ndarray | None = None


def check_teacher(teacher: Graph, student: Graph) -> None:
    """Refuse a teacher whose input or first output has another shape than the student's.

    >>> from graphc.models import load
    >>> check_teacher(load("mlp").build(batch=4), load("student").build(batch=4))
    Traceback (most recent call last):
    ...
    graphc.errors.UsageError: --teacher: the teacher's input does not fit the student's; \
expected (4, 1, 8, 8) like student's x, got (4, 64) (mlp's x).
    """
    if len(teacher.inputs) != 1:
        raise UsageError("the teacher must have one input", where="--teacher",
                         expected="one input, the student's images",
                         got=f"inputs {', '.join(teacher.inputs)}")
    pairs = (("input", teacher.type_of(Value(teacher.inputs[0])).shape,
              student.type_of(Value(student.inputs[0])).shape, teacher.inputs[0],
              student.inputs[0]),
             ("output", teacher.type_of(teacher.outputs[0]).shape,
              student.type_of(student.outputs[0]).shape, teacher.output_names()[0],
              student.output_names()[0]))
    for what, theirs, ours, their_name, our_name in pairs:
        if theirs != ours:
            raise UsageError(f"the teacher's {what} does not fit the student's",
                             where="--teacher", expected=f"{ours} like {student.name}'s "
                             f"{our_name}", got=f"{theirs} ({teacher.name}'s {their_name})")


def embed_teacher(g: Graph, teacher: Graph, x: Value, prefix: str = "teacher") -> Value:
    """Add ``teacher``'s inference graph to ``g``, reading ``x``; return its first output.

    Every node is copied under ``<prefix>.<name>``; its constants stay constants and are not
    trainable (the teacher is frozen), BatchNormalization keeps its inference form and Dropout
    becomes the identity.
    """
    mapped: dict[Value, Value] = {Value(teacher.inputs[0]): x}
    for node in teacher.topo():
        op = teacher.op(node)
        if op == INPUT:
            continue
        if op == CONST:
            value = teacher.nx.nodes[node]["value"]
            mapped[Value(node)] = g.add_const(f"{prefix}.{node}", value, copy=False)
            continue
        ins = [None if v is None else mapped[v] for v in teacher.in_values(node)]
        if op == "Dropout":
            mapped[Value(node)] = ins[0]
            continue
        if op == "BatchNormalization" and teacher.attrs(node).get("training_mode"):
            raise UsageError("the teacher has a BatchNormalization in training mode",
                             where=teacher.format_node(node), expected="training_mode 0",
                             got=1, hint="Give the teacher's inference graph.")
        first = g.add_node(op, ins, teacher.attrs(node), name=f"{prefix}.{node}")
        for out in range(len(teacher.types(node))):
            mapped[Value(node, out)] = Value(first.node, out)
    return mapped[teacher.outputs[0]]


def softmax(z: np.ndarray) -> np.ndarray:
    """Return softmax along the last axis, in float64 (stable).

    >>> softmax(np.array([[0.0, np.log(3.0)]])).round(6).tolist()
    [[0.25, 0.75]]
    """
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def label_with_teacher(predict: Callable[[np.ndarray], np.ndarray], n: int, seed: int, *,
                       images: np.ndarray | None = None, labels: np.ndarray | None = None,
                       unlabeled: np.ndarray | None = None, classes: int | None = None,
                       augment: str = DIGITS_AUGMENT) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n`` samples and the teacher's soft labels softmax(z_t) (T = 1) for them.

    The samples are ``n`` rows of ``unlabeled`` chosen at random if it is given (it needs at
    least ``n``), else augmented copies of ``images`` (chosen at random, every image once
    before any twice; the ``augment`` pipeline); all drawn from ``seed``. ``predict`` maps
    samples to the teacher's logits.

    >>> x = np.zeros((4, 1, 8, 8), np.float32)
    >>> extra, soft = label_with_teacher(lambda s: np.zeros((len(s), 3)), 6, 0, images=x,
    ...                                  labels=np.arange(4) % 3, classes=3)
    >>> extra.shape, [round(float(p), 3) for p in soft[0]]
    ((6, 1, 8, 8), [0.333, 0.333, 0.333])
    """
    rng = np.random.default_rng([seed, TEACHER_LABELS_STREAM])
    if unlabeled is not None:
        if len(unlabeled) < n:
            raise UsageError("the unlabeled file has fewer samples than --teacher-labels",
                             where="--unlabeled", expected=f">= {n} samples",
                             got=len(unlabeled), hint="Lower --teacher-labels.")
        x = np.asarray(unlabeled[rng.permutation(len(unlabeled))[:n]], np.float32)
    else:
        if images is None or not len(images):
            raise UsageError("teacher labels need images to augment", where="--teacher-labels",
                             expected="training images or --unlabeled", got="none")
        picks = np.concatenate([rng.permutation(len(images))
                                for _ in range(-(-n // len(images)))])[:n]
        pipeline = Augment.parse(augment, classes=classes)
        y = labels[picks] if labels is not None else np.zeros(n, np.int64)
        x = pipeline(images[picks], y, rng)[0].astype(np.float32)
    return x, softmax(predict(x)).astype(np.float32)


def read_unlabeled(path: str) -> np.ndarray:
    """Read the array ``x`` of an ``.npz`` file (no pickled objects): the samples the teacher
    labels for ``--teacher-labels``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            if "x" not in keys:
                raise UsageError(f"{path} has no array 'x'", where="--unlabeled",
                                 expected="an .npz file with an array x of samples",
                                 got=f"arrays {', '.join(keys) or 'none'}")
            x = npz["x"]
    except UsageError:
        raise
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist", where="--unlabeled",
                         expected="an .npz file with an array x", got="no such file") from None
    except Exception as err:  # numpy raises many kinds for a file that is not an .npz
        raise UsageError(f"cannot read {path}", where="--unlabeled",
                         expected="an .npz file with an array x",
                         got=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                         if str(err) else type(err).__name__) from None
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise UsageError(f"the array x of {path} is not a batch of samples",
                         where="--unlabeled", expected="numbers, first axis = sample",
                         got=f"shape {x.shape} {x.dtype}")
    return x.astype(np.float32)

"""One training step as one graph: train-mode forward, loss, backward and optimizer update.

``compile_step(forward, optimizer)`` turns a model graph into a step graph in the same IR:

- **Train mode.** Every BatchNormalization normalizes with the statistics of the batch over
  (N, H, W) and outputs its new running averages ``mu_avg' = a * mu_avg + (1 - a) * mu_B`` and
  ``sigma2_avg' = a * sigma2_avg + (1 - a) * sigma2_B`` (``a`` is the node's ``momentum``;
  ``sigma2_B`` is the batch's population variance, as in the course). A BatchNormalization
  whose scale and bias are both frozen keeps its inference form. Every Dropout multiplies by a
  mask that is an input of the step (``<node>.mask``): inverted dropout, 0 or ``1 / (1 - p)``,
  drawn by the caller (``dropout_masks``), so the interpreter and onnxruntime compute the same
  step.
- **Loss** on the model's first output: ``cross_entropy`` (logits against the ``target``
  probabilities, one-hot for labels) or ``mse``; with ``distill`` (``graphc.train.distill``),
  the course's distillation loss against a frozen teacher's logits, computed by the teacher's
  inference graph inside the step (``teacher``) or fed as the batch input ``teacher_logits``;
  plus optional penalties
  (``graphc.train.penalties``: ``Penalty``; the weights a penalty acts on by default are
  ``layer_weights``).
- **Masks** keep pruned weights at zero: a parameter with a 0/1 mask enters the forward as
  ``w * mask`` (a Mul by a constant), so a masked weight contributes nothing and its gradient is
  0; with a zero starting value, its momentum, Adam moments and weight decay stay 0 too, so the
  update leaves it at exactly 0. The new value is multiplied by the mask as well, so a masked
  weight is 0 after the step whatever the state it starts from (a carried momentum).
- **Backward** by ``graphc.autodiff`` and the **update** of every trainable parameter by the
  optimizer, with the learning rate ``lr`` and the 1-based step count ``step`` as inputs.

The parameters, the optimizer state and the running statistics are inputs of the step; their
new values are the outputs ``<name>.next``. ``StepSpec`` records which is which, so a runner
(``graphc.train.runner``) can feed each step's outputs to the next.

>>> from graphc.models import load
>>> from graphc.train.optim import SGD
>>> spec = compile_step(load("mlp").build(batch=4), SGD(lr=0.1, momentum=0.9))
>>> spec.batch_inputs, spec.masks
(['x', 'target'], ['drop1.mask', 'drop2.mask'])
>>> spec.state["fc1.weight.velocity"], spec.graph.output_names()[:2]
((128, 64), ['loss', 'logits'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.autodiff import backward
from graphc.dsl import GraphBuilder, Tensor
from graphc.errors import GraphcError, UsageError, unknown
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.shapes import dropout_ratio
from graphc.train import losses
from graphc.train.distill import Distillation, check_teacher, embed_teacher
from graphc.train.optim import Optimizer
from graphc.train.penalties import Penalty, penalty_term

LOSSES = ("cross_entropy", "mse")
FEATURE_AUGMENTS = ("noise", "mixup")


@dataclass(frozen=True)
class FeatureAugment:
    """Augmentation in feature space (the course's simulation) on the output of ``node``:
    ``noise`` adds Gaussian noise of std ``value``; ``mixup`` mixes each sample's features and
    labels with a random partner's, ``lam ~ Beta(value, value)`` (manifold mixup)."""

    node: str
    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_AUGMENTS:
            raise unknown("feature augmentation", self.kind, FEATURE_AUGMENTS, cls=UsageError)
        if not self.value > 0:
            raise UsageError(f"feature {self.kind} needs a positive value", expected="> 0",
                             got=self.value)

    @classmethod
    def parse(cls, spec: str) -> FeatureAugment:
        """``"fc2:noise=0.1"`` or ``"block3:mixup=0.2"``."""
        node, _, rest = spec.partition(":")
        kind, _, value = rest.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"bad feature augmentation {spec!r}",
                             expected="LAYER:noise=STD or LAYER:mixup=ALPHA, e.g. fc2:noise=0.1",
                             got=repr(spec)) from None
        return cls(node.strip(), kind.strip(), number)


@dataclass
class StepSpec:
    """A compiled training step and the roles of its inputs and outputs.

    ``state`` maps every carried input (parameters, optimizer state, running statistics) to its
    shape; the step's output ``<name>.next`` is its value after the step. ``initial`` holds
    their starting values (optimizer state starts at zero).
    """

    graph: Graph
    params: list[str]
    batch_inputs: list[str]
    mask_ratios: dict[str, float]
    state: dict[str, tuple[int, ...]]
    initial: dict[str, np.ndarray] = field(repr=False)
    frozen: list[str]
    features: dict[str, FeatureAugment] = field(default_factory=dict)

    @property
    def masks(self) -> list[str]:
        """The dropout mask inputs, one per Dropout."""
        return list(self.mask_ratios)

    def next_name(self, name: str) -> str:
        return f"{name}.next"

    def dropout_masks(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw one inverted-dropout mask per Dropout: 0 with probability p, else 1/(1-p)."""
        masks = {}
        for name in self.masks:
            t = self.graph.type_of(Value(name))
            p = self.mask_ratios[name]
            keep = rng.random(t.shape, dtype=np.float32) >= np.float32(p)
            masks[name] = keep.astype(t.dtype) * t.dtype.type(1.0 / (1.0 - p))
        return masks

    def random_inputs(self, rng: np.random.Generator, target: np.ndarray
                      ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw the dropout masks and the feature augmentation inputs of one step; return
        them and the target (mixed like the features by a feature mixup)."""
        feeds = self.dropout_masks(rng)
        for name, aug in self.features.items():
            t = self.graph.type_of(Value(name))
            if aug.kind == "noise":
                feeds[name] = (aug.value * rng.standard_normal(t.shape)).astype(t.dtype)
                continue
            n = t.shape[0]
            lam = rng.beta(aug.value, aug.value, n)
            mix = np.zeros((n, n))
            mix[np.arange(n), np.arange(n)] = lam
            mix[np.arange(n), rng.permutation(n)] += 1.0 - lam
            feeds[name] = mix.astype(t.dtype)
            target = (mix @ target).astype(target.dtype)
        return feeds, target


# ----- train mode ---------------------------------------------------------------------------


def _op(g: Graph, base: str, op: str, *inputs: Value, **attrs: Any) -> Value:
    return g.add_node(op, list(inputs), attrs, name=f"{base}.train.{op.lower()}")


def _const(g: Graph, base: str, value: Any, dtype: Any) -> Value:
    return g.add_const(f"{base}.train.c", value, dtype=dtype)


def _batchnorm_train(g: Graph, node: str, carried: dict[str, Value]) -> None:
    """Replace BatchNormalization ``node`` by its training form (batch statistics); its
    running statistics become carried state, updated by the node's outputs 1 and 2."""
    inputs = g.in_values(node)
    for stat in inputs[3:5]:
        if stat is None or g.op(stat.node) != CONST:
            raise GraphcError("BatchNormalization's running statistics must be constants to "
                              "train", where=g.format_node(node), expected="a Const",
                              got="nothing" if stat is None else g.op(stat.node))
    for stat in inputs[3:5]:
        if stat.node in carried:
            raise GraphcError("a running statistic is shared by two BatchNormalization nodes",
                              where=g.format_node(node), expected="one BatchNormalization per "
                              "pair of running statistics", got=f"{stat.node} used twice",
                              hint="Give each BatchNormalization its own statistics.")
    x_shape = g.type_of(inputs[0]).shape
    per_channel = int(np.prod(x_shape, dtype=np.int64)) // x_shape[1]
    if per_channel < 2:
        raise GraphcError("BatchNormalization in training needs more than one value per channel",
                          where=g.format_node(node), expected="batch * spatial size >= 2",
                          got=f"input {x_shape}", hint="Train with a larger batch.")
    attrs = {**g.attrs(node), "training_mode": 1}
    train = g.add_node("BatchNormalization", inputs, attrs, name=f"{node}.train")
    g.replace_all_uses(Value(node), train)
    carried[inputs[3].node] = Value(train.node, 1)
    carried[inputs[4].node] = Value(train.node, 2)


def _conv_im2col(g: Graph, node: str) -> None:
    """Replace an ungrouped Conv (1, 2 or 3 spatial axes) by Gemm(W as (O, C*prod(k)),
    Im2Col(X)): onnxruntime's Conv with a weight that is an input (not a constant) is slow, and
    the weight gradient of the Gemm reuses the forward's columns."""
    x, w, *rest = g.in_values(node)
    o, c, *kernel = g.type_of(w).shape
    n = g.type_of(x).shape[0]
    _, _, *out = g.type_of(Value(node)).shape
    k = len(out)
    window = {key: v for key, v in g.attrs(node).items()
              if key in ("strides", "dilations", "pads", "auto_pad")}
    cols = g.add_node("Im2Col", [x], {"kernel_shape": kernel, **window},
                      name=f"{node}.im2col")
    flat = _op(g, node, "Reshape", w, _const(g, node, [o, c * int(np.prod(kernel))], np.int64))
    product = _op(g, node, "Gemm", flat, cols)
    y = _op(g, node, "Transpose",
            _op(g, node, "Reshape", product, _const(g, node, [o, *out, n], np.int64)),
            perm=[k + 1, *range(k + 1)])
    if rest and rest[0] is not None:
        y = _op(g, node, "Add", y, _op(g, node, "Reshape", rest[0],
                                       _const(g, node, [1, o, *(1,) * k], np.int64)))
    g.replace_all_uses(Value(node), y)


def _mask_weight(g: Graph, name: str, mask: Any) -> Value:
    """Make every user of parameter ``name`` read ``name * mask``; return the mask constant."""
    t = g.type_of(Value(name))
    array = np.asarray(mask)
    if array.shape != t.shape:
        raise UsageError(f"the mask of {name!r} has the wrong shape", where="masks",
                         expected=t.shape, got=array.shape)
    if not np.all((array == 0) | (array == 1)):
        bad = array[(array != 0) & (array != 1)]
        raise UsageError(f"the mask of {name!r} is not 0/1", where="masks",
                         expected="an array of 0 and 1 (or of bools)",
                         got=f"{bad.size} other values, e.g. {bad.flat[0].item()!r}")
    constant = g.add_const(f"{name}.mask", array, dtype=t.dtype)
    masked = g.add_node("Mul", [Value(name), constant], name=f"{name}.masked")
    g.replace_all_uses(Value(name), masked, keep=[masked.node])
    return constant


def _dropout_train(g: Graph, node: str) -> tuple[str, float]:
    """Replace Dropout ``node`` by a product with the mask input ``<node>.mask``."""
    ins = g.in_values(node)
    x = ins[0]
    ratio = dropout_ratio(g, node)
    if ratio is None:
        raise GraphcError("Dropout's ratio must be a constant to train", where=g.format_node(node),
                          expected="a Const ratio", got=g.op(ins[1].node))
    if g.users(Value(node, 1)):
        raise GraphcError("Dropout's mask output is used; it cannot be trained",
                          where=g.format_node(node), expected="no users of the mask output",
                          got=f"{len(g.users(Value(node, 1)))} users")
    t = g.type_of(x)
    mask = g.add_input(g.fresh_name(f"{node}.mask"), t.shape, t.dtype)
    g.replace_all_uses(Value(node), _op(g, node, "Mul", x, mask))
    return mask.node, ratio


def _feature_augment(g: Graph, aug: FeatureAugment) -> str:
    """Insert ``aug`` after the first output of its node; return the new input's name."""
    if aug.node not in g.nx or g.op(aug.node) in (CONST, INPUT):
        raise unknown("layer", aug.node, g.op_nodes(), cls=UsageError, where="feature augmentation")
    h = Value(aug.node)
    t = g.type_of(h)
    if aug.kind == "noise":
        noise = g.add_input(g.fresh_name(f"{aug.node}.feature_noise"), t.shape, t.dtype)
        new = _op(g, aug.node, "Add", h, noise)
        reads = new.node
    else:
        n = t.shape[0]
        noise = g.add_input(g.fresh_name(f"{aug.node}.feature_mix"), (n, n), t.dtype)
        rows = _op(g, aug.node, "Reshape", h, _const(g, aug.node, [n, -1], np.int64))
        new = _op(g, aug.node, "Reshape", _op(g, aug.node, "MatMul", noise, rows),
                  _const(g, aug.node, list(t.shape), np.int64))
        reads = rows.node
    g.replace_all_uses(h, new, keep=[reads])
    return noise.node


# ----- the step -----------------------------------------------------------------------------


NORMALIZED_OUTPUTS = ("Softmax", "LogSoftmax", "Sigmoid")


def _loss(b: GraphBuilder, kind: str, pred: Tensor, teacher: Tensor | None = None,
          distill: Distillation | None = None) -> Tensor:
    if kind not in LOSSES:
        raise unknown("loss", kind, LOSSES, cls=UsageError)
    g = b.graph
    producer = pred.value.node
    while g.op(producer) == "Identity":
        producer = g.in_values(producer)[0].node
    if kind == "cross_entropy" and g.op(producer) in NORMALIZED_OUTPUTS:
        raise UsageError("cross_entropy takes logits, but the model's output is a "
                         f"{g.op(producer)}", where=g.format_node(producer),
                         expected="scores before any softmax", got=g.op(producer),
                         hint="Remove the final activation from the model (the loss applies "
                              "a stable log-softmax itself), or train with loss 'mse'.")
    target = b.input("target", pred.shape, pred.dtype)
    if kind == "mse":
        return losses.mse(pred, target)
    if distill is not None and teacher is not None:
        return losses.distillation(pred, teacher, target, alpha=distill.alpha, beta=distill.beta,
                                   tau=distill.T, tau_squared=distill.tau_squared)
    return losses.cross_entropy(pred, target)


def compile_step(forward: Graph, optimizer: Optimizer, *, loss: str = "cross_entropy",
                 frozen: Sequence[str] = (), penalties: Sequence[Penalty] = (),
                 features: Sequence[FeatureAugment] = (),
                 masks: Mapping[str, np.ndarray] = {},  # noqa: B006 (read only)
                 distill: Distillation | None = None, teacher: Graph | None = None) -> StepSpec:
    """Return the training step of ``forward`` (its first output is the prediction).

    ``frozen`` names parameters that are not trained (they stay constants in the step);
    ``features`` inserts feature-space augmentation (at most one mixup); ``masks`` maps
    parameters to 0/1 arrays of their shape: the forward reads ``w * mask``, so a masked
    weight is 0 after every step (penalties act on ``w`` itself). ``distill`` trains against
    a frozen teacher with the distillation loss: ``teacher`` (its inference graph, weights
    included) becomes part of the step, reading the step's input; without it the step has the
    batch input ``teacher_logits`` (the teacher's logits, shaped like the prediction).
    """
    if teacher is not None and distill is None:
        raise UsageError("a teacher needs distillation settings", where="compile_step",
                         expected="distill=Distillation(...) with teacher", got="teacher alone")
    if distill is not None and loss != "cross_entropy":
        raise UsageError("distillation trains with the cross-entropy loss", where="--loss",
                         expected="cross_entropy", got=loss)
    if distill is not None and any(f.kind == "mixup" for f in features):
        raise UsageError("a feature mixup mixes the labels but not the teacher's logits",
                         where="--feature-augment", expected="noise (or no feature "
                         "augmentation) when distilling", got="mixup",
                         hint="Mix the inputs instead (--augment mixup=ALPHA): the teacher then "
                              "sees the mixed images.")
    if teacher is not None:
        check_teacher(teacher, forward)
    g = forward.copy(f"{forward.name}_train")
    params = g.params()
    for name in frozen:
        if name not in params:
            raise unknown("parameter", name, params, cls=UsageError, where=f"graph {g.name}")
    trained = [p for p in params if p not in set(frozen)]
    if not trained:
        raise UsageError("nothing to train: every parameter is frozen",
                         expected="at least one trainable parameter", got=f"frozen {list(frozen)}")
    for p in params:
        g.nx.nodes[p]["trainable"] = p in trained
    batch_inputs = list(g.inputs)
    if sum(f.kind == "mixup" for f in features) > 1:
        raise UsageError("at most one feature mixup per step", expected="one",
                         got=sum(f.kind == "mixup" for f in features))
    feature_inputs = {_feature_augment(g, f): f for f in features}
    carried: dict[str, Value] = {}
    ratios: dict[str, float] = {}
    for node in g.op_nodes():
        if (g.op(node) == "Conv" and g.attrs(node).get("group", 1) == 1
                and g.in_values(node)[1].node in trained):
            _conv_im2col(g, node)
        elif g.op(node) == "BatchNormalization":
            if any(v.node in trained for v in g.in_values(node)[1:3] if v is not None):
                _batchnorm_train(g, node, carried)
        elif g.op(node) == "Dropout":
            name, ratio = _dropout_train(g, node)
            ratios[name] = ratio
    for name in masks:
        if name not in params:
            raise unknown("parameter", name, params, cls=UsageError, where="masks")
    # After the train-mode rewrites (Im2Col reads the weight itself) and before the penalties
    # (they act on the stored weight).
    mask_values = {name: _mask_weight(g, name, mask) for name, mask in masks.items()}
    b = GraphBuilder(g.name)
    b.graph = g
    pred = Tensor(b, g.outputs[0])
    teacher_logits = None
    if distill is not None:
        # After the train-mode rewrites: the teacher keeps its inference form.
        if teacher is not None:
            teacher_logits = Tensor(b, embed_teacher(g, teacher, Value(batch_inputs[0])))
        else:
            teacher_logits = b.input("teacher_logits", pred.shape, pred.dtype)
    total = _loss(b, loss, pred, teacher_logits, distill)
    for penalty in penalties:
        for p in penalty.params:
            if p not in params:
                raise unknown("parameter", p, params, cls=UsageError, where="penalty")
        total = total + penalty_term(b, penalty)
    batch_inputs.append("target")
    if distill is not None and teacher is None:
        batch_inputs.append("teacher_logits")
    loss_value = total.value
    initial: dict[str, np.ndarray] = {}
    for name in trained + list(carried):
        initial[name] = g.const_to_input(name)
    grads = backward(g, loss_value, [Value(p) for p in trained])
    lr = g.add_input("lr", (), np.float32)
    step = g.add_input("step", (), np.float32)
    updates: dict[str, Value] = {}
    for p in trained:
        grad = grads[Value(p)]
        if grad is None:
            t = g.type_of(Value(p))
            grad = g.add_const(f"{p}.grad.zeros", np.zeros(t.shape, t.dtype))
        slots = optimizer.state_shapes(g.type_of(Value(p)).shape)
        state_in = {}
        for slot, shape in slots.items():
            state_in[slot] = g.add_input(f"{p}.{slot}", shape, g.type_of(Value(p)).dtype)
            initial[f"{p}.{slot}"] = np.zeros(shape, g.type_of(Value(p)).dtype)
        new_p, new_state = optimizer.update(g, Value(p), grad, state_in, lr, step)
        if p in mask_values:
            # From a zero weight with zero optimizer state the update is exactly 0 already; a
            # resumed momentum or a nonzero start under the mask would move it: cut it here.
            new_p = g.add_node("Mul", [new_p, mask_values[p]], name=f"{p}.update.masked")
        updates[p] = new_p
        for slot, value in new_state.items():
            updates[f"{p}.{slot}"] = value
    updates.update(carried)
    outputs = [g.add_node("Identity", [loss_value], name="loss"), g.outputs[0]]
    order = list(initial)
    for name in order:
        outputs.append(g.add_node("Identity", [updates[name]], name=f"{name}.next"))
    g.outputs = outputs
    g.remove_dead()
    g.verify()
    return StepSpec(graph=g, params=trained, batch_inputs=batch_inputs, mask_ratios=ratios,
                    state={n: g.type_of(Value(n)).shape for n in order}, initial=initial,
                    frozen=[p for p in params if p not in trained], features=feature_inputs)


def apply_state(forward: Graph, state: Mapping[str, np.ndarray]) -> Graph:
    """Return a copy of ``forward`` whose constants named in ``state`` hold the given values
    (trained parameters and running statistics; optimizer state is ignored)."""
    g = forward.copy()
    for name, value in state.items():
        if name in g.nx and g.op(name) == CONST:
            old = g.nx.nodes[name]["value"]
            if old.shape != np.shape(value):
                raise GraphcError(f"weights for {name!r} have the wrong shape",
                                  where=g.format_node(name), expected=old.shape,
                                  got=np.shape(value))
            array = np.array(value, dtype=old.dtype)
            array.flags.writeable = False
            g.nx.nodes[name]["value"] = array
    return g

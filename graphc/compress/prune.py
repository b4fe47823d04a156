"""The course's pruning loop: rank, remove, fine-tune, repeat, until a budget or a quality floor.

``prune(build, state, train_set, test_set, goal, config)`` starts from a trained model and, in
``config.steps`` steps, removes part of it and fine-tunes the rest:

- ``method="magnitude"`` zeroes the connections with the smallest |w|
  (``graphc.compress.sparse.magnitude_masks``); fine-tuning keeps them at exactly zero (masks in
  the training step). The goal is a ``sparsity`` (fraction of zero weights) or a number of
  nonzero ``params``; FLOPs do not change (dense kernels multiply the zeros too).
- ``method="l1"`` / ``"l2"`` removes whole channels and neurons, ranked by the course's norms
  (sum |w| or sum w^2), physically sliced with their dependency groups
  (``graphc.compress.channels``). The goal is a fraction of the ``flops`` or of the ``params``
  to keep, or a ``sparsity`` (fraction of the prunable channels removed).

Step k of K aims at the goal's k-th share on a schedule that removes much early and little
late, when the remaining weights matter more: kept fraction ``goal ** (k / K)`` for FLOPs and
parameters, removed fraction ``s * (1 - (1 - k / K) ** 3)`` for a sparsity (Zhu and Gupta's
cubic schedule). After each step the model is fine-tuned for ``config.finetune_epochs`` epochs
and evaluated on the test split; if its accuracy falls below ``config.min_accuracy`` the loop
stops and keeps the model of the step before (the last good one).

What a channel-pruned model is, is recorded as data (``PruneResult.record``): the kept channel
indices of each dependency group of the original model (``channels``) and the parameters whose
zeros are masks (``sparse``). ``rebuild(build, record)`` turns the original model's ``build``
into the pruned one's, so that a checkpoint of it is an ordinary graphc checkpoint plus that
record.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from graphc.errors import UsageError, unknown
from graphc.ir import Graph, Value
from graphc.train.data import Dataset
from graphc.train.loop import (
    Build,
    EpochLog,
    Evaluator,
    TrainConfig,
    model_state,
    train,
)
from graphc.train.step import apply_state

METHODS = ("magnitude", "l1", "l2")
GOALS = ("flops", "params", "sparsity")


@dataclass(frozen=True)
class PruneConfig:
    """How to prune: ``method``, ``steps`` of removal each followed by ``finetune_epochs`` of
    training with ``train`` (a ``TrainConfig`` whose ``epochs`` is ignored), the accuracy floor
    ``min_accuracy`` (a fraction, None for none), ``scope`` (``layer``: the same share of every
    layer or group; ``global``: ranked across them), ``round_to`` (kept channel counts rounded up
    to a multiple: 8 by default, see ``graphc.passes.prune_channels``; magnitude pruning keeps
    every channel) and the batch size ``latency_batch``
    at which each step's file is timed (0: not timed)."""

    method: str = "l1"
    steps: int = 4
    finetune_epochs: int = 5
    min_accuracy: float | None = None
    scope: str = "layer"
    round_to: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)
    latency_batch: int = 256
    threads: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown("pruning method", self.method, METHODS, cls=UsageError,
                          where="--method")
        for what, value, least in (("steps", self.steps, 1),
                                   ("finetune-epochs", self.finetune_epochs, 0),
                                   ("round-to", self.round_to, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UsageError(f"--{what} must be an integer >= {least}", where=f"--{what}",
                                 expected=f"an int >= {least}", got=repr(value))
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise UsageError("the accuracy floor is out of range", where="--min-accuracy",
                             expected="a percentage in 0..100, e.g. 98.5",
                             got=f"{100 * self.min_accuracy:g}")

    @property
    def structured(self) -> bool:
        return self.method != "magnitude"


@dataclass(frozen=True)
class Goal:
    """Where pruning stops: keep a fraction ``value`` of the ``flops`` or ``params``, or remove
    a fraction ``value`` (``sparsity``: of the weights for magnitude pruning, of the prunable
    channels for l1/l2)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in GOALS:
            raise unknown("pruning goal", self.kind, GOALS, cls=UsageError)
        option = f"--{'target-' if self.kind != 'sparsity' else ''}{self.kind}"
        if not (isinstance(self.value, (int, float)) and 0 < self.value < 1):
            raise UsageError(f"{option} must be a fraction between 0 and 1", where=option,
                             expected="a number in (0, 1), e.g. 0.5", got=repr(self.value))

    def share(self, k: int, steps: int) -> float:
        """The goal of step ``k`` of ``steps``: a kept fraction (flops, params) or a removed
        fraction (sparsity)."""
        t = k / steps
        if self.kind == "sparsity":
            return self.value * (1 - (1 - t) ** 3)
        return self.value ** t


@dataclass
class Measure:
    """One model's numbers: parameters (nonzero ones), FLOPs, channels kept, weight sparsity,
    file size, accuracy on the test split, latency ratio to the dense model (NaN: not timed)."""

    params: int
    flops: int
    channels: int
    sparsity: float
    file_bytes: int
    accuracy: float
    latency_ratio: float = math.nan


@dataclass
class PruneStep:
    """One step: its goal share, the model right after removal (before fine-tuning) and after
    fine-tuning."""

    step: int
    share: float
    pruned: Measure
    tuned: Measure
    history: list[EpochLog]


@dataclass
class PruneResult:
    """The last good model's state and record, the dense model's numbers (``base``), every step
    (also the one refused by the accuracy floor) and why the loop stopped."""

    state: dict[str, np.ndarray]
    record: dict[str, Any]
    base: Measure
    steps: list[PruneStep]
    kept: int
    stopped: str
    history: list[EpochLog]

    @property
    def final(self) -> Measure:
        return self.steps[self.kept - 1].tuned if self.kept else self.base


# ----- architecture and weights -------------------------------------------------------------


def rebuild(build: Build, record: Mapping[str, Any]) -> Build:
    """Return ``build`` of the model pruned as ``record`` says (kept channels per group)."""
    channels = record.get("channels") or {}
    if not channels:
        return build

    def pruned(batch: int) -> Graph:
        from graphc.compress.channels import slice_channels

        return slice_channels(build(batch), channels)

    return pruned


def prunable_weights(g: Graph) -> list[str]:
    """The weights pruning counts: the trainable weight input of each Conv, ConvTranspose,
    Gemm and MatMul."""
    names = []
    for node in g.op_nodes():
        if g.op(node) in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            v = g.in_values(node)[1]
            if v is not None and g.nx.nodes[v.node].get("trainable") and v.node not in names:
                names.append(v.node)
    return names


def compose(record: Mapping[str, Sequence[int]], keep: Mapping[str, Sequence[int]]
            ) -> dict[str, list[int]]:
    """Return the kept channels of the original model after pruning again: ``keep`` indexes
    the channels of the model ``record`` made.

    >>> compose({"conv": [0, 2, 5, 7]}, {"conv": [1, 3], "fc": [0]})
    {'conv': [2, 7], 'fc': [0]}
    """
    out = {k: list(v) for k, v in record.items()}
    for key, indices in keep.items():
        out[key] = [out[key][i] for i in indices] if key in out else list(indices)
    return dict(sorted(out.items()))


def _inference_bytes(g: Graph, sparse: bool) -> bytes:
    from graphc.onnxio.export import to_bytes
    from graphc.pipeline import pipelines, run_pipeline

    names = pipelines()["inference"] + (["prune-magnitude"] if sparse else [])
    return to_bytes(run_pipeline(g, names)[0])


def _channels(g: Graph) -> int:
    return sum(g.type_of(Value(n)).shape[0] for n in prunable_weights(g))


def measure_model(build: Build, state: Mapping[str, np.ndarray], test_set: Dataset, *,
                  sparse: bool, dense: bytes | None = None, batch: int = 256,
                  threads: int = 1) -> tuple[Measure, bytes]:
    """Return the numbers of ``build``'s model with ``state`` and its inference file at
    ``batch``; with ``dense`` (the dense model's file at that batch), time both on onnxruntime
    and give the ratio."""
    from graphc.shapes import layer_table

    g = apply_state(build(1), state)
    weights = prunable_weights(g)
    arrays = [np.asarray(state.get(w, g.const_value(Value(w)))) for w in weights]
    total = sum(a.size for a in arrays)
    zeros = sum(int(np.count_nonzero(a == 0)) for a in arrays)
    params = sum(int(np.count_nonzero(np.asarray(g.const_value(Value(p)))))
                 for p in g.params())
    flops = sum(r.flops for r in layer_table(g))
    file_bytes = len(_inference_bytes(g, sparse))
    evaluator = Evaluator(apply_state(build(min(len(test_set), 256)), state), [],
                          "onnxruntime", threads)
    accuracy = evaluator.accuracy(test_set, {})
    timed = b""
    ratio = math.nan
    if batch:
        timed = _inference_bytes(apply_state(build(batch), state), sparse)
        if dense is not None:
            from graphc.compress.latency import measure

            rng = np.random.default_rng(0)
            shape = g.type_of(Value(g.inputs[0])).shape
            feeds = {g.inputs[0]: rng.standard_normal((batch, *shape[1:])).astype(np.float32)}
            ratio = measure([dense, timed], feeds, threads=threads, rounds=9)[1].ratio
    return Measure(params, flops, _channels(g), zeros / max(total, 1), file_bytes, accuracy,
                   ratio), timed


# ----- one step -----------------------------------------------------------------------------


def _flops_of(g: Graph) -> int:
    from graphc.shapes import layer_table

    return sum(r.flops for r in layer_table(g))


def _params_of(g: Graph) -> int:
    return g.num_params()


def prunable_channels(g: Graph) -> int:
    """The channels of ``g``'s prunable dependency groups (each group counted once)."""
    from graphc.compress.channel_groups import channel_groups

    return sum(group.channels for group in channel_groups(g) if group.prunable)


def _channel_step(g: Graph, goal: Goal, share: float, budgets: Mapping[str, float],
                  config: PruneConfig) -> dict[str, list[int]]:
    """Return the kept channels (relative to ``g``) of the smallest removal that brings the
    goal's count to ``share`` of the dense model's (``budgets``: its FLOPs, parameters and
    prunable channels). Found by bisection on the removed share, since rounding the kept
    counts makes the count a step function of it; measured against the dense model, so the
    rounding of one step does not add up over the steps."""
    from graphc.compress.channels import plan, slice_channels

    def trial(amount: float) -> tuple[dict[str, list[int]], Graph]:
        keep = plan(g, amount, method=config.method, scope=config.scope,
                    round_to=config.round_to)
        return keep, slice_channels(g, keep)

    count = {"flops": _flops_of, "params": _params_of, "sparsity": prunable_channels}[goal.kind]
    kept = share if goal.kind != "sparsity" else 1 - share
    budget = kept * budgets[goal.kind]
    low, high = 0.0, 0.99
    best = trial(high)
    if count(best[1]) > budget:
        return best[0]  # as far as the groups and the rounding go
    for _ in range(14):
        mid = (low + high) / 2
        keep, pruned = trial(mid)
        if count(pruned) <= budget:
            high, best = mid, (keep, pruned)
        else:
            low = mid
    return best[0]


def _magnitude_step(g: Graph, goal: Goal, share: float, base: Measure, config: PruneConfig
                    ) -> dict[str, np.ndarray]:
    from graphc.compress.sparse import magnitude_masks

    if goal.kind == "sparsity":
        sparsity = share
    else:
        # Nonzero parameters to keep: take them from the prunable weights only.
        weights = prunable_weights(g)
        total = sum(int(np.asarray(g.const_value(Value(w))).size) for w in weights)
        others = base.params - total
        sparsity = 1 - max(0.0, share * base.params - others) / max(total, 1)
    return magnitude_masks(g, min(max(sparsity, 0.0), 1.0), scope=config.scope,
                           params=prunable_weights(g))


def check_goal(goal: Goal, config: PruneConfig) -> None:
    """Refuse a goal the method cannot reach: FLOPs by magnitude pruning."""
    if goal.kind == "flops" and not config.structured:
        raise UsageError("magnitude pruning does not reduce FLOPs", where="--target-flops",
                         expected="--method l1 or l2 (channels) with --target-flops",
                         got="--method magnitude", hint="Dense kernels multiply the zeros "
                         "too; give --sparsity or --target-params, or prune channels.")


# ----- the loop -----------------------------------------------------------------------------


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def describe(m: Measure, base: Measure) -> str:
    """One line of numbers of ``m`` relative to the dense model ``base``."""
    latency = "" if math.isnan(m.latency_ratio) else f"  latency {m.latency_ratio:.2f}x"
    return (f"params {m.params:,} ({m.params / base.params:.2f}x)  FLOPs {m.flops:,} "
            f"({m.flops / base.flops:.2f}x)  zeros {100 * m.sparsity:.1f}%  file "
            f"{m.file_bytes / base.file_bytes:.2f}x  accuracy {100 * m.accuracy:.2f}%{latency}")


def prune(build: Build, state: Mapping[str, np.ndarray], train_set: Dataset, test_set: Dataset,
          goal: Goal, config: PruneConfig, *, record: Mapping[str, Any] | None = None,
          progress: bool = True,
          on_step: Callable[[PruneResult], None] | None = None) -> PruneResult:
    """Prune ``build``'s model, trained to ``state``, toward ``goal``; return the last good
    model. ``record`` continues from an already pruned model (what ``rebuild`` applies)."""
    check_goal(goal, config)
    record = {"channels": dict((record or {}).get("channels") or {}),
              "sparse": list((record or {}).get("sparse") or [])}
    current_build = rebuild(build, record)
    current = dict(state)
    sparse = not config.structured or bool(record["sparse"])
    base, dense = measure_model(current_build, current, test_set, sparse=sparse,
                                batch=config.latency_batch, threads=config.threads)
    base.latency_ratio = 1.0 if config.latency_batch else math.nan
    _say(progress, f"dense     {describe(base, base)}")
    result = PruneResult(dict(current), record, base, [], 0, "", [])
    budgets = {"flops": base.flops, "params": base.params,
               "sparsity": prunable_channels(apply_state(current_build(1), current))
               if config.structured else 0}
    for k in range(1, config.steps + 1):
        share = goal.share(k, config.steps)
        g = apply_state(current_build(1), current)  # FLOPs per sample, as in ``base``
        masks: dict[str, np.ndarray] = {}
        if config.structured:
            from graphc.compress.channels import slice_channels

            keep = _channel_step(g, goal, share, budgets, config)
            channels = compose(record["channels"], keep)
            step_record = {**record, "channels": channels}
            step_build = rebuild(build, step_record)
            step_state = model_state(slice_channels(g, keep))
            if record["sparse"]:
                masks = {p: step_state[p] != 0 for p in record["sparse"] if p in step_state}
        else:
            masks = _magnitude_step(g, goal, share, base, config)
            step_record = {**record, "sparse": sorted(masks)}
            step_build = current_build
            step_state = {**current, **{p: np.where(m, current[p], 0).astype(current[p].dtype)
                                        for p, m in masks.items()}}
        pruned, _ = measure_model(step_build, step_state, test_set, sparse=sparse, batch=0,
                                  threads=config.threads)
        history: list[EpochLog] = []
        if config.finetune_epochs:
            tuned_run = train(step_build, train_set, test_set,
                              replace(config.train, epochs=config.finetune_epochs),
                              state=step_state, masks=masks, progress=False)
            step_state = dict(tuned_run.state)  # with the optimizer's slots, to resume
            history = tuned_run.history
        tuned, _ = measure_model(step_build, step_state, test_set, sparse=sparse, dense=dense,
                                 batch=config.latency_batch, threads=config.threads)
        step = PruneStep(k, share, pruned, tuned, history)
        result.steps.append(step)
        before = result.final
        removed_text = (f"removed: accuracy {100 * pruned.accuracy:.2f}%"
                        if (pruned.params, pruned.sparsity) != (before.params, before.sparsity)
                        else "nothing removed (rounded counts)")
        _say(progress, f"step {k}/{config.steps}  {removed_text}  fine-tuned: "
                       f"{describe(tuned, base)}")
        if config.min_accuracy is not None and tuned.accuracy < config.min_accuracy:
            result.stopped = (f"step {k}: accuracy {100 * tuned.accuracy:.2f}% is below "
                              f"{100 * config.min_accuracy:.2f}%; kept step {k - 1}")
            break
        record, current_build, current = step_record, step_build, step_state
        result.state, result.record, result.kept = dict(current), record, k
        result.history = history
        if on_step is not None:
            on_step(result)
    if not result.stopped:
        result.stopped = f"reached the goal in {config.steps} steps"
    return result


# ----- pictures -----------------------------------------------------------------------------


def plot_pruning(result: PruneResult, before: Mapping[str, np.ndarray],
                 after: Mapping[str, np.ndarray], path: str, title: str = "") -> None:
    """Draw accuracy against FLOPs and against zero weights per step, and each layer's
    histogram of |w| before and after pruning (zeros left out), into an image file (written
    atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphc.files import write_figure

    layers = [n for n in before if n in after]
    cols = 3
    rows = 1 + math.ceil(len(layers) / cols)
    fig = plt.figure(figsize=(10, 2.8 * rows))
    points = [(0, result.base)] + [(s.step, s.tuned) for s in result.steps]
    base = result.base
    ax = fig.add_subplot(rows, cols, 1)
    ax.plot([m.flops / base.flops for _, m in points], [100 * m.accuracy for _, m in points],
            marker="o")
    for step, m in points:
        ax.annotate(str(step), (m.flops / base.flops, 100 * m.accuracy), fontsize=8,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="FLOPs (fraction of dense)", ylabel="test accuracy (%)")
    ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))
    ax.invert_xaxis()
    ax = fig.add_subplot(rows, cols, 2)
    ax.plot([1 - m.params / base.params for _, m in points],
            [100 * m.accuracy for _, m in points], marker="o")
    ax.set(xlabel="parameters removed (fraction)", ylabel="test accuracy (%)")
    ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))
    timed = [(m.flops / base.flops, m.latency_ratio) for _, m in points
             if not math.isnan(m.latency_ratio)]
    if timed:
        ax = fig.add_subplot(rows, cols, 3)
        ax.plot(*zip(*timed, strict=True), marker="o")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set(xlabel="FLOPs (fraction of dense)", ylabel="onnxruntime time / dense")
        ax.invert_xaxis()
    for axis in fig.axes:
        axis.grid(alpha=0.3)
    for i, name in enumerate(layers):
        ax = fig.add_subplot(rows, cols, cols + i + 1)
        old = np.abs(np.asarray(before[name], np.float64)).ravel()
        new = np.abs(np.asarray(after[name], np.float64)).ravel()
        bins = np.linspace(0, max(float(old.max(initial=0)), 1e-12), 40)
        ax.hist(old[old > 0], bins=bins, alpha=0.5, label=f"before ({old.size:,})")
        ax.hist(new[new > 0], bins=bins, alpha=0.7,
                label=f"after ({int(np.count_nonzero(new)):,})")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("|w|", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    write_figure(fig, path, dpi=100)

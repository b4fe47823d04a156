"""Channel dependency groups, channel scores, pruning plans and the slicing that removes channels.

A channel (a neuron of a Gemm, a feature map of a Conv) is row ``o`` of its producer's weight
and column ``o`` of every consumer's weight. Removing it means removing both, and everything
indexed by it on the way: BatchNormalization's four vectors, a per-channel constant operand, a
depthwise convolution's filter, the block of H*W columns it became after Flatten. Channels that
must go together form a group:

- a producer (Conv, incl. grouped and depthwise; ConvTranspose with group 1; Gemm or MatMul
  with a constant weight) starts a group of its output channels;
- channel-preserving ops (BatchNormalization, InstanceNormalization, unary elementwise ops,
  LeakyRelu, Clip, pools, Dropout, Identity, Cast, Pad and reductions off the channel axis,
  Softmax and LayerNormalization over other axes, Transpose) carry it on; so does a depthwise
  Conv, which passes each channel through to its own ``multiplier`` outputs;
- Flatten, and a Reshape that merges the channel axis with the axes after it, turn each channel
  into a block of columns;
- Add / Sub / Mul / Div of two such values tie their channels into one group (a residual Add:
  pruned together or not at all); Concat on the channel axis gives each input its offset range;
- consumers (Conv input channels, a grouped Conv per group, Gemm/MatMul rows of the weight)
  end it.

A group is not prunable when its channels reach a graph output, a Reshape that splits them, an
op this module does not follow, or a layer whose weight is not a constant; ``ChannelGroup.reason``
says which. A grouped Conv keeps the same number of channels in each of its groups (``blocks``).

>>> from graphc.models import load
>>> g = load("cnn").build()
>>> [(grp.key, grp.channels) for grp in channel_groups(g) if grp.prunable]
[('block1.conv', 16), ('block2.conv', 32), ('block3.conv', 64)]
>>> keep = plan(g, 0.5)
>>> slice_channels(g, keep).type_of(g.outputs[0]).shape
(1, 10)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError, UsageError, unknown
from graphc.interpret import run_node
from graphc.ir import Graph, Value
from graphc.rewrite import replace, set_const_input
from graphc.shapes import layer_table

METHODS = ("l1", "l2")
SCOPES = ("layer", "global")
UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Sign",
         "Round", "Heaviside", "Identity", "Cast", "Clip", "Dropout")
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
BINARY = ("Add", "Sub", "Mul", "Div", "Pow")
REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax")
# Ops a zero-channel branch's constant may pass through on its way to the residual Add: each
# maps a (1, C, 1, 1) constant to a (1, C, 1, 1) constant.
PER_CHANNEL = ("BatchNormalization", *UNARY, *BINARY)


@dataclass(frozen=True)
class Segment:
    """A run of positions along a value's channel axis: ``channels`` channels of group
    ``group`` (an internal id), each ``inner`` consecutive positions; ``group`` None is a run of
    ``channels`` positions that no group owns (they are never removed)."""

    group: int | None
    channels: int
    inner: int = 1

    @property
    def size(self) -> int:
        return self.channels * self.inner


@dataclass(frozen=True)
class Layout:
    """Where groups' channels sit in a value: its channel ``axis`` and the runs along it."""

    axis: int
    segments: tuple[Segment, ...]

    def scaled(self, factor: int, axis: int | None = None) -> Layout:
        """Return the layout with every position made ``factor`` consecutive positions."""
        return Layout(self.axis if axis is None else axis, tuple(
            Segment(s.group, s.channels, s.inner * factor) if s.group is not None
            else Segment(None, s.channels * factor) for s in self.segments))


@dataclass(frozen=True)
class Member:
    """A node a group's channels touch: ``role`` producer (weight rows on ``axis``), consumer
    (weight columns on ``axis``), depthwise, vectors (BatchNormalization's), operand (a
    per-channel constant), reshape, tie (Add/Sub/Mul/Div), concat or pass."""

    node: str
    role: str
    axis: int = 0


@dataclass(frozen=True)
class ChannelGroup:
    """Channels removed together: ``key`` (its first producer in topological order), the
    number of ``channels``, its ``members``, ``blocks`` (the channels form that many equal
    blocks that must keep equal counts: grouped convolutions), ``reason`` (why it cannot be
    pruned; None when it can) and ``removable`` (it may go to zero channels: a branch ending
    in a residual Add)."""

    key: str
    channels: int
    members: tuple[Member, ...]
    blocks: int = 1
    reason: str | None = None
    removable: bool = False

    @property
    def prunable(self) -> bool:
        return self.reason is None


@dataclass
class _Analysis:
    layouts: dict[Value, Layout] = field(default_factory=dict)
    parent: list[int] = field(default_factory=list)
    producer: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    members: list[list[Member]] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)

    def new(self, node: str, channels: int, member: Member, blocks: int) -> int:
        gid = len(self.parent)
        self.parent.append(gid)
        self.producer.append(node)
        self.channels.append(channels)
        self.members.append([member])
        self.reasons.append([])
        self.blocks.append(blocks)
        return gid

    def root(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        a, b = min(a, b), max(a, b)  # the earlier producer names the group
        self.parent[b] = a
        self.members[a] += self.members[b]
        self.reasons[a] += self.reasons[b]
        self.blocks[a] = math.lcm(self.blocks[a], self.blocks[b])

    def groups(self, layout: Layout | None) -> list[int]:
        if layout is None:
            return []
        return list(dict.fromkeys(self.root(s.group) for s in layout.segments
                                  if s.group is not None))

    def poison(self, layout: Layout | None, reason: str) -> None:
        for gid in self.groups(layout):
            if reason not in self.reasons[gid]:
                self.reasons[gid].append(reason)

    def add_member(self, layout: Layout | None, member: Member) -> None:
        for gid in self.groups(layout):
            self.members[gid].append(member)


def _single(layout: Layout) -> Segment | None:
    """Return the one segment of a layout owned by a group, or None."""
    if len(layout.segments) == 1 and layout.segments[0].group is not None:
        return layout.segments[0]
    return None


def _weight_node(g: Graph, node: str) -> tuple[np.ndarray | None, bool]:
    """Return (the constant weight at port 1 or None, whether the bias is absent or constant)."""
    values = g.in_values(node)
    bias = values[2] if len(values) > 2 else None
    return g.const_value(values[1]), bias is None or g.const_value(bias) is not None


def _reshape_axis(in_shape: tuple[int, ...], out_shape: tuple[int, ...], axis: int
                  ) -> tuple[int, int] | None:
    """Return (output axis, positions per input position) when the reshape keeps the axes
    before ``axis`` and merges ``axis`` with (some of) the axes after it, else None."""
    lead = math.prod(in_shape[:axis])
    trail = math.prod(in_shape[axis + 1:])
    acc = 1
    for k, dim in enumerate(out_shape):
        if acc == lead:
            rest = math.prod(out_shape[k + 1:])
            if rest and trail % rest == 0 and dim == in_shape[axis] * (trail // rest):
                return k, trail // rest
        acc *= dim
        if acc > lead:
            break
    return None


def _analyze(g: Graph) -> _Analysis:
    """Walk ``g`` in topological order and find every value's channel layout and the groups."""
    a = _Analysis()
    for n in g.op_nodes():
        _visit(g, a, n)
    for k, v in enumerate(g.outputs):
        a.poison(a.layouts.get(v), f"its channels reach the graph output %{g.output_names()[k]}")
    return a


def _visit(g: Graph, a: _Analysis, n: str) -> None:  # noqa: C901 - one case per kind of op
    op, attrs = g.op(n), g.attrs(n)
    values = g.in_values(n)
    ins = [None if v is None else a.layouts.get(v) for v in values]
    x = ins[0] if ins else None
    out_type = g.type_of(Value(n))
    handled = {0}
    where = f"%{n} ({op})"

    def out(layout: Layout | None, *extra: int) -> None:
        if layout is not None:
            for k in (0, *extra):
                a.layouts[Value(n, k)] = layout

    if op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        w, bias_ok = _weight_node(g, n)
        group = attrs.get("group", 1)
        reason = None
        if w is None:
            reason = f"{where} has a non-constant weight"
        elif op == "Gemm" and attrs.get("transA", 0):
            reason = f"{where} transposes its input (transA=1)"
        elif op == "MatMul" and w.ndim != 2:
            reason = f"{where} has a weight that is not 2-D"
        elif op == "ConvTranspose" and group != 1:
            reason = f"{where} is a grouped ConvTranspose"
        if reason:
            a.poison(x, reason)
            return _poison_rest(g, a, n, ins, handled)
        rank = len(g.type_of(values[0]).shape)
        in_axis = rank - 1 if op == "MatMul" else 1
        depthwise = op == "Conv" and group > 1 and w.shape[1] == 1
        if x is not None and x.axis != in_axis:
            a.poison(x, f"{where} reads the channels on axis {x.axis}, not {in_axis}")
            x = None
        if depthwise and x is not None:
            if not bias_ok:
                a.poison(x, f"{where} has a non-constant bias")
                return
            a.add_member(x, Member(n, "depthwise"))
            return out(x.scaled(w.shape[0] // group))
        if x is not None:
            w_in = {"Conv": 1, "ConvTranspose": 0, "MatMul": 0}.get(op, 1 if attrs.get(
                "transB", 0) else 0)
            if group > 1:
                seg = _single(x)
                if seg is None or seg.inner != 1:
                    a.poison(x, f"{where} is a grouped Conv reading channels of several groups")
                else:
                    a.blocks[a.root(seg.group)] = math.lcm(a.blocks[a.root(seg.group)], group)
            a.add_member(x, Member(n, "consumer", w_in))
        if not bias_ok:
            return
        w_out = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}.get(op, 0 if attrs.get(
            "transB", 0) else 1)
        channels = w.shape[w_out] * (group if op == "ConvTranspose" else 1)
        gid = a.new(n, channels, Member(n, "producer", w_out), group if op == "Conv" else 1)
        return out(Layout(len(out_type.shape) - 1 if op == "MatMul" else 1,
                          (Segment(gid, channels),)))

    if x is None and op != "Concat" and not (op in BINARY and any(ins)):
        return _poison_rest(g, a, n, ins, handled)

    if op in ("BatchNormalization", "InstanceNormalization"):
        params = values[1:]
        if x.axis != 1 or attrs.get("training_mode", 0):
            a.poison(x, f"{where} is in training mode" if attrs.get("training_mode", 0)
                     else f"{where} normalizes axis 1, not the channel axis {x.axis}")
        elif any(p is not None and g.const_value(p) is None for p in params):
            a.poison(x, f"{where} has non-constant parameters")
        else:
            a.add_member(x, Member(n, "vectors"))
            return out(x)
        return _poison_rest(g, a, n, ins, handled)
    if op in UNARY or op in POOLS:
        if op in POOLS and x.axis != 1:
            a.poison(x, f"{where} pools with the channels on axis {x.axis}")
            return
        if op == "MaxPool" and (g.users(Value(n, 1)) or Value(n, 1) in g.outputs):
            a.poison(x, f"{where} has its Indices output read (flat indices over the channels)")
            return
        a.add_member(x, Member(n, "pass"))
        handled |= set(range(1, len(values)))  # Clip's bounds, Dropout's ratio: scalars
        out(x, *((1,) if op == "Dropout" and len(g.types(n)) > 1 else ()))
        return _poison_rest(g, a, n, ins, handled)
    if op in ("Softmax", "LogSoftmax", "LayerNormalization"):
        axis = attrs.get("axis", -1) % len(out_type.shape)
        follows = x.axis < axis if op == "LayerNormalization" else x.axis != axis
        if follows:
            a.add_member(x, Member(n, "pass"))
            handled |= {1, 2}
            out(x)
        else:
            a.poison(x, f"{where} normalizes over the channels")
        return _poison_rest(g, a, n, ins, handled)
    if op == "Transpose":
        perm = attrs.get("perm") or tuple(reversed(range(len(out_type.shape))))
        a.add_member(x, Member(n, "pass"))
        return out(Layout(list(perm).index(x.axis), x.segments))
    if op == "Pad":
        pads = g.const_value(values[1])
        rank = len(out_type.shape)
        if pads is not None and len(values) < 4 and pads[x.axis] == 0 and pads[x.axis + rank] == 0:
            a.add_member(x, Member(n, "pass"))
            handled |= {1, 2}
            out(x)
        else:
            a.poison(x, f"{where} pads the channel axis")
        return _poison_rest(g, a, n, ins, handled)
    if op in REDUCE:
        axes = g.const_value(values[1]) if len(values) > 1 else None
        rank = len(g.type_of(values[0]).shape)
        axes = [int(k) % rank for k in axes] if axes is not None else None
        if axes and x.axis not in axes:
            a.add_member(x, Member(n, "pass"))
            keep = attrs.get("keepdims", 1)
            handled.add(1)
            out(Layout(x.axis - (0 if keep else sum(k < x.axis for k in axes)), x.segments))
        else:
            a.poison(x, f"{where} reduces over the channels")
        return _poison_rest(g, a, n, ins, handled)
    if op in ("Flatten", "Reshape"):
        in_shape = g.type_of(values[0]).shape
        found = _reshape_axis(in_shape, out_type.shape, x.axis)
        if op == "Reshape" and g.const_value(values[1]) is None:
            found = None
        handled.add(1)
        if found is None:
            a.poison(x, f"{where} splits the channel axis (input {in_shape}, output "
                        f"{out_type.shape})")
        else:
            a.add_member(x, Member(n, "reshape" if op == "Reshape" else "pass", found[0]))
            out(x.scaled(found[1], found[0]))
        return _poison_rest(g, a, n, ins, handled)
    if op in BINARY:
        return _binary(g, a, n, ins, out)
    if op == "Concat":
        return _concat(g, a, n, ins, out)
    return _poison_rest(g, a, n, ins, set())


def _poison_rest(g: Graph, a: _Analysis, n: str, ins: list[Layout | None],
                 handled: set[int]) -> None:
    for port, layout in enumerate(ins):
        if port not in handled:
            a.poison(layout, f"%{n} ({g.op(n)}) reads them on port {port}, which channel "
                             "pruning does not follow")


def _tie(a: _Analysis, x: Layout, y: Layout, why: str) -> bool:
    """Make the channels of two same-shaped layouts one group each; False if they differ."""
    pairs = list(zip(x.segments, y.segments, strict=False))
    if len(x.segments) != len(y.segments) or any(
            s.size != t.size or (s.group is None) != (t.group is None)
            or s.channels != t.channels for s, t in pairs):
        a.poison(x, why)
        a.poison(y, why)
        return False
    for s, t in pairs:
        if s.group is not None:
            a.union(s.group, t.group)
    return True


def _binary(g: Graph, a: _Analysis, n: str, ins: list[Layout | None], out: object) -> None:
    values = g.in_values(n)
    rank = len(g.type_of(Value(n)).shape)
    where = f"%{n} ({g.op(n)})"
    aligned = [None if lay is None else Layout(lay.axis + rank - len(g.type_of(v).shape),
                                               lay.segments)
               for lay, v in zip(ins, values, strict=True)]
    tracked = [lay for lay in aligned if lay is not None]
    if len(tracked) == 2:
        x, y = tracked
        if x.axis != y.axis:
            a.poison(x, f"{where} combines channels on different axes")
            a.poison(y, f"{where} combines channels on different axes")
        elif _tie(a, x, y, f"{where} combines channels laid out differently"):
            a.add_member(x, Member(n, "tie"))
            out(x)
        return
    x = tracked[0]
    port = 1 - aligned.index(x)
    other = values[port]
    shape = g.type_of(other).shape
    dim = (1,) * (rank - len(shape)) + tuple(shape)
    dim = dim[x.axis]
    size = sum(s.size for s in x.segments)
    if dim == 1:
        a.add_member(x, Member(n, "pass"))
        return out(x)
    if dim == size and g.const_value(other) is not None:
        a.add_member(x, Member(n, "operand", port))
        return out(x)
    a.poison(x, f"{where} combines them with %{other.node}, whose channels are not pruned "
                "with them")


def _concat(g: Graph, a: _Analysis, n: str, ins: list[Layout | None], out: object) -> None:
    values = g.in_values(n)
    rank = len(g.type_of(Value(n)).shape)
    axis = g.attrs(n)["axis"] % rank
    where = f"%{n} (Concat)"
    tracked = [lay for lay in ins if lay is not None]
    if any(lay.axis != axis for lay in tracked):
        first = tracked[0]
        if len(tracked) == len(ins) and all(
                lay.axis == first.axis and _tie(a, first, lay, f"{where} joins channels laid "
                                                "out differently") for lay in tracked[1:]):
            a.add_member(first, Member(n, "tie"))
            return out(first)
        for lay in tracked:
            a.poison(lay, f"{where} joins them along axis {axis}, not their channel axis")
        return
    segments: list[Segment] = []
    for lay, v in zip(ins, values, strict=True):
        if lay is None:
            segments.append(Segment(None, g.type_of(v).shape[axis]))
        else:
            a.add_member(lay, Member(n, "concat"))
            segments += lay.segments
    out(Layout(axis, tuple(segments)))


# ----- groups, scores, plans ----------------------------------------------------------------


def _chain_end(g: Graph, consumer: str) -> tuple[list[str], str, int] | None:
    """Return (per-channel nodes, the Add, its port) when ``consumer``'s output reaches a
    residual Add (or Sub) only through per-channel ops with constant other inputs, else None."""
    value, chain = Value(consumer), []
    while True:
        users = g.users(value)
        if len(users) != 1 or value in g.outputs:
            return None
        node, port = users[0]
        others = [v for k, v in enumerate(g.in_values(node)) if k != port and v is not None]
        if g.op(node) in ("Add", "Sub") and len(others) == 1 and g.const_value(
                others[0]) is None and g.type_of(others[0]) == g.type_of(Value(node)):
            return chain, node, port
        if g.op(node) not in PER_CHANNEL or port != 0 and g.op(node) not in BINARY or any(
                g.const_value(v) is None for v in others):
            return None
        chain.append(node)
        value = Value(node)


def _removable(g: Graph, a: _Analysis, gid: int) -> bool:
    members = a.members[gid]
    consumers = [m.node for m in members if m.role == "consumer"]
    if not consumers or any(m.role in ("tie", "concat", "depthwise") for m in members):
        return False
    for node in consumers:
        x = a.layouts.get(g.in_values(node)[0])
        seg = _single(x) if x is not None else None
        if (seg is None or a.root(seg.group) != gid or g.attrs(node).get("group", 1) != 1
                or g.op(node) == "ConvTranspose" or _chain_end(g, node) is None):
            return False
    return True


def _groups(g: Graph, a: _Analysis) -> list[ChannelGroup]:
    result = []
    for gid in range(len(a.parent)):
        if a.root(gid) != gid:
            continue
        reasons = a.reasons[gid]
        result.append(ChannelGroup(
            key=a.producer[gid], channels=a.channels[gid],
            members=tuple(dict.fromkeys(a.members[gid])), blocks=a.blocks[gid],
            reason=reasons[0] if reasons else None, removable=_removable(g, a, gid)))
    return result


def channel_groups(g: Graph) -> list[ChannelGroup]:
    """Return the channel dependency groups of ``g``, in topological order of their keys.

    Unprunable groups are listed too, with their ``reason``; ``plan`` leaves them alone.

    >>> from graphc.models import load
    >>> groups = channel_groups(load("residual").build())
    >>> [(grp.key, grp.channels, grp.prunable) for grp in groups]
    [('conv1', 16, True), ('logits', 10, False)]
    >>> groups[1].reason
    'its channels reach the graph output %logits'
    """
    return _groups(g, _analyze(g))


def channel_scores(g: Graph, group: ChannelGroup, method: str = "l1") -> np.ndarray:
    """Return each channel's score: sum |w| (``"l1"``) or sum w^2 (``"l2"``) over the rows of
    the group's producers, each row taken with the BatchNormalization that directly follows
    its producer folded in (``w * gamma / sqrt(var + eps)``), summed over the producers.

    Why folded: BatchNormalization makes a layer invariant to the scale of its weights (BN(aWx)
    = BN(Wx)), so the raw row norm says nothing about how large the channel is after BN; the
    folded row is the weight the inference pipeline runs, and ranking by it gives the same
    choice whether pruning runs before or after fold-batchnorm. Consumers' columns are not
    included: they are the next layer's view of the channel, and a residual group would count
    the same channel's reads many times.

    >>> from graphc.models import load
    >>> g = load("cnn").build()
    >>> channel_scores(g, channel_groups(g)[0]).shape
    (16,)
    """
    if method not in METHODS:
        raise unknown("scoring method", method, METHODS, cls=UsageError)
    total = np.zeros(group.channels, np.float64)
    for m in group.members:
        if m.role != "producer":
            continue
        w = g.const_value(g.in_values(m.node)[1]).astype(np.float64)
        w = np.moveaxis(w, m.axis, 0).reshape(w.shape[m.axis], -1)
        users = g.users(Value(m.node))
        if len(users) == 1 and g.op(users[0][0]) == "BatchNormalization" and users[0][1] == 0:
            bn = users[0][0]
            gamma, var = (g.const_value(g.in_values(bn)[k]) for k in (1, 4))
            if gamma is not None and var is not None:
                eps = g.attrs(bn).get("epsilon", 1e-5)
                w = w * (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))[:, None]
        total += np.abs(w).sum(1) if method == "l1" else (w * w).sum(1)
    return total


def _keep_count(group: ChannelGroup, wanted: int, round_to: int, min_channels: int) -> int:
    """Round a kept count up to a multiple of ``round_to`` and of the group's blocks, within
    [min_channels (1 unless the group is removable), channels]."""
    floor = min_channels if group.removable else max(min_channels, 1)
    count = max(wanted, floor)
    step = math.lcm(round_to, group.blocks)
    count = -(-count // step) * step
    if count > group.channels:
        count = group.channels
    return count


def _choose(scores: np.ndarray, count: int, blocks: int) -> list[int]:
    """Return the indices of the ``count`` largest scores, the same number in each block
    (ties keep the lower index)."""
    size = len(scores) // blocks
    kept: list[int] = []
    for b in range(blocks):
        part = scores[b * size:(b + 1) * size]
        order = np.argsort(-part, kind="stable")[:count // blocks]
        kept += [b * size + int(i) for i in order]
    return sorted(kept)


def check_options(amount: float, method: str, scope: str, round_to: int,
                  min_channels: int) -> None:
    """Refuse option values the pruning does not know, as a UsageError with expected/got."""
    if method not in METHODS:
        raise unknown("scoring method", method, METHODS, cls=UsageError, where="method")
    if scope not in SCOPES:
        raise unknown("pruning scope", scope, SCOPES, cls=UsageError, where="scope")
    if not isinstance(amount, (int, float)) or not 0.0 <= amount <= 1.0:
        raise UsageError("the fraction of channels to remove is out of range", where="amount",
                         expected="a number in [0, 1]", got=amount)
    for name, value, least in (("round_to", round_to, 1), ("min_channels", min_channels, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise UsageError(f"{name} must be an integer >= {least}", where=name,
                             expected=f"an integer >= {least}", got=value)


def plan(g: Graph, amount: float, *, method: str = "l1", scope: str = "layer",
         round_to: int = 1, min_channels: int = 1) -> dict[str, list[int]]:
    """Return the kept channel indices (sorted) of every prunable group, by group key.

    ``scope="layer"`` removes ``floor(amount * channels)`` of each group's channels with the
    smallest scores; ``"global"`` removes ``floor(amount * all channels)`` with the smallest
    normalized scores over all groups (each score divided by its group's mean, so that layers
    whose weights differ in scale compare fairly). Kept counts are then rounded up to a multiple
    of ``round_to`` (and of a grouped Conv's group count), at least ``min_channels`` (zero only
    for a removable group), at most the group's channels.

    >>> from graphc.models import load
    >>> {k: len(v) for k, v in plan(load("cnn").build(), 0.5, round_to=16).items()}
    {'block1.conv': 16, 'block2.conv': 16, 'block3.conv': 32}
    """
    check_options(amount, method, scope, round_to, min_channels)
    groups = [grp for grp in channel_groups(g) if grp.prunable]
    scores = [channel_scores(g, grp, method) for grp in groups]
    if scope == "layer":
        removed = [int(math.floor(amount * grp.channels + 1e-9)) for grp in groups]
    else:
        normalized = [s / s.mean() if s.mean() > 0 else s for s in scores]
        flat = np.concatenate(normalized) if normalized else np.zeros(0)
        owner = np.concatenate([np.full(grp.channels, i) for i, grp in enumerate(groups)]) \
            if groups else np.zeros(0, int)
        cut = int(math.floor(amount * len(flat) + 1e-9))
        lowest = owner[np.argsort(flat, kind="stable")[:cut]]
        removed = [int(np.sum(lowest == i)) for i in range(len(groups))]
    keep = {}
    for grp, s, r in zip(groups, scores, removed, strict=True):
        count = _keep_count(grp, grp.channels - r, round_to, min_channels)
        keep[grp.key] = _choose(s, count, grp.blocks)
    return keep


# ----- slicing ------------------------------------------------------------------------------


def _check_keep(groups: Mapping[str, ChannelGroup], keep: Mapping[str, Sequence[int]]
                ) -> dict[str, np.ndarray]:
    """Return the record as sorted index arrays; raise on unknown keys and bad indices."""
    checked = {}
    for key, indices in keep.items():
        if key not in groups:
            raise unknown("channel group", key, [k for k, grp in groups.items()
                                                 if grp.prunable], where="keep")
        grp = groups[key]
        if not grp.prunable:
            raise GraphcError(f"channel group {key!r} cannot be pruned", where="keep",
                              expected="a prunable group", got=grp.reason)
        arr = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= grp.channels):
            raise GraphcError(f"channel index out of range in group {key!r}", where="keep",
                              expected=f"indices in 0..{grp.channels - 1}",
                              got=[int(i) for i in arr if not 0 <= i < grp.channels])
        if len(set(arr.tolist())) != arr.size:
            raise GraphcError(f"repeated channel index in group {key!r}", where="keep",
                              expected="distinct indices", got=sorted(arr.tolist()))
        arr = np.sort(arr)
        counts = np.bincount(arr // (grp.channels // grp.blocks), minlength=grp.blocks)
        if grp.blocks > 1 and len(set(counts.tolist())) > 1:
            raise GraphcError(f"group {key!r} feeds a grouped convolution", where="keep",
                              expected=f"the same number of channels in each of its "
                              f"{grp.blocks} blocks", got=f"counts {counts.tolist()}")
        if arr.size == 0 and not grp.removable:
            raise GraphcError(f"group {key!r} cannot lose all its channels", where="keep",
                              expected="at least 1 index", got="none",
                              hint="Only a branch whose output ends in a residual Add can "
                                   "be removed whole.")
        checked[key] = arr
    return checked


def _positions(a: _Analysis, layout: Layout, kept: Mapping[int, np.ndarray]) -> np.ndarray:
    """Return the kept positions along a layout's axis, in order."""
    parts, offset = [], 0
    for s in layout.segments:
        if s.group is None:
            parts.append(np.arange(offset, offset + s.size))
        else:
            chans = kept.get(a.root(s.group), np.arange(s.channels))
            parts.append((offset + chans[:, None] * s.inner + np.arange(s.inner)).reshape(-1))
        offset += s.size
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _set(g: Graph, node: str, port: int, array: np.ndarray, dtype: np.dtype) -> None:
    set_const_input(g, node, port, np.ascontiguousarray(array).astype(dtype, copy=False),
                    f"{node}.{port}")


def _slice_weights(g: Graph, a: _Analysis, n: str, kept: Mapping[int, np.ndarray]) -> None:
    """Slice the weight and bias of a Conv, ConvTranspose, Gemm or MatMul node: rows by its
    output channels, columns by its input channels (all roles of the node at once, on the
    original arrays)."""
    op, values = g.op(n), g.in_values(n)
    w = g.const_value(values[1])
    x, y = a.layouts.get(values[0]), a.layouts.get(Value(n))
    group = g.attrs(n).get("group", 1)
    rows = _positions(a, y, kept) if y is not None else None
    cols = _positions(a, x, kept) if x is not None else None
    new = w
    if op == "Conv" and group > 1 and w.shape[1] == 1 and x is not None:
        new = w[rows]  # depthwise: its filters follow the channels, one group per channel
        g.attrs(n)["group"] = int(cols.size)
    elif op == "Conv":
        if rows is not None:
            new = new[rows]
        if cols is not None and group > 1:
            cin_g, cout_g = w.shape[1], w.shape[0] // group
            per_block = cols.reshape(group, -1) - (np.arange(group) * cin_g)[:, None]
            block = (rows if rows is not None else np.arange(w.shape[0])) // cout_g
            new = new[np.arange(len(new))[:, None], per_block[block]]
        elif cols is not None:
            new = new[:, cols]
    else:
        w_out = 0 if op == "Gemm" and g.attrs(n).get("transB", 0) else 1
        if rows is not None:
            new = np.take(new, rows, axis=w_out)
        if cols is not None:
            new = np.take(new, cols, axis=1 - w_out)
    if new.shape != w.shape:
        _set(g, n, 1, new, w.dtype)
    bias = g.const_value(values[2]) if len(values) > 2 else None
    size = sum(s.size for s in y.segments) if y is not None else 0
    # A bias that broadcasts over the channels (Gemm's C of shape (1,) or ()) stays.
    if rows is not None and bias is not None and bias.ndim and bias.shape[-1] == size \
            and rows.size != size:
        _set(g, n, 2, np.take(bias, rows, axis=-1), bias.dtype)


def _slice_node(g: Graph, a: _Analysis, m: Member, kept: Mapping[int, np.ndarray]) -> None:
    """Slice what member ``m`` holds of the channels (weights, vectors, operand, shape)."""
    n, values = m.node, g.in_values(m.node)
    if m.role in ("producer", "consumer", "depthwise"):
        _slice_weights(g, a, n, kept)
    elif m.role == "vectors":
        pos = _positions(a, a.layouts[values[0]], kept)
        for port in range(1, len(values)):
            array = g.const_value(values[port])
            if array is not None and len(array) != len(pos):
                _set(g, n, port, array[pos], array.dtype)
    elif m.role == "operand":
        x = a.layouts[values[1 - m.axis]]
        array = g.const_value(values[m.axis])
        rank = len(g.type_of(Value(n)).shape)
        axis = x.axis + rank - len(g.type_of(values[1 - m.axis]).shape) - (rank - array.ndim)
        pos = _positions(a, x, kept)
        if array.shape[axis] != len(pos):
            _set(g, n, m.axis, np.take(array, pos, axis=axis), array.dtype)
    elif m.role == "reshape":
        shape = g.const_value(values[1]).copy()
        size = len(_positions(a, a.layouts[Value(n)], kept))
        x_axis = a.layouts[values[0]].axis
        if shape[m.axis] == -1 or (shape[m.axis] == 0 and m.axis == x_axis):
            return
        if shape[m.axis] != size:
            shape[m.axis] = size
            _set(g, n, 1, shape, shape.dtype)


def _remove_branch(g: Graph, consumer: str) -> None:
    """Replace a consumer that lost all its input channels by the constant it now computes
    (its bias), carried through the per-channel ops after it into the residual Add; drop the
    Add when the constant is zero."""
    op, values = g.op(consumer), g.in_values(consumer)
    ttype = g.type_of(Value(consumer))
    rank = len(ttype.shape)
    bias = g.const_value(values[2]) if len(values) > 2 else None
    axis = 1 if op in ("Conv", "Gemm") else rank - 1
    channels = (g.const_value(values[1]).shape[0] if op == "Conv" else
                g.const_value(values[1]).shape[0 if g.attrs(consumer).get("transB") else 1]
                if op == "Gemm" else g.const_value(values[1]).shape[1])
    shape = [1] * rank
    shape[axis] = channels
    value = np.zeros(shape, ttype.dtype)
    if bias is not None:
        beta = g.attrs(consumer).get("beta", 1.0) if op == "Gemm" else 1.0
        value = value + beta * (bias.reshape(shape) if bias.size == channels else bias)
    chain, add, port = _chain_end(g, consumer)
    previous = consumer
    for node in chain:
        inputs = [value if v is not None and v.node == previous else g.const_value(v)
                  for v in g.in_values(node)]
        value = run_node(g, node, inputs)[0]
        previous = node
    value = np.asarray(value, ttype.dtype)
    if not value.any() and (g.op(add) == "Add" or port == 1):
        replace(g, Value(add), g.in_values(add)[1 - port])
    else:
        set_const_input(g, add, port, value, f"{add}.branch")


def slice_channels(g: Graph, keep: Mapping[str, Sequence[int]]) -> Graph:
    """Return a copy of ``g`` with only the channels in ``keep`` (group key -> kept indices)
    of each group it names; groups it does not name keep all their channels.

    Every member is sliced: producers' weight rows and biases, BatchNormalization's vectors,
    consumers' weight columns (per group for a grouped Conv; blocks of columns after Flatten),
    depthwise filters and their ``group``, per-channel constant operands, Reshape shapes;
    Concat offsets follow. A removable group kept at zero channels vanishes: each consumer
    becomes its bias, carried through the per-channel ops after it into the residual Add (the
    Add disappears when that constant is zero). The record is the same for any batch size,
    which is how a pruned checkpoint's architecture is rebuilt.

    >>> from graphc.models import load
    >>> g = slice_channels(load("cnn").build(), {"block1.conv": [0, 1, 2, 3]})
    >>> g.type_of(Value("block1.relu")).shape
    (1, 4, 8, 8)
    """
    a = _analyze(g)
    groups = {grp.key: grp for grp in _groups(g, a)}
    checked = _check_keep(groups, keep)
    roots = {a.producer[gid]: gid for gid in range(len(a.parent)) if a.root(gid) == gid}
    kept = {roots[k]: v for k, v in checked.items()}
    out = g.copy()
    sliced: set[tuple[str, str]] = set()
    for gid in kept:
        for m in a.members[gid]:
            # A node in several groups (a layer's rows and columns) is sliced once, for all.
            role = "weights" if m.role in ("producer", "consumer", "depthwise") else m.role
            if (m.node, role) not in sliced:
                sliced.add((m.node, role))
                _slice_node(out, a, m, kept)
    for gid, indices in kept.items():
        if indices.size == 0:
            for m in a.members[gid]:
                if m.role == "consumer":
                    _remove_branch(out, m.node)
    for node in out.op_nodes():
        out.nx.nodes[node]["types"] = out.infer(node)
    out.verify()
    return out


def count_params(g: Graph) -> int:
    """Return the number of trainable parameters the op nodes read (as ``graphc show``)."""
    return sum(row.params for row in layer_table(g))


def count_flops(g: Graph) -> int:
    """Return the FLOPs of one call, summed over the op nodes (as ``graphc show``)."""
    return sum(row.flops for row in layer_table(g))

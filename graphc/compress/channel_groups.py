"""Channel dependency groups: which channels of a graph must be removed together, or cannot be.

A channel (a neuron of a Gemm, a feature map of a Conv) is row ``o`` of its producer's weight
and column ``o`` of every consumer's weight. Removing it means removing both, and everything
indexed by it on the way: BatchNormalization's four vectors, a per-channel constant operand, a
depthwise convolution's filter, the block of H*W columns it became after Flatten. Channels that
must go together form a group:

- a producer (Conv, incl. grouped and depthwise; ConvTranspose with group 1; Gemm or MatMul
  with a constant weight) starts a group of its output channels;
- channel-preserving ops (BatchNormalization, InstanceNormalization, unary elementwise ops and
  activations (Gelu, HardSwish, HardSigmoid, Erf, LeakyRelu, ...), Clip, pools, Dropout,
  Identity, Cast, Pad and reductions off the channel axis,
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
Scoring, planning and slicing the groups is ``graphc.compress.channels``.

>>> from graphc.models import load
>>> g = load("cnn").build()
>>> [(grp.key, grp.channels) for grp in channel_groups(g) if grp.prunable]
[('block1.conv', 16), ('block2.conv', 32), ('block3.conv', 64)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphc.ir import Graph, Value

UNARY = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Sign",
         "Round", "Heaviside", "Identity", "Cast", "Clip", "Dropout", "Erf", "Gelu", "HardSigmoid",
         "HardSwish")
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
class Analysis:
    """What ``analyze`` found: the channel ``layouts`` of the values it follows, and the groups
    as a union-find over internal ids (``parent``; a root id is a group), each with its first
    ``producer``, its number of ``channels``, its ``members``, the ``reasons`` it cannot be
    pruned and its ``blocks``. Slicing reads it to find every position a kept channel occupies.
    """

    layouts: dict[Value, Layout] = field(default_factory=dict)
    parent: list[int] = field(default_factory=list)
    producer: list[str] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    members: list[list[Member]] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)

    def new(self, node: str, channels: int, member: Member, blocks: int) -> int:
        """Start a group of ``channels`` channels produced by ``node``; return its id."""
        gid = len(self.parent)
        self.parent.append(gid)
        self.producer.append(node)
        self.channels.append(channels)
        self.members.append([member])
        self.reasons.append([])
        self.blocks.append(blocks)
        return gid

    def root(self, gid: int) -> int:
        """Return the id of the group that ``gid`` has been merged into."""
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        """Merge the groups of ``a`` and ``b`` into one, named by the earlier producer."""
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        a, b = min(a, b), max(a, b)  # the earlier producer names the group
        self.parent[b] = a
        self.members[a] += self.members[b]
        self.reasons[a] += self.reasons[b]
        self.blocks[a] = math.lcm(self.blocks[a], self.blocks[b])

    def groups(self, layout: Layout | None) -> list[int]:
        """Return the groups (root ids) whose channels sit in ``layout``."""
        if layout is None:
            return []
        return list(dict.fromkeys(self.root(s.group) for s in layout.segments
                                  if s.group is not None))

    def poison(self, layout: Layout | None, reason: str) -> None:
        """Mark the groups in ``layout`` as not prunable, for ``reason``."""
        for gid in self.groups(layout):
            if reason not in self.reasons[gid]:
                self.reasons[gid].append(reason)

    def add_member(self, layout: Layout | None, member: Member) -> None:
        """Record that ``member`` touches the channels of the groups in ``layout``."""
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


def analyze(g: Graph) -> Analysis:
    """Walk ``g`` in topological order and find every value's channel layout and the groups.

    >>> from graphc.models import load
    >>> a = analyze(load("residual").build())
    >>> a.producer, [a.root(gid) for gid in range(len(a.parent))]
    (['conv1', 'conv2', 'logits'], [0, 0, 2])
    >>> a.layouts[Value("relu2")]
    Layout(axis=1, segments=(Segment(group=1, channels=16, inner=1),))
    """
    a = Analysis()
    for n in g.op_nodes():
        _visit(g, a, n)
    for k, v in enumerate(g.outputs):
        a.poison(a.layouts.get(v), f"its channels reach the graph output %{g.output_names()[k]}")
    return a


def _visit(g: Graph, a: Analysis, n: str) -> None:  # noqa: C901 - one case per kind of op
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


def _poison_rest(g: Graph, a: Analysis, n: str, ins: list[Layout | None],
                 handled: set[int]) -> None:
    for port, layout in enumerate(ins):
        if port not in handled:
            a.poison(layout, f"%{n} ({g.op(n)}) reads them on port {port}, which channel "
                             "pruning does not follow")


def _tie(a: Analysis, x: Layout, y: Layout, why: str) -> bool:
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


def _binary(g: Graph, a: Analysis, n: str, ins: list[Layout | None], out: object) -> None:
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


def _concat(g: Graph, a: Analysis, n: str, ins: list[Layout | None], out: object) -> None:
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


# ----- groups -------------------------------------------------------------------------------


def chain_end(g: Graph, consumer: str) -> tuple[list[str], str, int] | None:
    """Return (per-channel nodes, the Add, its port) when ``consumer``'s output reaches a
    residual Add (or Sub) only through per-channel ops with constant other inputs, else None.

    >>> from graphc.models import load
    >>> g = load("residual").build()
    >>> chain_end(g, "conv2"), chain_end(g, "conv1")
    ((['bn2'], 'add', 0), None)
    """
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


def _removable(g: Graph, a: Analysis, gid: int) -> bool:
    members = a.members[gid]
    consumers = [m.node for m in members if m.role == "consumer"]
    if not consumers or any(m.role in ("tie", "concat", "depthwise") for m in members):
        return False
    for node in consumers:
        x = a.layouts.get(g.in_values(node)[0])
        seg = _single(x) if x is not None else None
        if (seg is None or a.root(seg.group) != gid or g.attrs(node).get("group", 1) != 1
                or g.op(node) == "ConvTranspose" or chain_end(g, node) is None):
            return False
    return True


def groups_of(g: Graph, a: Analysis) -> list[ChannelGroup]:
    """Return the groups of ``a`` (the analysis of ``g``) as ChannelGroup records, in the order
    of their first producers: ``channel_groups`` for a caller that also reads the analysis.

    >>> from graphc.models import load
    >>> g = load("residual").build()
    >>> [(grp.key, grp.removable) for grp in groups_of(g, analyze(g))]
    [('conv1', False), ('logits', False)]
    """
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
    return groups_of(g, analyze(g))

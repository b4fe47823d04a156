"""Channel pruning on the dependency groups: channel scores, pruning plans and the slicing
that removes channels.

The groups (``graphc.compress.channel_groups``) say which channels must go together. Here each
group's channels are scored (``channel_scores``: the norm of the producers' rows with the
following BatchNormalization folded in), a plan picks the channels to keep (``plan``: per layer
or over all groups, counts rounded for speed) and ``slice_channels`` removes the others from
every member of their group, giving a smaller graph that computes the same function of the
kept channels. ``count_params`` and ``count_flops`` measure the result.

>>> from graphc.models import load
>>> g = load("cnn").build()
>>> keep = plan(g, 0.5)
>>> {k: len(v) for k, v in keep.items()}
{'block1.conv': 8, 'block2.conv': 16, 'block3.conv': 32}
>>> slice_channels(g, keep).type_of(g.outputs[0]).shape
(1, 10)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from graphc.compress.channel_groups import (
    Analysis,
    ChannelGroup,
    Layout,
    Member,
    analyze,
    chain_end,
    channel_groups,
    groups_of,
)
from graphc.errors import GraphcError, UsageError, unknown
from graphc.interpret import run_node
from graphc.ir import Graph, Value
from graphc.rewrite import replace, set_const_input
from graphc.shapes import layer_table

METHODS = ("l1", "l2")
SCOPES = ("layer", "global")


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


def _positions(a: Analysis, layout: Layout, kept: Mapping[int, np.ndarray]) -> np.ndarray:
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


def _slice_weights(g: Graph, a: Analysis, n: str, kept: Mapping[int, np.ndarray]) -> None:
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


def _slice_node(g: Graph, a: Analysis, m: Member, kept: Mapping[int, np.ndarray]) -> None:
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
    chain, add, port = chain_end(g, consumer)
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
    a = analyze(g)
    groups = {grp.key: grp for grp in groups_of(g, a)}
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

"""Remove whole channels (neurons, feature maps) with the smallest norms, slicing the tensors.

A channel o of layer i is row o of its weight W_i (and b_i[o]) and column o of the next
layer's weight W_{i+1}. Removing the set R of channels turns

    y_i = f(W_i x + b_i),  y_{i+1} = W_{i+1} y_i + b_{i+1}

into the same network with W_i' = W_i[keep, :], b_i' = b_i[keep], W_{i+1}' = W_{i+1}[:, keep]
(for a Conv, rows and columns are whole filters and whole input maps). Every per-channel
vector on the way is sliced alike (BatchNormalization's gamma, beta, mean and variance), and
after Flatten a channel is a block of H*W columns. When the removed channels output exactly zero
(``f(0) = 0`` after their BN), the outputs do not change; otherwise they change by the removed
channels' contribution.

Channels are ranked per dependency group (graphc.compress.channel_groups): the channels that must
go together, e.g. every conv whose output meets the same residual Add. Score: sum |w| (L1,
``method="l1"``) or sum w^2 (L2) of the channel's producer rows, with the BatchNormalization
that follows folded in. ``scope="layer"`` removes ``floor(amount * C)`` channels of each group;
``"global"`` ranks all channels by their score over their group's mean. ``round_to`` rounds
each kept count up to a multiple, 8 by default: onnxruntime's CPU convolutions run odd channel
counts slowly (the digits cnn at 7/13/26 channels ran 2.2x slower at batch 256 than at 8/16/32,
with fewer FLOPs; at half its FLOPs with unrounded counts, 1.18x slower than the dense model),
while multiples of 8 ran as fast as multiples of 16 (docs/pruning.md). ``keep`` replays a
record (group key -> kept indices) instead of ranking: the record is what a pruned checkpoint
stores to rebuild its architecture.

Refuses (the group keeps all its channels; the reason is shown with -v): channels that reach a
graph output, that pass through a Reshape splitting them or an op the groups do not follow
(a Softmax over them, a GroupNormalization, MaxPool indices, ...), or that meet a layer whose
weight is not a constant. Bad options are usage errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from graphc.compress.channel_groups import channel_groups
from graphc.compress.channels import (
    check_options,
    count_flops,
    count_params,
    plan,
    slice_channels,
)
from graphc.errors import UsageError
from graphc.ir import Graph
from graphc.rewrite import PassReport


def prune_channels(g: Graph, *, amount: float = 0.5, method: str = "l1", scope: str = "layer",
                   round_to: int = 8, min_channels: int = 1,
                   keep: Mapping[str, Sequence[int]] | None = None,
                   report: PassReport | None = None) -> Graph:
    """Return ``g`` with ``amount`` of the channels of each prunable group removed (the
    smallest by ``method``), or exactly the channels of the record ``keep``.

    >>> from graphc.models import load
    >>> report = PassReport("prune-channels")
    >>> pruned = prune_channels(load("cnn").build(), amount=0.5, report=report)
    >>> report.notes[0]
    'block1.conv   8/16 channels'
    """
    check_options(amount, method, scope, round_to, min_channels)
    if keep is not None and not isinstance(keep, Mapping):
        raise UsageError("keep must map group keys to kept channel indices", where="keep",
                         expected="a mapping such as {'conv1': [0, 2, 3]}",
                         got=type(keep).__name__)
    groups = channel_groups(g)
    if keep is None:
        keep = plan(g, amount, method=method, scope=scope, round_to=round_to,
                    min_channels=min_channels)
    new = slice_channels(g, keep)
    if report is not None:
        width = max([len(grp.key) for grp in groups] + [12])
        for grp in groups:
            if grp.prunable:
                kept = len(keep.get(grp.key, range(grp.channels)))
                tied = [m.node for m in grp.members if m.role == "producer"][1:]
                with_ = f" (with {', '.join(tied)})" if tied else ""
                report.notes.append(f"{grp.key:<{width}}  {kept}/{grp.channels} channels{with_}")
            else:
                report.refuse(g.format_node(grp.key, types=False), grp.reason)
        report.rewrites += sum(len(v) < grp.channels for grp in groups
                               for k, v in keep.items() if k == grp.key)
        report.notes.append(f"{'parameters':<{width}}  {count_params(g):,} -> "
                            f"{count_params(new):,}")
        report.notes.append(f"{'FLOPs':<{width}}  {count_flops(g):,} -> {count_flops(new):,}")
    return new

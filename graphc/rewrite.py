"""Local rewrites: a small pattern matcher, a fixpoint rewriter and the shared escape check.

A ``Pattern`` describes a node by op and, port by port, what feeds it: another pattern (the
producer must match it), a capture name (any value, bound to that name; ``"b?"`` may be absent)
or ``None`` (anything). A name bound twice must match the same node or value, so ``x * x`` is
``pat("Mul", "x", "x")``.

A ``Rule`` pairs a pattern with a function that either returns the value replacing the matched
root (it may add nodes and may change matched nodes in place: passes run on a copy) or declines
with a reason. Before a rule runs, the engine checks that no matched node other than the root
has users outside the match, so a fusion never changes a value someone else reads.

>>> from graphc.dsl import GraphBuilder
>>> b = GraphBuilder("sq")
>>> x = b.input("x", (2,))
>>> _ = b.output(x * x, "y")
>>> g = b.build()
>>> m = match(g, pat("Mul", "a", "a"), "y")
>>> m.values["a"]
Value(node='x', out=0)
>>> match(g, pat("Mul", "a", pat("Relu")), "y") is None
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.ops.base import type_of


@dataclass(frozen=True)
class Pattern:
    """A node of op ``op`` (or one of several) whose input ports match ``inputs``."""

    op: str | tuple[str, ...]
    inputs: tuple[Pattern | str | None, ...] = ()
    name: str | None = None


def pat(op: str | tuple[str, ...], *inputs: Pattern | str | None,
        name: str | None = None) -> Pattern:
    """Return a ``Pattern``: ``pat("BatchNormalization", pat("Conv", "x", "w", "b?"), ...)``."""
    return Pattern(op, tuple(inputs), name)


@dataclass
class Match:
    """What a pattern bound: named nodes, captured values, and every matched node id."""

    root: str
    nodes: dict[str, str] = field(default_factory=dict)
    values: dict[str, Value | None] = field(default_factory=dict)
    matched: list[str] = field(default_factory=list)

    def const(self, g: Graph, name: str) -> np.ndarray | None:
        """Return the array of captured value ``name`` if it is a constant, else ``None``."""
        return g.const_value(self.values.get(name))


@dataclass(frozen=True)
class Decline:
    """A rule's refusal, with the reason shown by ``graphc compile -v``.

    ``quiet`` refusals are not reported: the rule simply does not apply there.
    """

    reason: str
    quiet: bool = False


@dataclass(frozen=True)
class Rule:
    """A named local rewrite; ``formula`` is what ``--explain`` prints for each rewrite."""

    name: str
    pattern: Pattern
    apply: Callable[[Graph, Match], Value | Decline]
    formula: str = ""


@dataclass
class Explanation:
    """One rewrite, for the teaching view: the nodes before and after and the formula."""

    rule: str
    before: list[str]
    after: list[str]
    formula: str


@dataclass
class PassReport:
    """What one pass did: sizes before and after, rewrites, refusals and explanations."""

    name: str
    nodes_before: int = 0
    nodes_after: int = 0
    params_before: int = 0
    params_after: int = 0
    rewrites: int = 0
    seconds: float = 0.0
    refusals: list[tuple[str, str]] = field(default_factory=list)
    explanations: list[Explanation] = field(default_factory=list)
    # Lines a pass always shows under its summary: what it measured and decided.
    notes: list[str] = field(default_factory=list)

    def refuse(self, where: str, reason: str) -> None:
        if (where, reason) not in self.refusals:
            self.refusals.append((where, reason))


def _bind(table: dict, key: str, item: object) -> bool:
    if key in table:
        return table[key] == item
    table[key] = item
    return True


def match(g: Graph, pattern: Pattern, node: str, m: Match | None = None) -> Match | None:
    """Return the bindings of ``pattern`` rooted at ``node``, or ``None`` if it does not match."""
    m = m or Match(root=node)
    ops = (pattern.op,) if isinstance(pattern.op, str) else pattern.op
    if g.op(node) not in ops:
        return None
    if pattern.name and not _bind(m.nodes, pattern.name, node):
        return None
    if node not in m.matched:
        m.matched.append(node)
    values = g.in_values(node)
    for port, sub in enumerate(pattern.inputs):
        value = values[port] if port < len(values) else None
        if sub is None:
            continue
        if isinstance(sub, str):
            key = sub.rstrip("?")
            if value is None and not sub.endswith("?"):
                return None
            if not _bind(m.values, key, value):
                return None
        elif value is None or value.out != 0 or match(g, sub, value.node, m) is None:
            return None
    return m


def escapes(g: Graph, m: Match) -> str | None:
    """Return why the match cannot be rewritten (an inner value used outside it), or None."""
    inside = set(m.matched)
    outputs = {v.node for v in g.outputs}
    for node in m.matched:
        if node == m.root:
            continue
        if node in outputs:
            return f"%{node} is a graph output"
        for _, user in g.nx.out_edges(node):
            if user not in inside:
                return f"%{node} is also used by %{user}, outside the rewrite"
    return None


def set_const_input(g: Graph, node: str, port: int, array: np.ndarray, name: str) -> None:
    """Feed constant ``array`` into ``node``'s ``port``.

    A constant used only there is updated in place (it keeps its name); a shared one is left to
    its other users and a new constant called ``name`` (made unique) is wired in.
    """
    values = g.in_values(node)
    old = values[port] if port < len(values) else None
    data = g.nx.nodes[old.node] if old is not None else None
    outputs = {v.node for v in g.outputs}
    if (data is not None and data["op"] == CONST and g.nx.out_degree(old.node) == 1
            and old.node not in outputs):
        array = np.array(array)
        array.flags.writeable = False
        data["value"] = array
        data["types"] = [type_of(array)]
        return
    trainable = bool(data.get("trainable")) if data is not None else True
    new = g.add_const(name, array, trainable=trainable)
    if old is not None:
        key = next(k for k, d in g.nx[old.node][node].items() if d["port"] == port)
        g.nx.remove_edge(old.node, node, key)
        remove_if_dead(g, old.node)
    g.nx.add_edge(new.node, node, port=port, out=0)


def remove_if_dead(g: Graph, node: str) -> None:
    """Remove ``node`` if nothing uses it and it is not an output or input, then its inputs."""
    stack = [node]
    outputs = {v.node for v in g.outputs}
    while stack:
        n = stack.pop()
        if n not in g.nx or g.nx.out_degree(n) or n in outputs or g.op(n) == INPUT:
            continue
        preds = [p for p in g.nx.predecessors(n)]
        g.nx.remove_node(n)
        stack.extend(preds)


def can_take_name(g: Graph, value: Value, others: list[Value]) -> bool:
    """Return whether ``value``'s node may be renamed to carry a graph output's name: it is
    output 0 of an op node, and none of the ``others`` outputs comes from that node."""
    return (value.out == 0 and g.op(value.node) not in (INPUT, CONST)
            and not any(v.node == value.node for v in others))


def replace(g: Graph, old: Value, new: Value, *, rename: bool = False) -> None:
    """Make ``new`` take the place of ``old`` everywhere, keeping graph output names.

    Where ``old`` was a graph output, ``new``'s node takes the output's name if it can (see
    ``can_take_name``); otherwise an Identity of that name keeps it. With ``rename``, ``new``'s
    node also takes ``old``'s node id when ``old`` disappears (a fresh node replacing an old one).
    """
    names = g.output_names()
    g.replace_all_uses(old, new)
    remove_if_dead(g, old.node)
    slots = keep_output_names(g, names)
    if (rename and not slots and old.node not in g.nx
            and can_take_name(g, new, list(g.outputs))):
        g.rename({new.node: old.node})


def keep_output_names(g: Graph, names: list[str]) -> list[int]:
    """Give the graph outputs back their file ``names`` (``g.output_names()`` before a
    rewrite): an output whose value's name changed takes the name on its node if it can (see
    ``can_take_name``), else through an Identity of that name. Return the outputs fixed."""
    slots: list[int] = []
    # Output by output, in order: an output's file name depends on the outputs before it (a
    # repeated value is named ``<value>_out``), so names are compared after each earlier fix.
    for k in range(len(g.outputs)):
        if g.output_names()[k] == names[k]:
            continue
        slots.append(k)
        want, value = names[k], g.outputs[k]
        others = [v for j, v in enumerate(g.outputs) if j != k]
        if want not in g.nx and can_take_name(g, value, others):
            g.rename({value.node: want})
        else:
            g.outputs[k] = g.add_node("Identity", [value], name=want)
    return slots


def rewrite(g: Graph, rules: list[Rule], report: PassReport | None = None) -> int:
    """Apply ``rules`` to ``g`` in place until none applies; return the number of rewrites."""
    report = report or PassReport("rewrite")
    done = 0
    changed = True
    while changed:
        changed = False
        for node in g.topo():
            if node not in g.nx:
                continue
            for rule in rules:
                m = match(g, rule.pattern, node)
                if m is None:
                    continue
                where = g.format_node(node, types=False)
                reason = escapes(g, m)
                before = [g.format_node(n) for n in reversed(m.matched)]
                mark = g.nx.number_of_nodes()
                result = Decline(reason) if reason else rule.apply(g, m)
                if isinstance(result, Decline):
                    if not result.quiet:
                        report.refuse(where, f"{rule.name}: {result.reason}")
                    continue
                if node not in g.nx:
                    # The rule's own edits left its root dead, and replace() removed it (a
                    # Dropout whose only used output was its mask): nothing is left to replace.
                    report.explanations.append(Explanation(rule.name, before, [], rule.formula))
                    done += 1
                    changed = True
                    break
                old_type = g.type_of(Value(node))
                added = list(g.nx)[mark:]
                if g.type_of(result) != old_type:
                    raise GraphcError(f"rule {rule.name} changed the type of %{node}",
                                      where=where, expected=str(old_type),
                                      got=str(g.type_of(result)))
                replace(g, Value(node), result, rename=result.node in added)
                result_id = result.node if result.node in g.nx else node
                shown = [result_id if n == result.node else n for n in added]
                shown = [n for n in dict.fromkeys([*shown, result_id]) if n in g.nx]
                report.explanations.append(Explanation(
                    rule.name, before, [g.format_node(n) for n in shown], rule.formula))
                done += 1
                changed = True
                break
    report.rewrites += done
    return done

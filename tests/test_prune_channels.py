"""prune-channels: dependency groups, scores and plans, slicing, zero-channel branches, errors.

Numerics: slicing must not change the outputs when the removed channels output zero already
(their producer rows and biases zeroed, their BatchNormalization's beta and mean set to zero,
so that BN and ReLU give 0): the dense model with those channels zeroed is the reference, on
the interpreter and on onnxruntime. Sliced weights are checked against numpy indexing written
here, scores against numpy norms written here.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphc import nn
from graphc.compress.channel_groups import channel_groups
from graphc.compress.channels import channel_scores, plan, slice_channels
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.models import load
from graphc.onnxio.runtime import run_onnxruntime
from graphc.passes.prune_channels import prune_channels
from graphc.rewrite import PassReport, set_const_input
from graphc.testing import assert_same_outputs, random_feeds, same_structure


def const(g: Graph, name: str) -> np.ndarray:
    return g.nx.nodes[name]["value"]


def set_const(g: Graph, name: str, array: np.ndarray) -> None:
    array = np.array(array, dtype=const(g, name).dtype)
    array.flags.writeable = False
    g.nx.nodes[name]["value"] = array


def randomize_bn(g: Graph, seed: int = 1) -> Graph:
    """Give every BatchNormalization non-trivial statistics (so a wrong slice shows)."""
    g = g.copy()
    rng = np.random.default_rng(seed)
    for n in g.op_nodes():
        if g.op(n) == "BatchNormalization":
            _, gamma, beta, mean, var = g.in_values(n)
            c = const(g, gamma.node).shape[0]
            set_const_input(g, n, 1, rng.uniform(0.5, 1.5, c).astype(np.float32), "gamma")
            set_const_input(g, n, 2, rng.normal(0, 0.3, c).astype(np.float32), "beta")
            set_const_input(g, n, 3, rng.normal(0, 0.3, c).astype(np.float32), "mean")
            set_const_input(g, n, 4, rng.uniform(0.5, 2.0, c).astype(np.float32), "var")
    return g


def zero_removed(g: Graph, keep: dict[str, list[int]]) -> Graph:
    """Return ``g`` whose channels not in ``keep`` output exactly zero: producer rows and bias
    zero, the BatchNormalization vectors beta and mean zero at those channels, depthwise
    filters zero."""
    g = g.copy()
    groups = {grp.key: grp for grp in channel_groups(g)}
    for key, kept in keep.items():
        grp = groups[key]
        gone = np.setdiff1d(np.arange(grp.channels), kept)
        for m in grp.members:
            values = g.in_values(m.node)
            if m.role in ("producer", "depthwise"):
                axis = m.axis if m.role == "producer" else 0
                w = const(g, values[1].node).copy()
                rows = gone
                if m.role == "depthwise":  # output o of a depthwise conv reads channel o // k
                    k = w.shape[0] // g.attrs(m.node)["group"]
                    rows = (gone[:, None] * k + np.arange(k)).reshape(-1)
                index = [slice(None)] * w.ndim
                index[axis] = rows
                w[tuple(index)] = 0
                set_const_input(g, m.node, 1, w, "w")
                if len(values) > 2 and values[2] is not None:
                    b = const(g, values[2].node).copy()
                    b[..., rows] = 0
                    set_const_input(g, m.node, 2, b, "b")
            elif m.role == "vectors":
                for port in (2, 3):
                    v = const(g, values[port].node).copy()
                    v[gone] = 0
                    set_const_input(g, m.node, port, v, "v")
    return g


def check_zeroed_equal(g: Graph, keep: dict[str, list[int]], *, batch_feeds: dict | None = None
                       ) -> Graph:
    dense = zero_removed(g, keep)
    pruned = slice_channels(g, keep)
    pruned.verify()
    assert_same_outputs(dense, pruned, batch_feeds or random_feeds(g), rtol=1e-5)
    return pruned


def every_other(n: int, start: int = 0) -> list[int]:
    return list(range(start, n, 2))


# ----- groups -----------------------------------------------------------------------------


def test_cnn_groups_and_graph_output_refused() -> None:
    groups = channel_groups(load("cnn").build())
    assert [(grp.key, grp.channels, grp.prunable) for grp in groups] == [
        ("block1.conv", 16, True), ("block2.conv", 32, True), ("block3.conv", 64, True),
        ("logits", 10, False)]
    assert groups[3].reason == "its channels reach the graph output %logits"
    roles = {(m.node, m.role) for m in groups[2].members}
    assert {("block3.conv", "producer"), ("block3.bn", "vectors"), ("flatten1", "pass"),
            ("logits", "consumer")} <= roles


def test_residual_add_ties_its_inputs() -> None:
    g = load("residual").build()
    (grp, out) = channel_groups(g)
    producers = [m.node for m in grp.members if m.role == "producer"]
    assert producers == ["conv1", "conv2"] and grp.channels == 16 and grp.prunable
    assert {("bn1", "vectors"), ("bn2", "vectors"), ("add", "tie"), ("pool", "pass"),
            ("logits", "consumer"), ("conv2", "consumer")} <= {
                (m.node, m.role) for m in grp.members}
    assert not out.prunable


def test_resnet18_every_residual_add_in_one_group() -> None:
    g = load("resnet18").build()
    groups = channel_groups(g)
    adds = [n for n in g.op_nodes() if g.op(n) == "Add"]
    assert len(adds) == 8
    for add in adds:
        owners = [grp for grp in groups if any(m.node == add for m in grp.members)]
        assert len(owners) == 1, add
        producers = {m.node for m in owners[0].members if m.role == "producer"}
        # Each input of the Add comes from a producer of that one group (through BN / ReLU).
        for v in g.in_values(add):
            node = v.node
            while node not in producers:
                node = g.in_values(node)[0].node
    stream = {grp.key: grp for grp in groups}["conv1"]
    assert {m.node for m in stream.members if m.role == "producer"} == {
        "conv1", "layer1.0.conv2", "layer1.1.conv2"}


def test_unknown_op_and_nonconstant_weight_refused() -> None:
    b = GraphBuilder("t")
    x = b.input("x", (1, 2, 5, 5))
    w = b.input("w", (3, 4, 3, 3))
    h = nn.relu(nn.conv2d(x, 4, 3, padding=1, name="a"))
    y = b.op("Conv", h, w, name="dyn")
    h2 = nn.conv2d(x, 5, 3, padding=1, name="c")
    s = b.op("Softmax", h2, axis=1, name="soft")
    b.output(y + 0.0, "y")
    b.output(nn.conv2d(s, 2, 1, name="d"), "z")
    groups = {grp.key: grp for grp in channel_groups(b.build())}
    assert "non-constant weight" in groups["a"].reason
    assert "normalizes over the channels" in groups["c"].reason


# ----- slicing ----------------------------------------------------------------------------


def test_cnn_slicing_keeps_outputs_when_removed_channels_are_zero() -> None:
    g = randomize_bn(load("cnn").build(batch=2))
    keep = {"block1.conv": every_other(16), "block2.conv": every_other(32, 1),
            "block3.conv": [0, 5, 6, 30, 63]}
    pruned = check_zeroed_equal(g, keep)
    # BatchNorm sliced with its producer, fc's columns are blocks of 2*2 after Flatten.
    for stat in ("weight", "bias", "running_mean", "running_var"):
        np.testing.assert_array_equal(const(pruned, f"block2.bn.{stat}"),
                                      const(g, f"block2.bn.{stat}")[every_other(32, 1)])
    np.testing.assert_array_equal(const(pruned, "block2.conv.weight"),
                                  const(g, "block2.conv.weight")[1::2][:, 0::2])
    cols = [c * 4 + k for c in keep["block3.conv"] for k in range(4)]
    np.testing.assert_array_equal(const(pruned, "fc.weight"), const(g, "fc.weight")[:, cols])
    assert pruned.type_of(Value("flatten1")).shape == (2, 20)


def test_global_average_pool_consumer_and_residual() -> None:
    g = randomize_bn(load("residual").build())
    keep = {"conv1": [1, 2, 3, 7, 11, 15]}
    pruned = check_zeroed_equal(g, keep)
    np.testing.assert_array_equal(const(pruned, "fc.weight"), const(g, "fc.weight")[:, keep[
        "conv1"]])
    np.testing.assert_array_equal(const(pruned, "conv2.weight"),
                                  const(g, "conv2.weight")[keep["conv1"]][:, keep["conv1"]])


@pytest.mark.parametrize("activation", ["Gelu", "HardSwish", "Erf", "HardSigmoid"])
def test_activations_of_pytorch_exports_carry_the_channels(activation: str) -> None:
    b = GraphBuilder("act", seed=4)
    x = b.input("x", (2, 3, 6, 6))
    h = b.op(activation, nn.conv2d(x, 8, 3, name="conv1"))
    b.output(nn.conv2d(h, 4, 3, name="conv2"), "y")
    g = b.build()
    (grp,) = [grp for grp in channel_groups(g) if grp.prunable]
    assert (grp.key, grp.channels) == ("conv1", 8)
    keep = {"conv1": [0, 3, 4, 6]}
    if activation != "HardSigmoid":  # f(0) = 0: a zeroed channel adds nothing downstream
        pruned = check_zeroed_equal(g, keep)
    else:
        pruned = slice_channels(g, keep)
    np.testing.assert_array_equal(const(pruned, "conv2.weight"),
                                  const(g, "conv2.weight")[:, keep["conv1"]])
    feeds = random_feeds(pruned)
    for name, want in run_onnxruntime(pruned, feeds).items():
        np.testing.assert_allclose(run(pruned, feeds)[name], want, rtol=1e-5, atol=1e-5)


def test_concat_offsets() -> None:
    b = GraphBuilder("cat", seed=3)
    x = b.input("x", (1, 2, 6, 6))
    p = nn.relu(nn.conv2d(x, 4, 3, padding=1, name="a"))
    q = nn.relu(nn.conv2d(x, 6, 3, padding=1, name="b"))
    h = nn.concat([p, q, x], axis=1)
    b.output(nn.conv2d(h, 3, 1, name="c"), "y")
    g = b.build()
    assert [grp.key for grp in channel_groups(g) if grp.prunable] == ["a", "b"]
    keep = {"a": [1, 3], "b": [0, 5]}
    pruned = check_zeroed_equal(g, keep)
    np.testing.assert_array_equal(const(pruned, "c.weight"),
                                  const(g, "c.weight")[:, [1, 3, 4, 9, 10, 11]])


def test_mlp_dropout_and_gemm_rows_and_columns() -> None:
    g = load("mlp").build(batch=3)
    keep = {"fc1": every_other(128), "fc2": list(range(10))}
    pruned = check_zeroed_equal(g, keep)
    np.testing.assert_array_equal(const(pruned, "fc2.weight"),
                                  const(g, "fc2.weight")[:10][:, 0::2])
    np.testing.assert_array_equal(const(pruned, "fc1.bias"), const(g, "fc1.bias")[0::2])


def grouped_graph(groups: int, multiplier: int = 1) -> Graph:
    b = GraphBuilder("grouped", seed=5)
    x = b.input("x", (2, 3, 6, 6))
    h = nn.relu(nn.conv2d(x, 8, 3, padding=1, name="a"))
    if groups == 8:
        h = nn.relu(nn.conv2d(h, 8 * multiplier, 3, padding=1, groups=8, name="dw"))
    else:
        h = nn.relu(nn.conv2d(h, 6, 3, padding=1, groups=groups, name="gc"))
    b.output(nn.conv2d(h, 4, 1, name="out"), "y")
    return b.build()


def test_grouped_conv_per_group() -> None:
    g = grouped_graph(2)
    groups = {grp.key: grp for grp in channel_groups(g)}
    assert groups["a"].blocks == 2 and groups["gc"].blocks == 2
    keep = {"a": [1, 2, 4, 7], "gc": [0, 4]}
    pruned = check_zeroed_equal(g, keep)
    w = const(g, "gc.weight")  # (6, 4, 3, 3): rows 0-2 read channels 0-3, rows 3-5 read 4-7
    want = np.stack([w[0][[1, 2]], w[4][[0, 3]]])
    np.testing.assert_array_equal(const(pruned, "gc.weight"), want)
    assert pruned.attrs("gc")["group"] == 2
    with pytest.raises(GraphcError, match="same number of channels in each of its 2 blocks"):
        slice_channels(g, {"a": [0, 1, 2, 4]})
    kept = plan(g, 0.5)
    assert [sum(i < 4 for i in kept["a"]), sum(i >= 4 for i in kept["a"])] == [2, 2]


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv_passes_channels_through(multiplier: int) -> None:
    g = grouped_graph(8, multiplier)
    groups = {grp.key: grp for grp in channel_groups(g)}
    assert "dw" not in groups
    assert ("dw", "depthwise") in {(m.node, m.role) for m in groups["a"].members}
    keep = {"a": [0, 3, 6]}
    pruned = check_zeroed_equal(g, keep)
    rows = [c * multiplier + k for c in keep["a"] for k in range(multiplier)]
    np.testing.assert_array_equal(const(pruned, "dw.weight"), const(g, "dw.weight")[rows])
    np.testing.assert_array_equal(const(pruned, "out.weight"), const(g, "out.weight")[:, rows])
    assert pruned.attrs("dw")["group"] == 3


def test_resnet18_half_pruned_runs_on_onnxruntime() -> None:
    g = load("resnet18").build()
    keep = plan(g, 0.5)
    pruned = slice_channels(g, keep)
    pruned.verify()
    for add in (n for n in pruned.op_nodes() if pruned.op(n) == "Add"):
        a, b = (pruned.type_of(v).shape for v in pruned.in_values(add))
        assert a == b
    assert pruned.type_of(Value("layer4.1.relu2")).shape == (1, 256, 7, 7)
    feeds = random_feeds(g)
    got = run_onnxruntime(pruned, feeds)["logits"]
    want = run_onnxruntime(zero_removed(g, keep), feeds)["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# ----- scores and plans ---------------------------------------------------------------------


def test_scores_are_the_course_sums_with_bn_folded() -> None:
    g = randomize_bn(load("cnn").build())
    grp = channel_groups(g)[1]
    w = const(g, "block2.conv.weight").astype(np.float64)
    gamma, var = (const(g, f"block2.bn.{k}").astype(np.float64) for k in ("weight", "running_var"))
    folded = w * (gamma / np.sqrt(var + 1e-5))[:, None, None, None]
    np.testing.assert_allclose(channel_scores(g, grp, "l1"), np.abs(folded).sum((1, 2, 3)))
    np.testing.assert_allclose(channel_scores(g, grp, "l2"), (folded ** 2).sum((1, 2, 3)))


@pytest.mark.parametrize("method", ["l1", "l2"])
def test_layer_plan_keeps_the_largest(method: str) -> None:
    g = load("mlp").build()
    keep = plan(g, 0.25, method=method)
    for key, n in (("fc1", 128), ("fc2", 64)):
        w = const(g, f"{key}.weight").astype(np.float64)  # (out, in): a neuron is a row
        score = np.abs(w).sum(1) if method == "l1" else (w ** 2).sum(1)
        want = sorted(np.argsort(-score, kind="stable")[:n - n // 4].tolist())
        assert keep[key] == want


def test_global_plan_ranks_by_normalized_score() -> None:
    g = load("mlp").build()
    keep = plan(g, 0.5, scope="global")
    scores = {k: np.abs(const(g, f"{k}.weight").astype(np.float64)).sum(1)
              for k in ("fc1", "fc2")}
    flat = np.concatenate([s / s.mean() for s in scores.values()])
    cut = np.sort(flat)[96 - 1]  # 192 channels, 96 removed
    for k, s in scores.items():
        assert keep[k] == [i for i, v in enumerate(s / s.mean()) if v > cut]


def test_round_to_and_min_channels() -> None:
    g = load("cnn").build()
    assert {k: len(v) for k, v in plan(g, 0.5).items()} == {
        "block1.conv": 8, "block2.conv": 16, "block3.conv": 32}
    assert {k: len(v) for k, v in plan(g, 0.5, round_to=16).items()} == {
        "block1.conv": 16, "block2.conv": 16, "block3.conv": 32}
    assert {k: len(v) for k, v in plan(g, 0.9, round_to=16).items()} == {
        "block1.conv": 16, "block2.conv": 16, "block3.conv": 16}
    assert {k: len(v) for k, v in plan(g, 1.0, min_channels=0).items()} == {
        "block1.conv": 1, "block2.conv": 1, "block3.conv": 1}  # none is a residual branch
    assert {k: len(v) for k, v in plan(g, 0.0).items()} == {
        "block1.conv": 16, "block2.conv": 32, "block3.conv": 64}


# ----- the pass -----------------------------------------------------------------------------


def test_pass_report_and_replay_is_idempotent() -> None:
    g = load("cnn").build()
    report = PassReport("prune-channels")
    pruned = prune_channels(g, amount=0.5, round_to=16, report=report)
    assert report.notes == ["block1.conv   16/16 channels", "block2.conv   16/32 channels",
                            "block3.conv   32/64 channels", "parameters    25,978 -> 8,474",
                            "FLOPs         1,218,560 -> 472,576"]
    assert report.refusals == [("%logits = Gemm(%drop, %fc.weight, %fc.bias) {transB=1}",
                                "its channels reach the graph output %logits")]
    record = plan(g, 0.5, round_to=16)
    again = prune_channels(g, keep=record)
    assert same_structure(again, pruned)
    for n in pruned.params():
        np.testing.assert_array_equal(const(again, n), const(pruned, n))
    # The record rebuilds the same architecture at another batch size.
    big = prune_channels(load("cnn").build(batch=4), keep=record)
    for n in pruned.params():
        np.testing.assert_array_equal(const(big, n), const(pruned, n))
    assert big.type_of(Value("block3.relu")).shape == (4, 32, 4, 4)
    assert g.type_of(Value("block3.relu")).shape == (1, 64, 4, 4)  # input untouched


# ----- removing a whole layer ---------------------------------------------------------------


def residual_branch(bias: float) -> Graph:
    b = GraphBuilder("branch", seed=7)
    x = b.input("x", (2, 3, 5, 5))
    h = nn.relu(nn.conv2d(x, 4, 3, padding=1, name="c0"), name="r0")
    r = nn.relu(nn.batch_norm(nn.conv2d(h, 6, 3, padding=1, name="c1"), name="bn1"))
    r = nn.batch_norm(nn.conv2d(r, 4, 3, padding=1, name="c2"), name="bn2")
    b.output(nn.relu(r + h, name="out"), "y")
    g = randomize_bn(b.build())
    set_const(g, "c2.bias", np.full(4, bias))
    return g


def test_zero_channels_turn_a_residual_branch_into_a_constant() -> None:
    g = residual_branch(0.5)
    groups = {grp.key: grp for grp in channel_groups(g)}
    assert groups["c1"].removable and not groups["c0"].removable
    pruned = slice_channels(g, {"c1": []})
    assert "c1" not in pruned.nx and "c2" not in pruned.nx and "bn2" not in pruned.nx
    add = next(n for n in pruned.op_nodes() if pruned.op(n) == "Add")
    branch = next(v for v in pruned.in_values(add) if pruned.const_value(v) is not None)
    gamma, beta, mean, var = (const(g, f"bn2.{k}").astype(np.float64)
                              for k in ("weight", "bias", "running_mean", "running_var"))
    want = (0.5 - mean) * gamma / np.sqrt(var + 1e-5) + beta
    np.testing.assert_allclose(pruned.const_value(branch).reshape(-1), want, rtol=1e-6)
    assert pruned.const_value(branch).shape == (1, 4, 1, 1)
    # The dense model whose branch input is zero computes the same.
    assert_same_outputs(zero_removed(g, {"c1": []}), pruned, random_feeds(g), rtol=1e-5)
    assert {k: len(v) for k, v in plan(g, 1.0, min_channels=0).items()} == {"c1": 0}


def test_zero_branch_that_adds_zero_disappears() -> None:
    g = residual_branch(0.0)
    for k in ("bias", "running_mean"):
        set_const(g, f"bn2.{k}", np.zeros(4))
    pruned = slice_channels(g, {"c1": []})
    assert [pruned.op(n) for n in pruned.op_nodes()] == ["Conv", "Relu", "Relu"]
    feeds = random_feeds(g)
    np.testing.assert_allclose(run(pruned, feeds)["y"], run(zero_removed(g, {"c1": []}),
                                                            feeds)["y"], rtol=1e-6)


# ----- errors ---------------------------------------------------------------------------------


def test_bad_records_name_the_key() -> None:
    g = load("cnn").build()
    with pytest.raises(GraphcError) as err:
        slice_channels(g, {"block9.conv": [0]})
    assert str(err.value).startswith("keep: unknown channel group 'block9.conv'; expected one "
                                     "of 'block1.conv', 'block2.conv', 'block3.conv', got "
                                     "'block9.conv'.")
    with pytest.raises(GraphcError, match=r"keep: channel index out of range in group "
                                          r"'block1.conv'; expected indices in 0..15, got "
                                          r"\[16, -1\]"):
        slice_channels(g, {"block1.conv": [0, 16, -1]})
    with pytest.raises(GraphcError, match="repeated channel index"):
        slice_channels(g, {"block1.conv": [1, 1]})
    with pytest.raises(GraphcError, match="'logits' cannot be pruned; expected a prunable "
                                          "group, got its channels reach the graph output"):
        slice_channels(g, {"logits": [0]})
    with pytest.raises(GraphcError, match="cannot lose all its channels"):
        slice_channels(g, {"block2.conv": []})


@pytest.mark.parametrize(("option", "value", "message"), [
    ("amount", 1.5, "amount: the fraction of channels to remove is out of range; expected a "
                    "number in [0, 1], got 1.5"),
    ("method", "l3", "method: unknown scoring method 'l3'"),
    ("scope", "net", "scope: unknown pruning scope 'net'"),
    ("round_to", 0, "round_to: round_to must be an integer >= 1"),
    ("keep", [1, 2], "keep: keep must map group keys to kept channel indices"),
])
def test_bad_options_are_usage_errors(option: str, value: object, message: str) -> None:
    with pytest.raises(UsageError) as err:
        prune_channels(load("cnn").build(), **{option: value})
    assert str(err.value).startswith(message)

"""The IR: construction, the printer, copy, rewriting helpers, topological order and verify()."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, OpError, ShapeError, VerifyError
from graphc.ir import Graph, Value
from graphc.ops.base import TensorType

F32 = np.dtype(np.float32)


def small_graph() -> Graph:
    """x (2,3) -> mul = x*x -> add = mul + c; returns add."""
    g = Graph("t")
    x = g.add_input("x", (2, 3))
    c = g.add_const("c", np.array([1.0, 2.0, 3.0], np.float32))
    m = g.add_node("Mul", [x, x])
    a = g.add_node("Add", [m, c])
    g.outputs.append(a)
    return g


def leaky_graph() -> Graph:
    """x (2,3) -> LeakyRelu(alpha=0.1)."""
    g = Graph("lk")
    x = g.add_input("x", (2, 3))
    g.outputs.append(g.add_node("LeakyRelu", [x], {"alpha": 0.1}, name="act"))
    return g


def in_ports(g: Graph, node: str) -> list[tuple[str, int]]:
    return sorted((u, d["port"]) for u, _, d in g.nx.in_edges(node, data=True))


def verify_error(g: Graph) -> GraphcError:
    with pytest.raises(GraphcError) as info:
        g.verify()
    return info.value


# ----- construction -------------------------------------------------------------------------


def test_construction_nodes_edges_and_types():
    g = small_graph()
    assert g.inputs == ["x"]
    assert g.outputs == [Value("add")]
    assert g.op("mul") == "Mul" and g.op("add") == "Add" and g.op("c") == "Const"
    # Mul(x, x) is two parallel edges into ports 0 and 1.
    assert g.nx.number_of_edges("x", "mul") == 2
    assert in_ports(g, "mul") == [("x", 0), ("x", 1)]
    assert g.in_values("add") == [Value("mul"), Value("c")]
    assert sorted(g.users(Value("x"))) == [("mul", 0), ("mul", 1)]
    assert g.type_of(Value("add")) == TensorType((2, 3), F32)
    assert g.type_of(Value("c")) == TensorType((3,), F32)
    assert len(g) == 4
    g.verify()


def test_fresh_names_and_duplicate_input():
    g = Graph("names")
    x = g.add_input("x", (2,))
    assert g.add_const("k", 1.0).node == "k"
    assert g.add_const("k", 2.0).node == "k_1"
    assert g.add_const("k", 3.0).node == "k_2"
    assert g.add_node("Relu", [x]).node == "relu"
    assert g.add_node("Relu", [x]).node == "relu_1"
    with pytest.raises(GraphcError, match="already has a node called 'x'"):
        g.add_input("x", (3,))


def test_const_is_read_only():
    g = Graph("c")
    v = g.add_const("k", [1.0, 2.0], dtype=np.float32)
    array = g.const_value(v)
    assert array.dtype == np.float32 and array.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        array[0] = 5.0


def test_add_node_with_bad_shape_is_reported_and_leaves_no_node():
    g = Graph("bad")
    a = g.add_input("a", (2, 3))
    b = g.add_input("b", (4, 3))
    with pytest.raises(ShapeError) as info:
        g.add_node("Add", [a, b], name="sum")
    msg = str(info.value)
    assert msg.startswith("%sum = Add(%a, %b): ")
    assert "(2, 3)" in msg and "(4, 3)" in msg
    assert "sum" not in g.nx
    assert g.nx.number_of_edges() == 0


def test_optional_input_absent_and_multi_output_names():
    g = Graph("opt")
    x = g.add_input("x", (2, 3))
    lo = g.add_const("lo", np.float32(0.0))
    clip = g.add_node("Clip", [x, None, lo], name="clip")
    assert g.in_values("clip") == [Value("x"), None, Value("lo")]
    assert g.format_node("clip") == "%clip = Clip(%x, _, %lo) # (2,3) f32"
    drop = g.add_node("Dropout", [clip], name="drop")
    assert g.value_name(Value("drop", 1)) == "drop.mask"
    assert g.types("drop") == [TensorType((2, 3), F32), TensorType((2, 3), np.dtype(np.bool_))]
    g.outputs += [drop, Value("drop", 1)]
    assert g.output_names() == ["drop", "drop.mask"]
    g.verify()


def test_params_and_num_params():
    b = GraphBuilder("p")
    x = b.input("x", (1, 4))
    h = nn.batch_norm(nn.reshape(nn.linear(x, 3, name="fc"), (1, 3, 1)), name="bn")
    b.output(h, "y")
    g = b.build()
    # fc: 3*4 + 3; bn: weight and bias (3 each); running statistics are not trainable.
    assert g.params() == ["fc.weight", "fc.bias", "bn.weight", "bn.bias"]
    assert g.num_params() == 3 * 4 + 3 + 3 + 3


# ----- printer ------------------------------------------------------------------------------

GOLDEN = """\
graph golden
  %x = Input # (1,3,4,4) f32
  %conv.weight = Const [param] # (8,3,3,3) f32
  %conv = Conv(%x, %conv.weight) {kernel_shape=[3,3], pads=[1,1,1,1]} # (1,8,4,4) f32
  %lrelu1 = LeakyRelu(%conv) {alpha=0.2} # (1,8,4,4) f32
  %drop.ratio = Const {value=0.25} # () f32
  %drop, %drop.mask = Dropout(%lrelu1, %drop.ratio) # (1,8,4,4) f32, (1,8,4,4) bool
  %pad.pads = Const # (8,) i64
  %pad = Pad(%drop, %pad.pads) {mode='reflect'} # (1,8,5,5) f32
  %flatten1 = Flatten(%pad) {axis=1} # (1,200) f32
  %sm.temperature = Const {value=2.} # () f32
  %sm.scaled = Div(%flatten1, %sm.temperature) # (1,200) f32
  %probs = Softmax(%sm.scaled) {axis=-1} # (1,200) f32
  return %probs"""


def golden_graph() -> Graph:
    b = GraphBuilder("golden")
    x = b.input("x", (1, 3, 4, 4))
    h = nn.conv2d(x, 8, 3, padding=1, bias=False, name="conv")
    h = nn.leaky_relu(h, 0.2)
    h = nn.dropout(h, 0.25, name="drop")
    h = nn.pad(h, (1, 0, 0, 1), mode="reflect", name="pad")
    b.output(nn.softmax(nn.flatten(h), temperature=2.0, name="sm"), "probs")
    return b.build()


def test_printer_golden():
    g = golden_graph()
    assert str(g) == GOLDEN
    assert g.format() == GOLDEN
    # One line per node, plus the header and the return line.
    assert len(GOLDEN.splitlines()) == len(g) + 2


def test_format_node_without_types_and_const_values():
    g = golden_graph()
    assert g.format_node("conv", types=False) == (
        "%conv = Conv(%x, %conv.weight) {kernel_shape=[3,3], pads=[1,1,1,1]}")
    h = Graph("k")
    h.add_const("small", np.array([1.5, -2.0], np.float32))
    h.add_const("big", np.zeros(5, np.float32))
    assert h.format_node("small") == "%small = Const {value=[ 1.5,-2. ]} # (2,) f32"
    assert h.format_node("big") == "%big = Const # (5,) f32"


def test_printer_uses_the_small_graph_order():
    assert str(small_graph()) == "\n".join([
        "graph t",
        "  %x = Input # (2,3) f32",
        "  %mul = Mul(%x, %x) # (2,3) f32",
        "  %c = Const {value=[1.,2.,3.]} # (3,) f32",
        "  %add = Add(%mul, %c) # (2,3) f32",
        "  return %add",
    ])


# ----- copy ---------------------------------------------------------------------------------


def test_copy_is_independent():
    g = leaky_graph()
    g.add_input("y", (2, 3))
    before = str(g)
    h = g.copy("copy")
    assert h.name == "copy" and g.name == "lk"
    assert str(h) == before.replace("graph lk", "graph copy")

    h.nx.nodes["act"]["attrs"]["alpha"] = 0.5
    h.nx.nodes["act"]["types"].append(TensorType((1,), F32))
    for _, _, d in h.nx.in_edges("act", data=True):
        d["port"] = 7
    h.nx.add_edge("y", "act", port=1, out=0)
    h.inputs.append("extra")
    h.outputs.append(Value("x"))
    h.add_node("Relu", [Value("x")], name="new")

    assert g.attrs("act") == {"alpha": float(np.float32(0.1))}  # stored as ONNX does, float32
    assert g.types("act") == [TensorType((2, 3), F32)]
    assert in_ports(g, "act") == [("x", 0)]
    assert g.inputs == ["x", "y"]
    assert g.outputs == [Value("act")]
    assert "new" not in g.nx
    assert str(g) == before
    g.verify()


def test_copy_shares_read_only_constants_and_keeps_fresh_names():
    g = small_graph()
    h = g.copy()
    assert h.const_value(Value("c")) is g.const_value(Value("c"))
    # The name counter is copied too: new nodes in the copy do not reuse names.
    g.add_const("c", 0.0)
    h.add_const("c", 0.0)
    assert sorted(g.nx.nodes) == sorted(h.nx.nodes)


# ----- replace_all_uses, remove_dead --------------------------------------------------------


def test_replace_all_uses_parallel_edges_and_outputs():
    g = Graph("r")
    x = g.add_input("x", (2, 3))
    y = g.add_input("y", (2, 3))
    n = g.add_node("Neg", [x])
    m = g.add_node("Mul", [n, n])
    g.outputs += [m, n, n]
    g.replace_all_uses(n, y)
    assert in_ports(g, "mul") == [("y", 0), ("y", 1)]
    assert g.nx.number_of_edges("neg", "mul") == 0
    assert g.outputs == [Value("mul"), Value("y"), Value("y")]
    assert g.users(n) == []
    g.verify()
    x_val = np.arange(6, dtype=np.float32).reshape(2, 3)
    y_val = np.full((2, 3), 3.0, np.float32)
    from graphc.interpret import run

    out = run(g, {"x": x_val, "y": y_val})
    np.testing.assert_array_equal(out["mul"], y_val * y_val)
    assert list(out) == ["mul", "y_out", "y_out_1"]
    np.testing.assert_array_equal(out["y_out"], y_val)
    np.testing.assert_array_equal(out["y_out_1"], y_val)


def test_replace_all_uses_only_touches_one_output_index():
    g = Graph("multi")
    x = g.add_input("x", (2, 3))
    d = g.add_node("Dropout", [x], name="drop")
    mask = Value("drop", 1)
    keep = g.add_node("Identity", [mask], name="keep_mask")
    use = g.add_node("Relu", [d], name="use")
    g.outputs += [use, keep, d]
    g.replace_all_uses(d, x)
    assert in_ports(g, "use") == [("x", 0)]
    assert g.in_values("keep_mask") == [mask]
    assert g.outputs == [use, keep, x]
    g.verify()


def test_remove_dead():
    g = Graph("dead")
    x = g.add_input("x", (2,))
    unused_input = g.add_input("u", (2,))
    a = g.add_node("Relu", [x], name="live")
    dead1 = g.add_node("Neg", [a], name="dead1")
    g.add_node("Exp", [dead1], name="dead2")
    g.add_const("orphan", 1.0)
    g.add_node("Neg", [unused_input], name="dead3")
    g.outputs.append(a)
    removed = g.remove_dead()
    assert sorted(removed) == ["dead1", "dead2", "dead3", "orphan"]
    assert sorted(g.nx.nodes) == ["live", "u", "x"]
    assert g.inputs == ["x", "u"]
    g.verify()
    assert g.remove_dead() == []


# ----- topological order --------------------------------------------------------------------


def test_topo_inputs_first_constants_before_first_user():
    g = Graph("order")
    c = g.add_const("w", np.ones(3, np.float32))
    x = g.add_input("x", (3,))
    a = g.add_node("Mul", [x, c], name="scale")
    k = g.add_const("k", np.float32(2.0))
    y = g.add_input("y", (3,))
    b = g.add_node("Add", [a, k], name="shift")
    s = g.add_node("Sub", [b, y], name="out")
    g.add_node("Neg", [x], name="unused")
    g.outputs.append(s)
    order = g.topo()
    assert order == ["x", "y", "w", "scale", "k", "shift", "out", "unused"]
    # A valid topological order of the underlying graph.
    pos = {n: i for i, n in enumerate(order)}
    assert all(pos[u] < pos[v] for u, v in g.nx.edges())
    assert sorted(order) == sorted(g.nx.nodes)


def test_topo_is_deterministic_regardless_of_insertion_order():
    g = small_graph()
    order = g.topo()
    assert order == ["x", "mul", "c", "add"]
    assert g.topo() == order
    # The same graph with nodes inserted into networkx in reverse order.
    h = Graph("t")
    for node in reversed(list(g.nx.nodes)):
        h.nx.add_node(node, **g.nx.nodes[node])
    h.nx.add_edges_from(reversed(list(g.nx.edges(keys=True, data=True))))
    h.inputs, h.outputs = list(g.inputs), list(g.outputs)
    assert h.topo() == order
    assert str(h) == str(g)


def test_topo_follows_port_order():
    g = Graph("ports")
    x = g.add_input("x", (2,))
    a = g.add_node("Exp", [x], name="a")
    b = g.add_node("Neg", [x], name="b")
    g.outputs.append(g.add_node("Sub", [b, a], name="d"))
    assert g.topo() == ["x", "b", "a", "d"]


def test_topo_raises_on_cycle():
    g = small_graph()
    g.nx.add_edge("add", "mul", port=2, out=0)
    with pytest.raises(VerifyError, match="cycle"):
        g.topo()


# ----- verify() -----------------------------------------------------------------------------


def test_verify_cycle():
    g = small_graph()
    g.nx.remove_edge("x", "mul")
    g.nx.add_edge("add", "mul", port=1, out=0)
    err = verify_error(g)
    assert isinstance(err, VerifyError)
    msg = str(err)
    assert msg.startswith("graph t: the graph has a cycle")
    assert "expected an acyclic graph" in msg
    assert "got" in msg and "mul" in msg and "add" in msg


def test_verify_missing_required_input():
    g = small_graph()
    g.nx.remove_edge("c", "add")
    err = verify_error(g)
    assert isinstance(err, VerifyError)
    assert str(err) == ("%add = Add(%mul) # (2,3) f32: Add input 1 (B) is missing; "
                        "expected a value, got nothing.")


def test_verify_duplicate_port():
    g = small_graph()
    g.nx.add_edge("c", "add", port=0, out=0)
    err = verify_error(g)
    assert isinstance(err, VerifyError)
    msg = str(err)
    assert msg.startswith("%add = Add(")
    assert "two values feed the same input port" in msg
    assert "expected one value per port, got ports [0, 0, 1]" in msg


def test_verify_too_many_ports():
    g = small_graph()
    g.nx.add_edge("x", "add", port=3, out=0)
    err = verify_error(g)
    assert str(err) == ("%add = Add(%mul, %c, _, %x) # (2,3) f32: Add takes at most 2 inputs; "
                        "expected ports 0..1, got port 3.")


def test_verify_unknown_op():
    g = small_graph()
    g.nx.nodes["add"]["op"] = "Addd"
    err = verify_error(g)
    assert isinstance(err, OpError)
    msg = str(err)
    assert msg.startswith("%add = Addd(%mul, %c) # (2,3) f32: unknown op 'Addd'")
    assert "expected one of 'Abs', 'Add', " in msg and "got 'Addd'" in msg
    assert msg.endswith("Did you mean 'Add'?")


def test_verify_bad_attribute_kind():
    g = leaky_graph()
    g.nx.nodes["act"]["attrs"] = {"alpha": "x"}
    err = verify_error(g)
    assert isinstance(err, OpError)
    assert str(err) == ("%act = LeakyRelu(%x) {alpha='x'} # (2,3) f32: attribute "
                        "LeakyRelu.alpha has the wrong kind; expected float, got 'x'.")


def test_verify_unknown_attribute_closest_match():
    g = leaky_graph()
    g.nx.nodes["act"]["attrs"] = {"alpah": 0.1}
    err = verify_error(g)
    assert isinstance(err, OpError)
    assert str(err) == ("%act = LeakyRelu(%x) {alpah=0.1} # (2,3) f32: unknown attribute of "
                        "LeakyRelu 'alpah'; expected one of 'alpha', got 'alpah'. "
                        "Did you mean 'alpha'?")


def test_verify_unknown_attribute_on_op_without_attributes():
    g = small_graph()
    g.nx.nodes["add"]["attrs"] = {"foo": 1}
    err = verify_error(g)
    assert isinstance(err, OpError)
    msg = str(err)
    assert msg.startswith("%add = Add(%mul, %c) {foo=1} # (2,3) f32: ")
    assert "'foo'" in msg
    # Add has no attributes at all: the expected part must say something, not be empty.
    assert "expected one of ," not in msg


def test_verify_stored_types_differ_from_shape_rule():
    g = small_graph()
    g.nx.nodes["add"]["types"] = [TensorType((3, 2), F32)]
    err = verify_error(g)
    assert isinstance(err, VerifyError)
    assert str(err) == ("%add = Add(%mul, %c) # (3,2) f32: stored output types differ from the "
                        "shape rule; expected (2,3) f32, got (3,2) f32. Re-infer types after "
                        "rewriting a node's inputs.")


def test_verify_stale_types_after_rewiring():
    g = Graph("stale")
    x = g.add_input("x", (2, 3))
    y = g.add_input("y", (4, 3))
    r = g.add_node("Relu", [x], name="act")
    g.outputs.append(r)
    g.replace_all_uses(x, y)
    msg = str(verify_error(g))
    assert msg.startswith("%act = Relu(%y) # (2,3) f32: stored output types differ")
    assert "expected (4,3) f32, got (2,3) f32" in msg


def test_verify_const_type_mismatch():
    g = small_graph()
    g.nx.nodes["c"]["types"] = [TensorType((4,), F32)]
    msg = str(verify_error(g))
    assert msg.startswith("%c = Const {value=[1.,2.,3.]} # (4,) f32: Const type does not match")
    assert "expected (3,) f32, got (4,) f32" in msg


def test_verify_output_that_does_not_exist():
    g = small_graph()
    g.outputs.append(Value("nope"))
    err = verify_error(g)
    assert isinstance(err, VerifyError)
    msg = str(err)
    assert msg.startswith("graph t: ")
    assert "does not exist" in msg
    # The output is named as the printer names values, with the expected/got parts.
    assert "%nope" in msg
    assert "expected" in msg and "got" in msg


def test_verify_output_index_out_of_range():
    g = small_graph()
    g.outputs.append(Value("add", 1))
    msg = str(verify_error(g))
    assert msg.startswith("graph t: ") and "add" in msg and "does not exist" in msg


def test_verify_no_outputs_and_unlisted_input():
    g = small_graph()
    g.outputs.clear()
    assert str(verify_error(g)).startswith("graph t: the graph has no outputs")
    g = small_graph()
    g.inputs.clear()
    msg = str(verify_error(g))
    assert msg.startswith("%x = Input # (2,3) f32: Input node is not listed in graph.inputs")


def test_verify_accepts_valid_graphs_and_is_structurally_stable():
    g = golden_graph()
    g.verify()
    h = golden_graph()

    def node_match(a: dict, b: dict) -> bool:
        return a["op"] == b["op"] and a["attrs"] == b["attrs"] and a["types"] == b["types"]

    def edge_match(a: dict, b: dict) -> bool:
        return sorted((d["port"], d["out"]) for d in a.values()) == sorted(
            (d["port"], d["out"]) for d in b.values())

    assert nx.is_isomorphic(g.nx, h.nx, node_match=node_match, edge_match=edge_match)

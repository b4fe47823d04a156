"""Every zoo model end to end: build, verify, interpreter vs onnxruntime, checker, batches."""

from __future__ import annotations

import inspect
from types import ModuleType

import numpy as np
import onnx
import pytest

from graphc.interpret import run
from graphc.ir import Graph
from graphc.models import MODELS, load
from graphc.onnxio.export import to_bytes, to_onnx
from graphc.onnxio.runtime import run_onnxruntime

SMALL = [m for m in MODELS if m != "resnet18"]
BATCHED = [m for m in SMALL if "batch" in inspect.signature(load(m).build).parameters]


def assert_close_to_interpreter(g: Graph, feeds: dict, model: onnx.ModelProto | bytes) -> None:
    """onnxruntime within 1e-5 * max(1, output scale) of the interpreter, output by output."""
    expected = run(g, feeds)
    got = run_onnxruntime(model, feeds)
    assert list(got) == g.output_names()
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        assert got[name].dtype == want.dtype, name
        scale = max(1.0, float(np.max(np.abs(want))))
        diff = float(np.max(np.abs(got[name].astype(np.float64) - want.astype(np.float64))))
        assert diff <= 1e-5 * scale, (name, diff, scale)


def check_model(module: ModuleType, g: Graph) -> onnx.ModelProto:
    g.verify()
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert_close_to_interpreter(g, module.example_inputs(), model)
    return model


def test_zoo_lists_every_model_module():
    import pkgutil

    import graphc.models

    modules = {m.name for m in pkgutil.iter_modules(graphc.models.__path__)}
    assert modules == set(MODELS)
    for name in MODELS:
        module = load(name)
        assert callable(module.build) and callable(module.example_inputs)
        assert (module.__doc__ or "").strip(), name


@pytest.mark.parametrize("name", SMALL)
def test_model_end_to_end(name):
    module = load(name)
    g = module.build()
    assert isinstance(g, Graph)
    model = check_model(module, g)
    assert [i.name for i in model.graph.input] == g.inputs
    feeds = module.example_inputs()
    assert sorted(feeds) == sorted(g.inputs)


@pytest.mark.parametrize("name", BATCHED)
def test_model_batch_4(name):
    module = load(name)
    g = module.build(batch=4)
    feeds = module.example_inputs(batch=4)
    assert all(v.shape[0] == 4 for v in feeds.values())
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    assert_close_to_interpreter(g, feeds, model)
    # Each sample is computed on its own: the first row equals a batch-1 run on that sample.
    g1 = module.build(batch=1)
    one = {k: v[:1] for k, v in feeds.items()}
    for name_out, value in run(g, feeds).items():
        scale = max(1.0, float(np.max(np.abs(value))))
        np.testing.assert_allclose(value[:1], run(g1, one)[name_out], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name", BATCHED)
def test_model_dynamic_batch(name):
    module = load(name)
    g = module.build()
    model = to_onnx(g, dynamic_batch=True)
    onnx.checker.check_model(model, full_check=True)
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "N"
    feeds = module.example_inputs(batch=3)
    # Weights depend on the seed and the names only, so a batch-3 build is the same network.
    assert_close_to_interpreter(module.build(batch=3), feeds, model)


def test_neuron_computes_and():
    module = load("neuron")
    g = module.build()
    model = to_onnx(g)
    for x1 in (0.0, 1.0):
        for x2 in (0.0, 1.0):
            feeds = {"x1": np.float32(x1), "x2": np.float32(x2)}
            want = float(x1 == 1.0 and x2 == 1.0)
            assert float(run(g, feeds)["y"]) == want
            assert float(run_onnxruntime(model, feeds)["y"]) == want


def test_backprop_example_gives_minus_12():
    module = load("backprop_example")
    g = module.build()
    feeds = module.example_inputs()
    assert {k: float(v) for k, v in feeds.items()} == {"x": -2.0, "y": 5.0, "z": -4.0}
    assert float(run(g, feeds)["f"]) == -12.0
    assert float(run_onnxruntime(g, feeds)["f"]) == -12.0


def test_lenet5_parameter_count():
    conv = [(1, 6, 5), (6, 16, 5)]  # (in, out, kernel) with bias
    fc = [(16 * 5 * 5, 120), (120, 84), (84, 10)]  # (in, out) with bias
    expected = sum(o * i * k * k + o for i, o, k in conv) + sum(i * o + o for i, o in fc)
    assert expected == 61_706
    assert load("lenet5").build().num_params() == expected


def test_small_model_parameter_counts():
    # mlp: 64-128-64-10 linear layers with biases.
    assert load("mlp").build().num_params() == (64 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    # cnn: bias-free 3x3 convs 1->16->32->64, BN (gamma, beta) after each, fc 64*2*2 -> 10.
    convs = 9 * (1 * 16 + 16 * 32 + 32 * 64)
    assert load("cnn").build().num_params() == convs + 2 * (16 + 32 + 64) + (64 * 4 * 10 + 10)
    # residual: conv 1->16 and 16->16 (3x3, bias), two BNs of 16, fc 16 -> 10.
    assert load("residual").build().num_params() == (
        (9 * 16 + 16) + (9 * 16 * 16 + 16) + 2 * 32 + (16 * 10 + 10))
    assert load("neuron").build().num_params() == 3
    assert load("backprop_example").build().num_params() == 0


def resnet18_param_count() -> int:
    def bn(c: int) -> int:
        return 2 * c

    def block(cin: int, cout: int, stride: int) -> int:
        n = cout * cin * 9 + bn(cout) + cout * cout * 9 + bn(cout)
        if stride != 1 or cin != cout:
            n += cout * cin + bn(cout)
        return n

    total = 64 * 3 * 7 * 7 + bn(64)
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        total += block(cin, cout, stride) + block(cout, cout, 1)
        cin = cout
    return total + 512 * 1000 + 1000


@pytest.fixture(scope="module")
def resnet18() -> tuple[ModuleType, Graph, np.ndarray]:
    """ResNet-18, built once, and its interpreter logits on the example input."""
    module = load("resnet18")
    g = module.build()
    return module, g, run(g, module.example_inputs())["logits"]


def test_resnet18_end_to_end(resnet18):
    module, g, logits = resnet18
    assert resnet18_param_count() == 11_689_512
    assert g.num_params() == resnet18_param_count()
    # Named as torchvision's state dict.
    for name in ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                 "layer2.0.downsample.0.weight", "layer4.1.bn2.bias", "fc.weight", "fc.bias"]:
        assert name in g.nx, name
    assert g.type_of(g.outputs[0]).shape == (1, 1000)
    g.verify()
    model = to_onnx(g)
    onnx.checker.check_model(model, full_check=True)
    got = run_onnxruntime(model, module.example_inputs())["logits"]
    assert got.shape == logits.shape == (1, 1000)
    scale = max(1.0, float(np.max(np.abs(logits))))
    assert float(np.max(np.abs(got - logits))) <= 1e-5 * scale
    initializers = {t.name for t in model.graph.initializer}
    assert set(g.params()) <= initializers


def test_resnet18_dynamic_batch_on_onnxruntime(resnet18):
    module, g, logits = resnet18
    model = to_bytes(g, dynamic_batch=True)
    x1 = module.example_inputs()["x"]
    x3 = np.concatenate([module.example_inputs(seed=1)["x"], x1, x1[:, :, ::-1]], axis=0)
    out3 = run_onnxruntime(model, {"x": x3})["logits"]
    assert out3.shape == (3, 1000)
    scale = max(1.0, float(np.max(np.abs(logits))))
    assert float(np.max(np.abs(out3[1:2] - logits))) <= 1e-5 * scale
    assert not np.allclose(out3[0], out3[1])

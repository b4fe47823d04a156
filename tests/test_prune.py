"""`graphc prune` and its loop (graphc.compress.prune): schedules, the kept channels against the
course's norms computed here with numpy, the pruned checkpoint compiled and run, the accuracy
floor, masks through fine-tuning, and clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphc import testing
from graphc.cli import main
from graphc.compress.prune import Goal, compose
from graphc.errors import UsageError
from graphc.models import load
from graphc.train import loop as training
from graphc.train.checkpoint import load_checkpoint, save_checkpoint
from graphc.train.data import load_digits
from graphc.train.loop import TrainConfig


def run_ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[str, str]:
    assert main(argv) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    return captured.out, captured.err


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    assert main(argv) == status
    return testing.one_error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """cnn and mlp trained 3 epochs on digits, as `graphc train` writes them."""
    folder = tmp_path_factory.mktemp("trained")
    train_set, test_set = load_digits()
    out = {}
    for name in ("cnn", "mlp"):
        config = TrainConfig(epochs=3, batch=64, seed=0)
        result = training.train(lambda b, n=name: load(n).build(batch=b), train_set, test_set,
                                config, progress=False)
        path = folder / f"{name}.ckpt"
        save_checkpoint(path, name, result, config, data={"data": "digits"})
        out[name] = path
    return out


def onnx_weights(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


# ----- schedules ----------------------------------------------------------------------------


def test_goal_shares_follow_the_documented_schedules() -> None:
    flops = Goal("flops", 0.5)
    assert [flops.share(k, 4) for k in (1, 2, 4)] == pytest.approx(
        [0.5 ** 0.25, 0.5 ** 0.5, 0.5])
    sparsity = Goal("sparsity", 0.9)
    # Zhu and Gupta's cubic schedule: s * (1 - (1 - k/K)^3).
    assert [sparsity.share(k, 3) for k in (1, 2, 3)] == pytest.approx(
        [0.9 * (1 - (2 / 3) ** 3), 0.9 * (1 - (1 / 3) ** 3), 0.9])


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.2, math.nan])
def test_goal_refuses_a_value_outside_0_1(value: float) -> None:
    with pytest.raises(UsageError, match="between 0 and 1"):
        Goal("flops", value)


def test_compose_indexes_the_earlier_record() -> None:
    assert compose({"a": [1, 4, 6, 9]}, {"a": [0, 3]}) == {"a": [1, 9]}
    assert compose({}, {"b": [2]}) == {"b": [2]}
    assert compose({"a": [0, 1]}, {}) == {"a": [0, 1]}


# ----- channels -----------------------------------------------------------------------------


def folded_l1(state: dict[str, np.ndarray], conv: str, bn: str) -> np.ndarray:
    """The course's L1 norm of each output channel, of the weights BatchNorm folds into."""
    w = state[f"{conv}.weight"]
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + 1e-5)
    return np.abs(w * scale[:, None, None, None]).reshape(len(w), -1).sum(axis=1)


def test_one_step_keeps_the_channels_with_the_largest_l1_norms(
        trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.ckpt"
    run_ok(capsys, ["prune", "cnn", "--weights", str(trained["cnn"]), "--sparsity", "0.5",
                    "--steps", "1", "--finetune-epochs", "0", "--round-to", "1",
                    "--latency-batch", "0", "-o", str(out)])
    dense = load_checkpoint(trained["cnn"]).state
    pruned = load_checkpoint(out)
    record = pruned.data["pruned"]["channels"]
    assert sorted(record) == ["block1.conv", "block2.conv", "block3.conv"]
    inputs = [0]  # the image's one channel
    for block, channels in (("block1", 16), ("block2", 32), ("block3", 64)):
        scores = folded_l1(dense, f"{block}.conv", f"{block}.bn")
        want = sorted(np.argsort(-scores, kind="stable")[:channels // 2].tolist())
        assert record[f"{block}.conv"] == want
        # Its kept filters, reading only the previous block's kept maps.
        np.testing.assert_array_equal(pruned.state[f"{block}.conv.weight"],
                                      dense[f"{block}.conv.weight"][want][:, inputs])
        for vector in ("weight", "bias", "running_mean", "running_var"):
            np.testing.assert_array_equal(pruned.state[f"{block}.bn.{vector}"],
                                          dense[f"{block}.bn.{vector}"][want])
        inputs = want
    # fc reads block3's maps flattened: channel c is columns 4c..4c+3 (2x2 pooled maps).
    columns = [4 * c + k for c in record["block3.conv"] for k in range(4)]
    np.testing.assert_array_equal(pruned.state["fc.weight"], dense["fc.weight"][:, columns])


def test_pruned_checkpoint_compiles_to_the_small_file(
        trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, model, plot = tmp_path / "p.ckpt", tmp_path / "p.onnx", tmp_path / "p.png"
    out, err = run_ok(capsys, ["prune", "cnn", "--weights", str(trained["cnn"]),
                               "--target-flops", "0.5", "--steps", "2", "--finetune-epochs",
                               "1", "--latency-batch", "8", "-o", str(ckpt),
                               "--plot", str(plot)])
    assert "reached the goal in 2 steps" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "step 2/2  removed: accuracy" in err
    record = load_checkpoint(ckpt).data["pruned"]
    kept = {k: len(v) for k, v in record["channels"].items()}
    assert all(n % 8 == 0 for n in kept.values()), kept  # the default --round-to 8
    out, _ = run_ok(capsys, ["compile", "cnn", "--weights", str(ckpt), "--pipeline",
                             "inference", "--verify", "-o", str(model), "--accuracy", "digits"])
    weights = onnx_weights(model)
    convs = {k: v for k, v in weights.items() if v.ndim == 4}
    shapes = sorted(v.shape for v in convs.values())
    c1, c2, c3 = kept["block1.conv"], kept["block2.conv"], kept["block3.conv"]
    assert shapes == sorted([(c1, 1, 3, 3), (c2, c1, 3, 3), (c3, c2, 3, 3)])
    assert weights["fc.weight"].shape[1] == 4 * c3
    flops = 64 * 9 * c1 + 64 * 9 * c1 * c2 + 16 * 9 * c2 * c3
    dense_flops = 64 * 9 * 16 + 64 * 9 * 16 * 32 + 16 * 9 * 32 * 64
    assert flops <= 0.5 * dense_flops + 1e-9
    diff = float(out.split("max abs diff ")[1].split()[0])
    assert diff < 1e-4
    accuracy = float(out.split("accuracy     ")[1].split("%")[0])
    assert accuracy == pytest.approx(100 * load_checkpoint(ckpt).history[-1].test_accuracy,
                                     abs=0.01)


def test_the_accuracy_floor_keeps_the_last_good_model(
        trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "p.ckpt"
    out, _ = run_ok(capsys, ["prune", "cnn", "--weights", str(trained["cnn"]), "--sparsity",
                             "0.9", "--steps", "2", "--finetune-epochs", "0", "--min-accuracy",
                             "100", "--latency-batch", "0", "-o", str(out_path)])
    assert "step 1: accuracy" in out and "is below 100.00%; kept step 0" in out
    assert "step 1 (refused)" in out
    dense, kept = load_checkpoint(trained["cnn"]), load_checkpoint(out_path)
    assert not kept.data["pruned"]["channels"]
    for name, value in dense.state.items():
        if name in kept.state:
            np.testing.assert_array_equal(kept.state[name], value)


# ----- magnitude ----------------------------------------------------------------------------


def test_magnitude_pruning_keeps_its_zeros_through_fine_tuning(
        trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, model = tmp_path / "m.ckpt", tmp_path / "m.onnx"
    run_ok(capsys, ["prune", "mlp", "--weights", str(trained["mlp"]), "--method", "magnitude",
                    "--sparsity", "0.8", "--steps", "2", "--finetune-epochs", "1",
                    "--latency-batch", "0", "-o", str(ckpt)])
    dense = load_checkpoint(trained["mlp"]).state
    pruned = load_checkpoint(ckpt)
    names = pruned.data["pruned"]["sparse"]
    assert names and all(n.endswith(".weight") for n in names)
    for name in names:
        w, before = pruned.state[name], dense[name]
        zeros = w == 0
        assert zeros.mean() == pytest.approx(0.8, abs=1 / w.size)
        # The weights that survived are the largest of the dense ones (ranked before step 1
        # and again after fine-tuning, so compare against a looser cut: the survivors' smallest
        # dense magnitude is above the dense median).
        assert np.abs(before[~zeros]).min() > np.quantile(np.abs(before), 0.25)
        assert not np.array_equal(w[~zeros], before[~zeros])  # fine-tuned
    out, _ = run_ok(capsys, ["compile", "mlp", "--weights", str(ckpt), "--pipeline",
                             "inference", "-o", str(model)])
    assert "add --passes prune-magnitude" in out


# ----- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "words"), [
    ([], "prune needs exactly one budget"),
    (["--target-flops", "0.5", "--sparsity", "0.5"], "prune needs exactly one budget"),
    (["--target-flops", "2"], "--target-flops must be a fraction between 0 and 1"),
    (["--sparsity", "0.5", "--method", "l3"], "unknown pruning method 'l3'"),
    (["--target-flops", "0.5", "--method", "magnitude"], "magnitude pruning does not reduce"),
    (["--sparsity", "0.5", "--method", "magnitude", "--round-to", "8"],
     "--round-to rounds channel counts"),
    (["--sparsity", "0.5", "--min-accuracy", "120"], "the accuracy floor is out of range"),
    (["--sparsity", "0.5", "--steps", "0"], "--steps must be an integer >= 1"),
    (["--sparsity", "0.5", "--plot", "x.gif"], "cannot draw"),
])
def test_bad_options_are_one_clear_line(trained: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], argv: list[str],
                                        words: str) -> None:
    argv = [a if a != "x.gif" else str(tmp_path / a) for a in argv]
    line = fails(capsys, ["prune", "cnn", "--weights", str(trained["cnn"]), *argv,
                          "-o", str(tmp_path / "p.ckpt")], 2)
    assert words in line
    assert not (tmp_path / "p.ckpt").exists()


def test_a_checkpoint_of_another_model_is_refused(
        trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["prune", "cnn", "--weights", str(trained["mlp"]), "--sparsity", "0.5",
                          "-o", str(tmp_path / "p.ckpt")], 2)
    assert "is a checkpoint of model 'mlp'" in line


def test_compile_passes_its_pruning_options_to_the_passes(
        trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "m.onnx"
    out, _ = run_ok(capsys, ["compile", "mlp", "--weights", str(trained["mlp"]), "--passes",
                             "prune-magnitude", "--sparsity", "0.5", "-o", str(out_path)])
    assert "fc1.weight    50.0% zero (4,096 of 8,192)" in out
    channels = tmp_path / "c.onnx"
    run_ok(capsys, ["compile", "cnn", "--weights", str(trained["cnn"]), "--pipeline",
                    "inference", "--passes", "prune-channels", "--prune-amount", "0.75",
                    "--round-to", "1", "-o", str(channels)])
    shapes = sorted(v.shape for v in onnx_weights(channels).values() if v.ndim == 4)
    assert shapes == [(4, 1, 3, 3), (8, 4, 3, 3), (16, 8, 3, 3)]


def test_compile_refuses_bad_pruning_options_before_loading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(capsys, ["compile", "no_such_model", "--passes", "prune-magnitude",
                          "--sparsity", "1.5", "-o", str(tmp_path / "x.onnx")], 2)
    assert "--sparsity: the sparsity is the fraction of weights to zero" in line
    line = fails(capsys, ["compile", "cnn", "--sparsity", "0.5", "-o", str(tmp_path / "x.onnx")],
                 2)
    assert "--sparsity only applies to prune-magnitude" in line

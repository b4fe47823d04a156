"""PyTorch eager twins of graphc's zoo models ``mlp`` and ``cnn``: the reference for training speed.

This is a reference for bench/train_speed.py, not part of graphc: torch is not a graphc
dependency, and nothing in graphc imports this module. It builds the same networks as
``graphc.models.mlp`` and ``graphc.models.cnn`` in ``torch.nn``, starting from graphc's own
parameter arrays, so that both frameworks train from identical weights; ``state()`` maps the
torch weights back so that a test can compare the two.

Names and layouts are graphc's, which follow PyTorch's (``graphc.nn``): a linear weight is
``(out, in)``, a conv weight ``(out, in, kh, kw)``, and the torch modules are named like the
graphc layers, so ``fc1.weight`` or ``block1.bn.running_mean`` is the same key on both sides.
What had to be translated:

- padding ``"same"`` of a 3x3 stride-1 conv is one pixel on every side (graphc's SAME_UPPER and
  torch's ``"same"`` agree for odd kernels);
- graphc's BatchNormalization ``momentum`` is the course's ``a`` in
  ``mu_avg = a * mu_avg + (1 - a) * mu_B`` (0.9); torch's ``momentum`` is ``1 - a`` (0.1);
- dropout keeps graphc's drop probability ``p`` (0.2 in ``mlp``, 0.3 in ``cnn``);
- torch's ``num_batches_tracked`` buffers have no graphc counterpart and are left out.

A trap when comparing trained models: in training mode torch updates ``running_var`` with the
*unbiased* batch variance (divided by n - 1); the batch itself is normalized with the biased one.

Thread settings: torch reads ``OMP_NUM_THREADS`` and its kin once, when it is first imported, so
the caller must import bench/harness.py *before* numpy, torch or this module, and then call
``one_thread()``. Without torch installed, importing this module raises ImportError, which
``harness.import_optional("torch_reference")`` turns into None::

    import harness  # first: it sets the thread-pool variables

    import numpy as np

    torch_reference = harness.import_optional("torch_reference")
    if torch_reference is not None:
        torch_reference.one_thread()
        params = {n: g.nx.nodes[n]["value"] for n in torch_reference.param_names("cnn")}
        model = torch_reference.build("cnn", params)
        opt = torch_reference.make_optimizer(model, "sgd", lr=0.05, momentum=0.9)
        loss = torch_reference.train_epoch(model, opt, train.batches(64, seed=0))
        acc = torch_reference.accuracy(model, test.x, test.y)

Seed torch (``torch.manual_seed``) for reproducible dropout masks; the weights come from graphc.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

BN_EPS = 1e-5  # graphc.nn.batch_norm's default, used by the cnn
BN_MOMENTUM = 0.9  # graphc's (the course's) a; torch's momentum is 1 - a
OPTIMIZERS = ("sgd", "adam")

Array = np.ndarray | torch.Tensor


def one_thread() -> int:
    """Limit torch to one intra-op thread (and one inter-op thread, if still possible).

    Import bench/harness.py before numpy and torch as well: it sets ``OMP_NUM_THREADS=1`` and
    its kin, which torch's OpenMP pool reads once at import. Returns ``torch.get_num_threads()``.
    """
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # only allowed before the first inter-op parallel work; eager training has none
    return torch.get_num_threads()


# ----- the two models -----------------------------------------------------------------------


def _mlp() -> nn.Module:
    """Return graphc's ``mlp``: x (N, 64) -> 128 -> 64 -> 10, ReLU and dropout 0.2."""
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(64, 128)), ("relu1", nn.ReLU()), ("drop1", nn.Dropout(0.2)),
        ("fc2", nn.Linear(128, 64)), ("relu2", nn.ReLU()), ("drop2", nn.Dropout(0.2)),
        ("fc3", nn.Linear(64, 10)),
    ]))


def _conv_bn_relu(cin: int, cout: int) -> nn.Module:
    """Return graphc's ``conv_bn_relu`` block: 3x3 conv ("same", no bias), BN, ReLU."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(cin, cout, 3, padding="same", bias=False)),
        ("bn", nn.BatchNorm2d(cout, eps=BN_EPS, momentum=1.0 - BN_MOMENTUM)),
        ("relu", nn.ReLU()),
    ]))


def _cnn() -> nn.Module:
    """Return graphc's ``cnn``: x (N, 1, 8, 8) -> 16 -> 32, pool -> 64, pool -> 10."""
    return nn.Sequential(OrderedDict([
        ("block1", _conv_bn_relu(1, 16)),
        ("block2", _conv_bn_relu(16, 32)), ("pool2", nn.MaxPool2d(2)),
        ("block3", _conv_bn_relu(32, 64)), ("pool3", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("drop", nn.Dropout(0.3)),
        ("fc", nn.Linear(64 * 2 * 2, 10)),
    ]))


_MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": _mlp, "cnn": _cnn}
MODELS = tuple(_MODELS)


def _constructor(model_name: str) -> Callable[[], nn.Module]:
    if model_name not in _MODELS:
        raise ValueError(f"torch_reference: unknown model {model_name!r}; expected one of "
                         f"{', '.join(MODELS)}")
    return _MODELS[model_name]


def _graphc_keys(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """The state keys that are graphc constants: all but BN's ``num_batches_tracked``."""
    return [k for k in state_dict if not k.endswith(".num_batches_tracked")]


def param_names(model_name: str) -> list[str]:
    """Return the graphc names ``build()`` needs: trainable parameters and BN running stats."""
    return _graphc_keys(_constructor(model_name)().state_dict())


# ----- graphc arrays <-> torch weights ------------------------------------------------------


def build(model_name: str, params: dict[str, np.ndarray]) -> nn.Module:
    """Return the torch model ``model_name`` ("mlp" or "cnn") with graphc's weights, in train mode.

    ``params`` maps every name of ``param_names(model_name)`` (graphc's trainable parameters
    and, for the cnn, the BN running means and variances) to its array; the arrays are copied,
    so training the torch model leaves them alone.
    """
    module = _constructor(model_name)()
    own = module.state_dict()
    names = _graphc_keys(own)
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in own or n not in names]
    if missing or extra:
        raise ValueError(f"torch_reference: parameters of {model_name!r} do not match; expected "
                         f"the names of param_names({model_name!r}), got "
                         f"{len(missing)} missing {missing} and {len(extra)} unknown {extra}")
    loaded: dict[str, torch.Tensor] = {}
    for name, ref in own.items():
        if name not in names:
            loaded[name] = torch.zeros_like(ref)  # num_batches_tracked: a fresh BN
            continue
        array = np.asarray(params[name])
        if array.shape != tuple(ref.shape):
            raise ValueError(f"torch_reference: parameter {name!r} of {model_name!r} has the "
                             f"wrong shape; expected {tuple(ref.shape)}, got {array.shape}")
        loaded[name] = torch.tensor(array, dtype=torch.float32)  # a copy
    module.load_state_dict(loaded, strict=True)
    return module


def state(module: nn.Module, model_name: str) -> dict[str, np.ndarray]:
    """Return the module's weights under graphc's names and layouts (float32 copies).

    The inverse of ``build()``: ``state(build(name, params), name)`` equals ``params``.
    """
    names = param_names(model_name)
    current = module.state_dict()
    got = _graphc_keys(current)
    if sorted(got) != sorted(names):
        raise ValueError(f"torch_reference: the module is not a {model_name!r}; expected the "
                         f"weights {names}, got {got}")
    return {n: current[n].detach().cpu().numpy().astype(np.float32, copy=True) for n in names}


# ----- training and evaluation --------------------------------------------------------------


def _tensor(a: Array, dtype: torch.dtype) -> torch.Tensor:
    """Return ``a`` as a tensor of ``dtype``, without a copy when it already is one."""
    return torch.as_tensor(a, dtype=dtype)


def train_epoch(module: nn.Module, optimizer: torch.optim.Optimizer,
                batches: Iterable[tuple[Array, Array]]) -> float:
    """Train one epoch: per batch, cross-entropy on integer labels, zero_grad, backward, step.

    ``batches`` yields ``(x, y)``: float32 inputs and int64 class labels, as numpy arrays (e.g.
    ``graphc.train.data.Dataset.batches``) or tensors already converted outside the timing. Returns
    the mean loss over the epoch's samples (batches weighted by their size).
    """
    module.train()
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for xb, yb in batches:
        x, y = _tensor(xb, torch.float32), _tensor(yb, torch.int64)
        loss = functional.cross_entropy(module(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Accumulated as a tensor: no .item() (and no Python float) per batch.
        total += loss.detach() * y.shape[0]
        count += y.shape[0]
    if count == 0:
        raise ValueError("torch_reference: train_epoch got no batches; expected at least one")
    return float(total) / count


def accuracy(module: nn.Module, x: Array, y: Array) -> float:
    """Return the fraction of samples whose arg-max logit is the label, in eval mode.

    The module's train/eval mode is restored afterwards.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            pred = module(_tensor(x, torch.float32)).argmax(dim=1)
            return float((pred == _tensor(y, torch.int64)).double().mean())
    finally:
        module.train(was_training)


def make_optimizer(module: nn.Module, name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Return ``torch.optim.SGD`` (with ``momentum``) or ``torch.optim.Adam`` for the module.

    ``name`` is "sgd" or "adam"; Adam ignores ``momentum`` (its betas stay at torch's (0.9,
    0.999)). ``weight_decay`` is torch's L2 term added to the gradient, in both, as graphc's
    ``graphc.train.optim`` does.
    """
    params: Any = module.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"torch_reference: unknown optimizer {name!r}; expected one of "
                     f"{', '.join(OPTIMIZERS)}")

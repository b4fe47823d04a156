"""The spatial layers of ``graphc.nn``: convolutions (``conv1d``, ``conv2d``, ``conv3d``,
``conv_transpose1d/2d/3d``), pools over 1, 2 or 3 spatial axes, and ``pad``; and what every layer
helper shares (``layer``, which makes a helper atomic, and the layer names). ``graphc.nn``
re-exports the layers: use them as ``nn.conv1d``.

Inputs are (N, C, L), (N, C, H, W) or (N, C, D, H, W); parameter layouts follow PyTorch (conv
weight ``(out, in / groups, *kernel)``).

>>> from graphc.dsl import GraphBuilder
>>> x = GraphBuilder("tiny").input("x", (1, 1, 8, 8))
>>> conv2d(x, 4, 3, padding="same", padding_mode="symmetric", name="conv").shape
(1, 4, 8, 8)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc.dsl import Tensor
from graphc.errors import GraphcError, ShapeError, unknown

PADDINGS = ("valid", "same")
PADDING_MODES = ("zeros", "reflect", "edge", "symmetric")
PAD_MODES = ("constant", "reflect", "edge", "symmetric", "wrap")
_SPATIAL = {1: "(l)", 2: "(h, w)", 3: "(d, h, w)"}


def _ints(v: int | Sequence[int], what: str, k: int) -> tuple[int, ...]:
    """Return one int per spatial axis from an int (the same on every axis) or k ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * k
    items = tuple(int(i) for i in v)
    if len(items) != k:
        raise GraphcError(f"{what} needs one int or {k}", expected=f"int or {_SPATIAL[k]}",
                          got=v)
    return items


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    return _ints(v, what, 2)  # type: ignore[return-value]


def _need_rank(x: Tensor, rank: int, layer: str) -> None:
    if x.ndim != rank:
        raise ShapeError(f"{layer} needs a rank-{rank} input", where=f"layer {layer!r}",
                         expected=f"rank {rank}", got=f"%{x.name} of shape {x.shape}",
                         hint="Flatten or reshape the input first." if rank == 2 else None)


def _pads(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
          dilation: tuple[int, ...], padding: Any, layer: str) -> tuple[int, ...]:
    """Return ONNX pads (the begins, then the ends, of the spatial axes; in 2-D (top, left,
    bottom, right)) for 'valid', 'same' or an int or one int per spatial axis."""
    k = len(kernel)
    if isinstance(padding, str):
        if padding not in PADDINGS:
            raise unknown("padding", padding, PADDINGS, where=f"layer {layer!r}")
        if padding == "valid":
            return (0,) * (2 * k)
        # SAME as in ONNX SAME_UPPER: output = ceil(input / stride), extra padding at the end.
        begin, end = [], []
        for size, kk, s, d in zip(x.shape[2:], kernel, stride, dilation, strict=True):
            total = max((-(-size // s) - 1) * s + (kk - 1) * d + 1 - size, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return (*begin, *end)
    sizes = _ints(padding, "padding", k)
    return (*sizes, *sizes)


def layer(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Make a layer helper atomic: if it raises, the nodes it added are removed again."""

    @functools.wraps(fn)
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Tensor:
        first = x[0] if isinstance(x, (list, tuple)) else x
        with first.builder.transaction():
            return fn(x, *args, **kwargs)

    return wrapper


def _layer(x: Tensor, kind: str, name: str | None) -> tuple[str, str]:
    """Return (local, full) names of a new layer of ``kind``."""
    local = x.builder.layer_name(kind, name)
    return local, x.builder.scoped(local)


def _padded(x: Tensor, pads: tuple[int, ...], mode: str, local: str) -> Tensor:
    """Put a reflect, edge or symmetric Pad node in front of a layer; zero padding stays inside
    the op."""
    if mode not in PADDING_MODES:
        raise unknown("padding_mode", mode, PADDING_MODES, where=f"layer {local!r}")
    if mode == "zeros" or not any(pads):
        return x
    return pad(x, pads, mode=mode, name=local + ".pad")


# ----- convolutions ------------------------------------------------------------------------


def _conv(x: Tensor, k: int, out_channels: int, kernel_size: int | Sequence[int],
          stride: int | Sequence[int], padding: Any, padding_mode: str,
          dilation: int | Sequence[int], groups: int, bias: bool, init: str,
          in_channels: int | None, name: str | None) -> Tensor:
    """A Conv over the ``k`` spatial axes of a rank-(k + 2) input (conv1d, conv2d, conv3d)."""
    b = x.builder
    local, full = _layer(x, "conv", name)
    _need_rank(x, k + 2, full)
    kernel = _ints(kernel_size, "kernel_size", k)
    strides = _ints(stride, "stride", k)
    dilations = _ints(dilation, "dilation", k)
    pads = _pads(x, kernel, strides, dilations, padding, full)
    x = _padded(x, pads, padding_mode, local)
    if padding_mode != "zeros":
        pads = (0,) * (2 * k)
    cin = in_channels or x.shape[1]
    if cin % groups:
        raise ShapeError("input channels are not divisible by groups", where=f"layer {full!r}",
                         expected=f"a multiple of groups={groups}", got=cin)
    w = b.param(local + ".weight", (out_channels, cin // groups, *kernel), init=init)
    bias_t = b.param(local + ".bias", (out_channels,), init="zeros") if bias else None
    attrs: dict[str, Any] = {"kernel_shape": kernel}
    if strides != (1,) * k:
        attrs["strides"] = strides
    if dilations != (1,) * k:
        attrs["dilations"] = dilations
    if groups != 1:
        attrs["group"] = groups
    if any(pads):
        attrs["pads"] = pads
    return b.op("Conv", x, w, bias_t, name=full, **attrs)


@layer
def conv1d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
           stride: int | Sequence[int] = 1, padding: Any = 0, padding_mode: str = "zeros",
           dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
           init: str = "he", in_channels: int | None = None, name: str | None = None) -> Tensor:
    """1-D convolution on an (N, C, L) input (audio, sequences); weight ``(out, in / groups,
    k)``. Arguments as in ``conv2d``, with one int per axis.

    >>> from graphc.dsl import GraphBuilder
    >>> x = GraphBuilder("seq").input("x", (2, 3, 16))
    >>> conv1d(x, 8, 5, stride=2, padding="same", name="conv").shape
    (2, 8, 8)
    """
    return _conv(x, 1, out_channels, kernel_size, stride, padding, padding_mode, dilation,
                 groups, bias, init, in_channels, name)


@layer
def conv2d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
           stride: int | Sequence[int] = 1, padding: Any = 0, padding_mode: str = "zeros",
           dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
           init: str = "he", in_channels: int | None = None, name: str | None = None) -> Tensor:
    """2-D convolution on an NCHW input.

    ``padding`` is ``"valid"``, ``"same"`` (output = ceil(input / stride)) or an int or (h, w)
    pair; ``padding_mode`` is ``"zeros"``, ``"reflect"`` (mirror about the edge cell: c b | a b
    c), ``"symmetric"`` (the course's mirror padding, repeating the edge cell: b a | a b c) or
    ``"edge"``. Reflect, symmetric and edge padding become a Pad node in front of the Conv.
    """
    return _conv(x, 2, out_channels, kernel_size, stride, padding, padding_mode, dilation,
                 groups, bias, init, in_channels, name)


@layer
def conv3d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
           stride: int | Sequence[int] = 1, padding: Any = 0, padding_mode: str = "zeros",
           dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
           init: str = "he", in_channels: int | None = None, name: str | None = None) -> Tensor:
    """3-D convolution on an (N, C, D, H, W) input (video, volumes); weight ``(out, in /
    groups, kd, kh, kw)``. Arguments as in ``conv2d``, with one int per axis.

    >>> from graphc.dsl import GraphBuilder
    >>> x = GraphBuilder("vol").input("x", (1, 2, 8, 8, 8))
    >>> conv3d(x, 4, 3, padding=1, stride=(1, 2, 2), name="conv").shape
    (1, 4, 8, 4, 4)
    """
    return _conv(x, 3, out_channels, kernel_size, stride, padding, padding_mode, dilation,
                 groups, bias, init, in_channels, name)


def _conv_transpose(x: Tensor, k: int, out_channels: int, kernel_size: int | Sequence[int],
                    stride: int | Sequence[int], padding: int | Sequence[int],
                    output_padding: int | Sequence[int], dilation: int | Sequence[int],
                    groups: int, bias: bool, init: str, name: str | None) -> Tensor:
    """A ConvTranspose over the ``k`` spatial axes of a rank-(k + 2) input."""
    b = x.builder
    local, full = _layer(x, "deconv", name)
    _need_rank(x, k + 2, full)
    kernel = _ints(kernel_size, "kernel_size", k)
    pads = _ints(padding, "padding", k)
    if x.shape[1] % groups or out_channels % groups:
        raise ShapeError("channels are not divisible by groups", where=f"layer {full!r}",
                         expected=f"multiples of groups={groups}",
                         got=f"in {x.shape[1]}, out {out_channels}")
    w = b.param(local + ".weight", (x.shape[1], out_channels // groups, *kernel), init=init,
                fan_in=x.shape[1] * math.prod(kernel) // groups)
    bias_t = b.param(local + ".bias", (out_channels,), init="zeros") if bias else None
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": _ints(stride, "stride", k),
                             "pads": (*pads, *pads)}
    if _ints(output_padding, "output_padding", k) != (0,) * k:
        attrs["output_padding"] = _ints(output_padding, "output_padding", k)
    if _ints(dilation, "dilation", k) != (1,) * k:
        attrs["dilations"] = _ints(dilation, "dilation", k)
    if groups != 1:
        attrs["group"] = groups
    return b.op("ConvTranspose", x, w, bias_t, name=full, **attrs)


@layer
def conv_transpose1d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     output_padding: int | Sequence[int] = 0,
                     dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                     init: str = "he", name: str | None = None) -> Tensor:
    """Transposed 1-D convolution on (N, C, L) (weight ``(in, out / groups, k)``).

    >>> from graphc.dsl import GraphBuilder
    >>> x = GraphBuilder("up").input("x", (1, 4, 5))
    >>> conv_transpose1d(x, 2, 4, stride=2, padding=1, name="up").shape
    (1, 2, 10)
    """
    return _conv_transpose(x, 1, out_channels, kernel_size, stride, padding, output_padding,
                           dilation, groups, bias, init, name)


@layer
def conv_transpose2d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     output_padding: int | Sequence[int] = 0,
                     dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                     init: str = "he", name: str | None = None) -> Tensor:
    """Transposed 2-D convolution (weight ``(in, out / groups, kh, kw)``, as in PyTorch)."""
    return _conv_transpose(x, 2, out_channels, kernel_size, stride, padding, output_padding,
                           dilation, groups, bias, init, name)


@layer
def conv_transpose3d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     output_padding: int | Sequence[int] = 0,
                     dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                     init: str = "he", name: str | None = None) -> Tensor:
    """Transposed 3-D convolution on (N, C, D, H, W) (weight ``(in, out / groups, kd, kh,
    kw)``)."""
    return _conv_transpose(x, 3, out_channels, kernel_size, stride, padding, output_padding,
                           dilation, groups, bias, init, name)


# ----- pools and padding --------------------------------------------------------------------


def _pool_attrs(x: Tensor, kernel_size: Any, stride: Any, padding: Any, full: str,
                k: int = 2) -> dict[str, Any]:
    kernel = _ints(kernel_size, "kernel_size", k)
    strides = _ints(kernel if stride is None else stride, "stride", k)
    pads = _pads(x, kernel, strides, (1,) * k, padding, full)
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides}
    if any(pads):
        attrs["pads"] = pads
    return attrs


def _max_pool(x: Tensor, k: int, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              name: str | None) -> Tensor:
    _, full = _layer(x, "maxpool", name)
    _need_rank(x, k + 2, full)
    attrs = _pool_attrs(x, kernel_size, stride, padding, full, k)
    if ceil_mode:
        attrs["ceil_mode"] = 1
    return x.builder.op("MaxPool", x, name=full, **attrs)


def _avg_pool(x: Tensor, k: int, kernel_size: Any, stride: Any, padding: Any,
              count_include_pad: bool, ceil_mode: bool, name: str | None) -> Tensor:
    _, full = _layer(x, "avgpool", name)
    _need_rank(x, k + 2, full)
    attrs = _pool_attrs(x, kernel_size, stride, padding, full, k)
    if count_include_pad:
        attrs["count_include_pad"] = 1
    if ceil_mode:
        attrs["ceil_mode"] = 1
    return x.builder.op("AveragePool", x, name=full, **attrs)


@layer
def max_pool1d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, ceil_mode: bool = False, name: str | None = None) -> Tensor:
    """Max pooling over the L axis of an (N, C, L) input; arguments as in ``max_pool2d``."""
    return _max_pool(x, 1, kernel_size, stride, padding, ceil_mode, name)


@layer
def max_pool2d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, ceil_mode: bool = False, name: str | None = None) -> Tensor:
    """Max pooling; ``stride`` defaults to the kernel size; padding as in ``conv2d``."""
    return _max_pool(x, 2, kernel_size, stride, padding, ceil_mode, name)


@layer
def max_pool3d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, ceil_mode: bool = False, name: str | None = None) -> Tensor:
    """Max pooling over (D, H, W) of an (N, C, D, H, W) input; arguments as in ``max_pool2d``."""
    return _max_pool(x, 3, kernel_size, stride, padding, ceil_mode, name)


@layer
def avg_pool1d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, count_include_pad: bool = False, ceil_mode: bool = False,
               name: str | None = None) -> Tensor:
    """Average pooling over the L axis of an (N, C, L) input; arguments as in ``avg_pool2d``."""
    return _avg_pool(x, 1, kernel_size, stride, padding, count_include_pad, ceil_mode, name)


@layer
def avg_pool2d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, count_include_pad: bool = False, ceil_mode: bool = False,
               name: str | None = None) -> Tensor:
    """Average pooling; padded cells count in the mean only with ``count_include_pad``."""
    return _avg_pool(x, 2, kernel_size, stride, padding, count_include_pad, ceil_mode, name)


@layer
def avg_pool3d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, count_include_pad: bool = False, ceil_mode: bool = False,
               name: str | None = None) -> Tensor:
    """Average pooling over (D, H, W) of an (N, C, D, H, W) input; arguments as in
    ``avg_pool2d``."""
    return _avg_pool(x, 3, kernel_size, stride, padding, count_include_pad, ceil_mode, name)


@layer
def global_avg_pool(x: Tensor, *, name: str | None = None) -> Tensor:
    """Mean over the spatial axes: (N, C, H, W) -> (N, C, 1, 1); also (N, C, L) and
    (N, C, D, H, W)."""
    return x.builder.op("GlobalAveragePool", x, name=_layer(x, "gap", name)[1])


@layer
def global_max_pool(x: Tensor, *, name: str | None = None) -> Tensor:
    """Max over the spatial axes: (N, C, H, W) -> (N, C, 1, 1); also (N, C, L) and
    (N, C, D, H, W)."""
    return x.builder.op("GlobalMaxPool", x, name=_layer(x, "gmp", name)[1])


@layer
def pad(x: Tensor, pads: Sequence[int], *, mode: str = "constant", value: float = 0.0,
        name: str | None = None) -> Tensor:
    """Pad the last ``len(pads) / 2`` axes: ``pads`` holds their begins, then their ends; for an
    NCHW input (top, left, bottom, right), for (N, C, L) (left, right).

    ``mode`` is ``"constant"`` (with ``value``), ``"reflect"`` (mirror about the edge cell:
    c b | a b c), ``"symmetric"`` (the course's mirror padding, repeating the edge cell:
    b a | a b c), ``"edge"`` or ``"wrap"`` (periodic: b c | a b c).

    >>> from graphc.dsl import GraphBuilder
    >>> from graphc.interpret import run
    >>> b = GraphBuilder("mirror")
    >>> y = b.output(pad(b.input("x", (1, 1, 3)), (2, 2), mode="symmetric"), "y")
    >>> run(b.build(), {"x": np.array([[[1, 2, 3]]], np.float32)})["y"].tolist()
    [[[2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]]]
    """
    if mode not in PAD_MODES:
        raise unknown("pad mode", mode, PAD_MODES, where=f"layer {name or 'pad'!r}")
    pads = tuple(int(p) for p in pads)
    k = len(pads) // 2
    if len(pads) % 2 or not 1 <= k <= x.ndim:
        raise GraphcError("pad needs a begin and an end per padded axis",
                          where=f"layer {name or 'pad'!r}",
                          expected=f"2, 4, ... up to {2 * x.ndim} values (the begins, then "
                                   "the ends, of the last axes)", got=list(pads))
    b = x.builder
    local, full = _layer(x, "pad", name)
    lead = x.ndim - k
    onnx_pads = [0] * lead + list(pads[:k]) + [0] * lead + list(pads[k:])
    pads_t = b.const(np.array(onnx_pads, np.int64), name=local + ".pads", dtype=np.int64)
    value_t = b.const(value, name=local + ".value", dtype=x.dtype) if value else None
    return b.op("Pad", x, pads_t, value_t, name=full, mode=mode)

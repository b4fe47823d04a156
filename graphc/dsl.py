"""The graph-building DSL: symbolic tensors with Python operators, scopes and parameters.

The course's ``f = (x + y) * z``, written as in the course:

>>> b = GraphBuilder("example")
>>> x, y, z = b.inputs("x", "y", "z")
>>> f = b.output((x + y) * z, "f")
>>> print(b.build())
graph example
  %x = Input # () f32
  %y = Input # () f32
  %z = Input # () f32
  %add = Add(%x, %y) # () f32
  %f = Mul(%add, %z) # () f32
  return %f
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from graphc.errors import GraphcError, unknown
from graphc.ir import CONST, INPUT, Graph, Value

INITS = ("he", "he_fan_out", "xavier", "uniform", "zeros", "ones", "normal")


class NodeRef:
    """The current id of one node; renaming the node updates it, so tensors stay valid."""

    __slots__ = ("node",)

    def __init__(self, node: str) -> None:
        self.node = node


class Tensor:
    """A symbolic value in a graph being built; Python operators add nodes.

    ``+ - * / ** @`` and unary ``-`` work between tensors and with Python numbers (which become
    constants of the tensor's dtype).
    """

    __slots__ = ("_out", "_ref", "builder")
    __array_priority__ = 1000  # numpy scalars on the left defer to our reflected operators

    def __init__(self, builder: GraphBuilder, value: Value) -> None:
        self.builder = builder
        self._ref = builder.node_ref(value.node)
        self._out = value.out

    @property
    def value(self) -> Value:
        """The IR value this tensor stands for (follows renames of its node)."""
        return Value(self._ref.node, self._out)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.builder.graph.type_of(self.value).shape

    @property
    def dtype(self) -> np.dtype:
        return self.builder.graph.type_of(self.value).dtype

    @property
    def name(self) -> str:
        return self.builder.graph.value_name(self.value)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<Tensor %{self.name} {self.builder.graph.type_of(self.value)}>"

    def _binary(self, op: str, other: Any, reflected: bool = False) -> Tensor:
        other = self.builder.lift(other, like=self)
        a, b = (other, self) if reflected else (self, other)
        return self.builder.op(op, a, b)

    def __add__(self, other: Any) -> Tensor:
        return self._binary("Add", other)

    def __radd__(self, other: Any) -> Tensor:
        # sum(...) starts from the integer 0: adding it would only add a useless node.
        if isinstance(other, int) and other == 0:
            return self
        return self._binary("Add", other, reflected=True)

    def __sub__(self, other: Any) -> Tensor:
        return self._binary("Sub", other)

    def __rsub__(self, other: Any) -> Tensor:
        return self._binary("Sub", other, reflected=True)

    def __mul__(self, other: Any) -> Tensor:
        return self._binary("Mul", other)

    def __rmul__(self, other: Any) -> Tensor:
        return self._binary("Mul", other, reflected=True)

    def __truediv__(self, other: Any) -> Tensor:
        return self._binary("Div", other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return self._binary("Div", other, reflected=True)

    def __pow__(self, other: Any) -> Tensor:
        return self._binary("Pow", other)

    def __rpow__(self, other: Any) -> Tensor:
        return self._binary("Pow", other, reflected=True)

    def __matmul__(self, other: Any) -> Tensor:
        return self._binary("MatMul", other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return self._binary("MatMul", other, reflected=True)

    def __neg__(self) -> Tensor:
        return self.builder.op("Neg", self)

    def __bool__(self) -> bool:
        raise GraphcError(f"tensor %{self.name} has no truth value while the graph is built",
                          hint="Use graphc.nn.heaviside or nn.clip for conditions.")


class GraphBuilder:
    """Builds a ``Graph``: inputs, parameters with seeded initialization, scopes, outputs.

    >>> b = GraphBuilder("net", seed=0)
    >>> x = b.input("x", (1, 3))
    >>> w = b.param("w", (3, 2), init="xavier")
    >>> y = b.output(x @ w, "y")
    >>> y.shape
    (1, 2)
    """

    def __init__(self, name: str = "graph", seed: int = 0, dtype: Any = np.float32) -> None:
        self.graph = Graph(name)
        self.seed = int(seed)
        self.dtype = np.dtype(dtype)
        self._scope: list[str] = []
        self._layer_counts: dict[str, int] = {}
        self._refs: dict[str, NodeRef] = {}
        self._auto: set[str] = set()

    def node_ref(self, node: str) -> NodeRef:
        """Return the one ``NodeRef`` of ``node``."""
        ref = self._refs.get(node)
        if ref is None:
            ref = self._refs[node] = NodeRef(node)
        return ref

    def _rename(self, old: str, new: str) -> None:
        self.graph.rename({old: new})
        ref = self._refs.pop(old, None)
        if ref is not None:
            ref.node = new
            self._refs[new] = ref
        if old in self._auto:
            self._auto.discard(old)
            self._auto.add(new)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Remove every node added inside the block if the block raises (a failed layer
        leaves nothing behind)."""
        mark = self.graph.nx.number_of_nodes()
        try:
            yield
        except BaseException:
            added = list(self.graph.nx)[mark:]
            self.graph.nx.remove_nodes_from(added)
            for node in added:
                self._refs.pop(node, None)
                self._auto.discard(node)
            raise

    # ----- names --------------------------------------------------------------------------

    def scoped(self, name: str) -> str:
        """Return ``name`` prefixed with the current scope (``block1.conv``)."""
        return ".".join([*self._scope, name])

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix the names of everything built inside the ``with`` block by ``name.``."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def layer_name(self, kind: str, name: str | None) -> str:
        """Return the local name of a new layer: ``name``, or ``kind1``, ``kind2``, ...

        The layer's node is ``scoped(local)`` and its parameters ``scoped(local + ".weight")``.
        """
        if name is None:
            key = self.scoped(kind)
            self._layer_counts[key] = self._layer_counts.get(key, 0) + 1
            name = f"{kind}{self._layer_counts[key]}"
            while self.scoped(name) in self.graph.nx:
                self._layer_counts[key] += 1
                name = f"{kind}{self._layer_counts[key]}"
            self._auto.add(self.scoped(name))
        if self.scoped(name) in self.graph.nx:
            raise GraphcError(f"a layer called {self.scoped(name)!r} already exists",
                              hint="Give each layer a distinct name (or none, for an automatic "
                                   "one).")
        return name

    # ----- values -------------------------------------------------------------------------

    def input(self, name: str, shape: Sequence[int] = (), dtype: Any = None) -> Tensor:
        """Add a graph input (a scalar unless ``shape`` is given)."""
        return Tensor(self, self.graph.add_input(name, shape, dtype or self.dtype))

    def inputs(self, *names: str, shape: Sequence[int] = ()) -> list[Tensor]:
        """Add several inputs of one shape: ``x, y, z = b.inputs("x", "y", "z")``."""
        return [self.input(n, shape) for n in names]

    def const(self, value: Any, name: str = "c", dtype: Any = None) -> Tensor:
        """Add a constant (not trained)."""
        return Tensor(self, self.graph.add_const(self.scoped(name), value,
                                                 dtype=dtype or self.dtype))

    def lift(self, value: Any, like: Tensor) -> Tensor:
        """Return ``value`` as a tensor: tensors as they are, numbers as constants."""
        if isinstance(value, Tensor):
            if value.builder is not self:
                raise GraphcError("tensors from two different graphs are combined",
                                  got=f"%{value.name} of graph {value.builder.graph.name!r}",
                                  expected=f"a tensor of graph {self.graph.name!r}")
            return value
        const = self.const(value, dtype=like.dtype)
        self._auto.add(const.value.node)
        return const

    def param(self, name: str, shape: Sequence[int], init: Any = "he",
              fan_in: int | None = None, fan_out: int | None = None,
              trainable: bool = True) -> Tensor:
        """Add a parameter with deterministic initialization.

        ``init`` is ``"he"`` (normal, std sqrt(2 / fan_in)), ``"he_fan_out"`` (std
        sqrt(2 / fan_out), as torchvision's ResNets), ``"xavier"`` (uniform, limit
        sqrt(6 / (fan_in + fan_out))), ``"uniform"`` (limit 1 / sqrt(fan_in), PyTorch's default
        for linear layers), ``"zeros"``, ``"ones"``, ``"normal"`` (std 1) or an array. The
        random stream depends only on the builder's seed and the parameter's full
        name, so adding a layer does not change the others.
        """
        full = self.scoped(name)
        shape = tuple(int(d) for d in shape)
        if isinstance(init, str):
            value = self._init(full, shape, init, fan_in, fan_out)
        else:
            value = np.asarray(init, dtype=self.dtype)
            if value.shape != shape:
                raise GraphcError(f"initial value of parameter {full!r} has the wrong shape",
                                  expected=shape, got=value.shape)
        if full in self.graph.nx:
            raise GraphcError(f"a node called {full!r} already exists",
                              hint="Give each parameter a distinct name.")
        return Tensor(self, self.graph.add_const(full, value, trainable=trainable,
                                                 copy=not isinstance(init, str)))

    def _init(self, name: str, shape: tuple[int, ...], init: str, fan_in: int | None,
              fan_out: int | None) -> np.ndarray:
        if init == "zeros":
            return np.zeros(shape, self.dtype)
        if init == "ones":
            return np.ones(shape, self.dtype)
        if init not in INITS:
            raise unknown("init", init, INITS, where=f"parameter {name!r}")
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
        fan_in = fan_in or (shape[1] * receptive if len(shape) > 1 else shape[0])
        fan_out = fan_out or shape[0] * receptive
        if init in ("xavier", "uniform"):
            limit = (np.sqrt(6.0 / (fan_in + fan_out)) if init == "xavier"
                     else 1.0 / np.sqrt(fan_in))
            return rng.uniform(-limit, limit, size=shape).astype(self.dtype, copy=False)
        std = {"he": np.sqrt(2.0 / fan_in), "he_fan_out": np.sqrt(2.0 / fan_out)}.get(init, 1.0)
        value = rng.standard_normal(size=shape, dtype=np.float32)
        value *= np.float32(std)
        return value.astype(self.dtype, copy=False)

    def op(self, op: str, *inputs: Tensor | None, name: str | None = None,
           **attrs: Any) -> Tensor:
        """Add one op application and return its first output.

        >>> b = GraphBuilder()
        >>> b.op("Relu", b.input("x", (2,))).shape
        (2,)
        """
        node = name if name is not None else self.scoped(op.lower())
        value = self.graph.add_node(op, [None if t is None else t.value for t in inputs],
                                    attrs, name=node)
        if name is None:
            self._auto.add(value.node)
        return Tensor(self, value)

    def op_outputs(self, op: str, *inputs: Tensor | None, name: str | None = None,
                   **attrs: Any) -> tuple[Tensor, ...]:
        """Add one op application and return all its outputs (``op`` returns the first).

        >>> b = GraphBuilder()
        >>> x = b.input("x", (4, 1))
        >>> one, zero = b.const(np.ones(1, np.float32)), b.const(np.zeros(1, np.float32))
        >>> y, mean, var = b.op_outputs("BatchNormalization", x, one, zero, zero, one,
        ...                             training_mode=1)
        >>> y.shape, mean.shape
        ((4, 1), (1,))
        """
        first = self.op(op, *inputs, name=name, **attrs)
        count = len(self.graph.types(first.value.node))
        return (first, *(Tensor(self, Value(first.value.node, k)) for k in range(1, count)))

    def output(self, tensor: Tensor, name: str | None = None) -> Tensor:
        """Mark ``tensor`` as a graph output, renamed to ``name`` when given.

        A node that only has an automatic name (``add_1``, ``relu2``, a lifted constant) gives
        the name up; tensors that refer to renamed nodes stay valid.
        """
        g = self.graph
        value = tensor.value
        if name is not None and g.value_name(value) != name:
            if name in g.nx:
                if name not in self._auto:
                    raise GraphcError(f"cannot name output {name!r}: a node has that name",
                                      hint="Choose another output name.")
                self._rename(name, g.fresh_name(name))
            if g.op(value.node) in (INPUT, CONST) or value.out != 0 or value in g.outputs:
                value = g.add_node("Identity", [value], name=name)
            else:
                self._rename(value.node, name)
                value = Value(name, value.out)
        g.outputs.append(value)
        return Tensor(self, value)

    def build(self) -> Graph:
        """Verify and return the graph."""
        self.graph.verify()
        return self.graph

"""The backend-neutral graph: ``Graph`` of ``Node``s connected by named ``Tensor``s.

Nodes keep ONNX operator semantics (op type, domain, attributes, broadcasting), so the
import is faithful and the fake-quant reference is well defined. Quantization lives on
the objects themselves: ``Tensor.quant`` (a frozen ``QuantSpec``) and ``Node.precision``.
Nothing here knows about protobufs; ``mpcompile.ir.serde`` converts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from mpcompile.errors import InternalError
from mpcompile.ir.quant import QuantSpec
from mpcompile.ir.types import Precision

Dim = int | str | None


@dataclasses.dataclass(frozen=True)
class OpaqueAttribute:
    """An attribute mpcompile does not interpret (e.g. a subgraph), kept as serialized bytes."""

    kind: str
    payload: bytes


class Tensor:
    """A value in the graph: a graph input, a node output, or a constant (``value`` set)."""

    __slots__ = ("name", "dtype", "shape", "value", "quant")

    def __init__(
        self,
        name: str,
        dtype: np.dtype | None = None,
        shape: tuple[Dim, ...] | None = None,
        value: np.ndarray | None = None,
        quant: QuantSpec | None = None,
    ) -> None:
        self.name = name
        if value is not None:
            value = np.asarray(value)
            dtype = value.dtype
            shape = tuple(value.shape)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(shape) if shape is not None else None
        self.value = value
        self.quant = quant

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    @property
    def is_float(self) -> bool:
        return self.dtype is not None and self.dtype.kind == "f" or (
            self.dtype is not None and self.dtype.name == "bfloat16"
        )

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def static_shape(self) -> tuple[int, ...] | None:
        if self.shape is None or not all(isinstance(d, int) for d in self.shape):
            return None
        return tuple(self.shape)  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return NotImplemented
        if (self.name, self.dtype, self.shape, self.quant) != (other.name, other.dtype, other.shape, other.quant):
            return False
        if (self.value is None) != (other.value is None):
            return False
        return self.value is None or (
            self.value.shape == other.value.shape and self.value.tobytes() == other.value.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = "const" if self.is_constant else "value"
        return f"Tensor({self.name!r}, {kind}, {self.dtype}, {self.shape}{', ' + repr(self.quant) if self.quant else ''})"


class Node:
    """One operator application. ``inputs``/``outputs`` are tensor names ('' = omitted optional input)."""

    __slots__ = ("name", "op_type", "domain", "inputs", "outputs", "attrs", "precision", "precision_reason")

    def __init__(
        self,
        name: str,
        op_type: str,
        inputs: Iterable[str],
        outputs: Iterable[str],
        attrs: dict[str, Any] | None = None,
        domain: str = "",
        precision: Precision | None = None,
        precision_reason: str = "",
    ) -> None:
        self.name = name
        self.op_type = op_type
        self.domain = domain
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.precision = precision
        self.precision_reason = precision_reason

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return (
            self.name == other.name
            and self.op_type == other.op_type
            and self.domain == other.domain
            and self.inputs == other.inputs
            and self.outputs == other.outputs
            and self.precision == other.precision
            and self.precision_reason == other.precision_reason
            and _attrs_equal(self.attrs, other.attrs)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        prec = f", {self.precision.value}" if self.precision else ""
        return f"Node({self.name!r}, {self.op_type}, {self.inputs} -> {self.outputs}{prec})"


def _attrs_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                return False
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return False
        elif x != y:
            return False
    return True


class Graph:
    """A dataflow graph with ONNX semantics. ``nodes`` is kept in topological order."""

    def __init__(
        self,
        name: str = "graph",
        nodes: list[Node] | None = None,
        tensors: dict[str, Tensor] | None = None,
        inputs: list[str] | None = None,
        outputs: list[str] | None = None,
        opset_imports: dict[str, int] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.nodes: list[Node] = list(nodes or [])
        self.tensors: dict[str, Tensor] = dict(tensors or {})
        self.inputs: list[str] = list(inputs or [])
        self.outputs: list[str] = list(outputs or [])
        self.opset_imports: dict[str, int] = dict(opset_imports or {"": 17})
        self.metadata: dict[str, str] = dict(metadata or {})

    # ------------------------------------------------------------------ lookup
    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise InternalError(f"graph {self.name!r} has no tensor {name!r}") from None

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        result: dict[str, list[Node]] = defaultdict(list)
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    result[name].append(node)
        return result

    def initializers(self) -> Iterator[Tensor]:
        return (t for t in self.tensors.values() if t.is_constant)

    def activations(self) -> Iterator[Tensor]:
        """Non-constant tensors: graph inputs and node outputs."""
        return (t for t in self.tensors.values() if not t.is_constant)

    def add_tensor(self, tensor: Tensor) -> Tensor:
        if tensor.name in self.tensors:
            raise InternalError(f"tensor {tensor.name!r} already exists in graph {self.name!r}")
        self.tensors[tensor.name] = tensor
        return tensor

    def unique_name(self, base: str) -> str:
        taken = set(self.tensors) | {n.name for n in self.nodes}
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for node in self.nodes:
            counts[node.op_type] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameter_count(self) -> int:
        return int(sum(t.value.size for t in self.initializers() if t.dtype is not None and t.dtype.kind == "f"))

    # ------------------------------------------------------------------ surgery
    def toposort(self) -> None:
        produced_by = self.producers()
        known = set(self.inputs) | {t.name for t in self.initializers()}
        order: list[Node] = []
        state: dict[int, int] = {}
        by_id = {id(n): n for n in self.nodes}

        def visit(node: Node) -> None:
            stack = [(node, iter(node.inputs))]
            state[id(node)] = 1
            while stack:
                current, it = stack[-1]
                advanced = False
                for name in it:
                    if not name or name in known:
                        continue
                    dep = produced_by.get(name)
                    if dep is None or id(dep) not in by_id:
                        continue
                    mark = state.get(id(dep), 0)
                    if mark == 0:
                        state[id(dep)] = 1
                        stack.append((dep, iter(dep.inputs)))
                        advanced = True
                        break
                    if mark == 1:
                        raise InternalError(f"graph {self.name!r} has a cycle through node {dep.name!r}")
                if not advanced:
                    stack.pop()
                    state[id(current)] = 2
                    order.append(current)

        for node in self.nodes:
            if state.get(id(node), 0) == 0:
                visit(node)
        self.nodes = order

    def remove_unused(self) -> int:
        """Drop nodes whose outputs nobody needs and tensors nobody references. Returns nodes removed."""
        needed = set(self.outputs)
        kept: list[Node] = []
        for node in reversed(self.nodes):
            if any(out in needed for out in node.outputs if out):
                kept.append(node)
                needed.update(i for i in node.inputs if i)
        removed = len(self.nodes) - len(kept)
        self.nodes = list(reversed(kept))
        referenced = needed | set(self.inputs) | {o for n in self.nodes for o in n.outputs if o}
        self.tensors = {k: v for k, v in self.tensors.items() if k in referenced}
        return removed

    def replace_uses(self, old: str, new: str) -> None:
        """Rewire every consumer (and graph output) of ``old`` to read ``new``."""
        for node in self.nodes:
            node.inputs = [new if i == old else i for i in node.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def rename_tensor(self, old: str, new: str) -> None:
        """Give tensor ``old`` the name ``new`` everywhere (producer, consumers, graph inputs/outputs)."""
        if new in self.tensors:
            raise InternalError(f"cannot rename {old!r} to {new!r}: the name is taken")
        tensor = self.tensors.pop(old)
        tensor.name = new
        self.tensors[new] = tensor
        for node in self.nodes:
            node.inputs = [new if i == old else i for i in node.inputs]
            node.outputs = [new if o == old else o for o in node.outputs]
        self.inputs = [new if i == old else i for i in self.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def copy(self) -> Graph:
        """A structural copy. Constant arrays and ``QuantSpec``s are shared: both are treated as immutable
        (passes replace ``tensor.value``, never write into it), which keeps copies of large models cheap."""
        tensors = {k: Tensor(t.name, t.dtype, t.shape, t.value, t.quant) for k, t in self.tensors.items()}
        nodes = [
            Node(n.name, n.op_type, n.inputs, n.outputs, copy.copy(n.attrs), n.domain, n.precision, n.precision_reason)
            for n in self.nodes
        ]
        return Graph(self.name, nodes, tensors, self.inputs, self.outputs, self.opset_imports, self.metadata)

    # ------------------------------------------------------------------ quantization views
    def quantized_tensors(self) -> list[Tensor]:
        return [t for t in self.tensors.values() if t.quant is not None]

    @property
    def is_annotated(self) -> bool:
        return any(t.quant is not None for t in self.tensors.values()) or any(
            n.precision is not None for n in self.nodes
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (
            self.name == other.name
            and self.nodes == other.nodes
            and self.inputs == other.inputs
            and self.outputs == other.outputs
            and self.tensors.keys() == other.tensors.keys()
            and all(self.tensors[k] == other.tensors[k] for k in self.tensors)
            and self.opset_imports == other.opset_imports
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={self.inputs}, outputs={self.outputs})"

"""The pass protocol: a small, named graph transformation that says what it changed."""

from __future__ import annotations

import dataclasses

from mpcompile.ir.graph import Graph


@dataclasses.dataclass
class PassResult:
    graph: Graph
    modified: bool
    notes: list[str] = dataclasses.field(default_factory=list)


class GraphPass:
    """Subclasses implement ``call``. Passes mutate the graph in place and return it in the result."""

    name: str = "pass"

    def call(self, graph: Graph) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, graph: Graph) -> PassResult:
        return self.call(graph)


def run_passes(graph: Graph, passes: list[GraphPass]) -> tuple[Graph, list[str]]:
    notes: list[str] = []
    for p in passes:
        result = p(graph)
        graph = result.graph
        notes.extend(f"{p.name}: {n}" for n in result.notes)
    return graph, notes

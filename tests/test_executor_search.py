"""The auto search on many workers visits exactly the sequential search's candidates and picks its answer.

A simulated executor (virtual time, random task durations, so results arrive in any order)
drives ``planning.auto._Search`` over synthetic drop curves, monotone or not: speculation
may evaluate more candidates, but the rows reported and the k chosen are always those of
``search_steps`` asked directly. No processes, no models: fast.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from mpcompile.execution.base import Executor, LocalShared, Task
from mpcompile.planning import auto


class _SimTask(Task):
    def __init__(self, index, label, end, value):
        super().__init__(index, label)
        self.end, self.value, self.finished = end, value, False

    def done(self):
        return self.finished

    def result(self):
        return self.value


class SimExecutor(Executor):
    """Tasks take a random virtual time (a fixed cost plus one per batch, times noise); ``wait`` advances the
    clock to the next completion."""

    kind = "simulated"

    def __init__(self, workers: int, rng: random.Random) -> None:
        super().__init__()
        self.workers, self.rng, self.now, self.submitted, self.busy = workers, rng, 0.0, [], 0

    def share(self, value):
        return LocalShared(value)

    def _submit(self, fn, shared, item, index, label):
        k, lo, hi = item
        self.busy += 1
        assert self.busy <= self.workers, "the search keeps at most `workers` tasks in flight"
        self.submitted.append(k)
        outputs = [{"y": np.array([-1 if k is None else k])}] * (hi - lo)
        seconds = (0.3 + 0.1 * (hi - lo)) * self.rng.uniform(0.5, 2.0)  # a session, then each batch
        return _SimTask(index, label, self.now + seconds, (outputs, (0.5, 0.5)))

    def wait(self, tasks):
        first = min((t for t in tasks if not t.finished), key=lambda t: t.end)
        self.now = max(self.now, first.end)
        first.finished = True
        self.busy -= 1
        return [first]


def _sequential(curve, budget):
    asked = []

    def meets(k):
        asked.append(k)
        return curve[k] <= budget + 1e-12

    answer = auto.search_steps(meets, len(curve) - 1)
    return (answer, sorted(set(asked))), list(dict.fromkeys(asked))


class _Unit(random.Random):
    def uniform(self, a, b):
        return 1.0


def _parallel(curve, budget, workers, seed=None, batches=8):
    ranking = tuple(f"layer{i}" for i in range(len(curve) - 1))
    ctx = auto._SearchContext(None, None, None, ranking, [None] * batches)
    ex = SimExecutor(workers, random.Random(seed) if seed is not None else _Unit())

    class Bar:
        def advance(self, n):
            pass

    search = auto._Search(ex, ctx, budget, lambda fp32, quant: curve[int(quant[0]["y"][0])])
    answer, rows = search.run(Bar())
    assert [r.promoted for r in rows.values()] == list(rows)
    return (answer, sorted(rows)), ex


def _curves(rng: random.Random):
    for _ in range(40):
        n = rng.randint(0, 60)
        start = rng.uniform(0.05, 0.5)
        monotone = [start * np.exp(-k / rng.uniform(1, 20)) for k in range(n + 1)]
        yield monotone
        yield [d * rng.uniform(0.5, 1.5) for d in monotone]  # not monotone: the search assumes it, must still agree


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8])
def test_parallel_search_visits_the_sequential_candidates(workers):
    rng = random.Random(workers)
    for i, curve in enumerate(_curves(rng)):
        for budget in (0.0, 0.01, 0.05, rng.uniform(0, 0.3), 1.0):
            expected, order = _sequential(curve, budget)
            got, ex = _parallel(curve, budget, workers, seed=i)
            assert got == expected, (curve, budget, workers)
            if workers == 1:  # no speculation: the sequential evaluations in their order, after the FP32 reference
                assert ex.submitted == [None] + order


def test_speculation_shortens_a_long_search():
    """A search that fails 0, 1, 2, 4, … 32 and then bisects: more workers finish it in clearly less time."""
    curve = [0.2 * np.exp(-k / 3) + 0.05 if k < 50 else 0.0 for k in range(64)]
    (answer, rows), seq = _parallel(curve, 0.01, 1)
    (answer2, rows2), par = _parallel(curve, 0.01, 2)
    assert (answer, rows) == (answer2, rows2) and answer == 50
    assert par.now < 0.7 * seq.now, (par.now, seq.now)
    (answer8, rows8), par8 = _parallel(curve, 0.01, 8)
    assert (answer8, rows8) == (answer, rows) and par8.now < par.now

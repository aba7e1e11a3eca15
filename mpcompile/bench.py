"""Latency and size of artifacts beside their FP32 baseline, each through its backend's ``Runner``.

One backend at a time, every artifact next to the FP32 baseline *on the same backend* (ONNX
Runtime: the FP32 model itself; TFLite: the model compiled with ``--precision fp32``, or any
``--baseline``): the same feeds, the same runner code path the conformance suite uses.

How it measures (the rules of ``benchmarks/``, applied to one command):

* **warm-up** per subject and batch: runs until at least 3 runs and 0.2 s (session creation,
  first-call allocations and lazy initialisation happen there, not in the numbers);
* **interleaved rounds**: every round runs every subject of a backend ``k`` times, the order
  reversed on odd rounds, so that machine noise (shared cores, frequency changes) hits all
  subjects alike; ``k`` is sized from the warm-up so a round takes ``seconds / rounds`` per subject;
* **statistics**: p50 and p90 over all timed runs; the ratio ``baseline p50 / subject p50``
  (a speedup, > 1 = faster than FP32) and, to judge noise, its range over the rounds (each
  round's median ratio).

Per layer (``profile_layers``, ``mpcompile bench --per-layer``): each artifact and its baseline are profiled
by their runner (``Runner.profile``: µs per run of each plan node, Q/DQ and the runtime's own layers given to
the plan node they belong to), interleaved over a few rounds, and the nodes are listed by how much more they
cost in the artifact than in FP32: where INT8 does not pay. A backend without a profiler says so.

Nothing here compiles: the caller (``mpcompile bench``) provides the baseline artifact.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.backends.base import Artifact, Backend, Runner
from mpcompile.backends.options import BackendOptions
from mpcompile.backends.profile import LayerProfile
from mpcompile.errors import MpcompileError

Feeds = Mapping[str, np.ndarray]


@dataclasses.dataclass
class Subject:
    """One thing to time: an artifact (or the FP32 baseline) with its backend and options."""

    label: str
    artifact: Artifact
    backend: Backend
    options: BackendOptions
    baseline: bool = False
    note: str = ""
    #: bytes of the artifact's files, read when the subject is made (a scratch baseline may be gone later)
    size_bytes: int = -1

    def __post_init__(self) -> None:
        if self.size_bytes < 0:
            files = self.artifact.files or [self.artifact.path]
            self.size_bytes = int(sum(Path(f).stat().st_size for f in dict.fromkeys(map(str, files)) if Path(f).is_file()))


@dataclasses.dataclass
class Timing:
    p50_ms: float
    p90_ms: float
    runs: int
    #: per-round medians (ms), for the noise range of a ratio
    rounds_ms: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "runs": self.runs, "rounds_ms": self.rounds_ms}


@dataclasses.dataclass
class Result:
    subject: Subject
    timings: dict[int, Timing] = dataclasses.field(default_factory=dict)
    #: the runner could not be made: nothing of this subject was timed
    error: str | None = None
    #: batch size -> why it could not be timed at that size (the other sizes still are)
    batch_errors: dict[int, str] = dataclasses.field(default_factory=dict)
    #: batch size -> the frozen batch it was timed in runs of (an artifact that takes one batch size only)
    split: dict[int, int] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.subject.label


@dataclasses.dataclass
class Comparison:
    """A subject against its backend's baseline."""

    result: Result
    baseline: Result | None

    def speedup(self, batch: int, stat: str = "p50_ms") -> float | None:
        """``baseline / subject`` latency (> 1: faster than the baseline)."""
        if self.baseline is None or batch not in self.result.timings or batch not in self.baseline.timings:
            return None
        ours = getattr(self.result.timings[batch], stat)
        return getattr(self.baseline.timings[batch], stat) / ours if ours > 0 else None

    def speedup_range(self, batch: int) -> tuple[float, float] | None:
        if self.baseline is None or batch not in self.result.timings or batch not in self.baseline.timings:
            return None
        pairs = zip(self.baseline.timings[batch].rounds_ms, self.result.timings[batch].rounds_ms)
        ratios = [b / s for b, s in pairs if s > 0]
        return (min(ratios), max(ratios)) if ratios else None

    def size_ratio(self) -> float | None:
        if self.baseline is None or self.result.error or self.baseline.subject.size_bytes == 0:
            return None
        return self.result.subject.size_bytes / self.baseline.subject.size_bytes


@dataclasses.dataclass
class BenchReport:
    batches: list[int]
    results: list[Result]
    seconds: float
    rounds: int
    #: what was left out and why (a batch size the model's fixed batch does not admit)
    notes: list[str] = dataclasses.field(default_factory=list)
    #: ``--per-layer``: each artifact against its baseline, node by node
    layers: list[LayerComparison] = dataclasses.field(default_factory=list)

    def comparisons(self) -> list[Comparison]:
        baselines = {r.subject.backend.name: r for r in self.results if r.subject.baseline and not r.error}
        return [Comparison(r, baselines.get(r.subject.backend.name)) for r in self.results if not r.subject.baseline]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.error or r.batch_errors]

    def slower(self) -> list[tuple[Comparison, dict[int, float]]]:
        """Subjects slower than their baseline (p50) at some batch, with the speedup per such batch."""
        out = []
        for c in self.comparisons():
            slow = {b: s for b in self.batches if (s := c.speedup(b)) is not None and s < 1.0}
            if slow:
                out.append((c, slow))
        return out

    def to_dict(self) -> dict[str, Any]:
        rows = []
        comparisons = {id(c.result): c for c in self.comparisons()}
        for r in self.results:
            c = comparisons.get(id(r))
            rows.append({
                "label": r.label,
                "path": str(r.subject.artifact.path),
                "backend": r.subject.backend.name,
                "baseline": r.subject.baseline,
                "size_bytes": r.subject.size_bytes,
                "size_vs_baseline": c.size_ratio() if c else None,
                "error": r.error,
                "batch_errors": {str(b): e for b, e in r.batch_errors.items()},
                "timed_in_runs_of": {str(b): n for b, n in r.split.items()},
                "note": r.subject.note,
                "batches": {
                    str(b): {
                        **t.to_dict(),
                        "speedup_p50": c.speedup(b) if c else None,
                        "speedup_p90": c.speedup(b, "p90_ms") if c else None,
                        "speedup_range": c.speedup_range(b) if c else None,
                        "samples_per_second": b / (t.p50_ms / 1000.0) if t.p50_ms > 0 else None,
                    }
                    for b, t in r.timings.items()
                },
            })
        out = {"batches": self.batches, "seconds": self.seconds, "rounds": self.rounds, "results": rows, "notes": self.notes}
        if self.layers:
            out["per_layer"] = [c.to_dict() for c in self.layers]
        return out

    def format_table(self) -> str:
        """A plain-text table (one line per subject) and the slower-than-FP32 warnings."""
        comparisons = {id(c.result): c for c in self.comparisons()}
        head = ["artifact", "backend", "size MiB", "size ×"]
        for b in self.batches:
            head += [f"b{b} p50 ms", f"b{b} p90 ms", f"b{b} speed ×"]
        lines = [head]
        for r in self.results:
            c = comparisons.get(id(r))
            size_ratio = c.size_ratio() if c else None
            row = [r.label + (" (FP32 baseline)" if r.subject.baseline else ""), r.subject.backend.name,
                   f"{r.subject.size_bytes / 2**20:.2f}", "1" if r.subject.baseline else _fmt(size_ratio, 2)]
            for b in self.batches:
                t = r.timings.get(b)
                if t is None:
                    row += ["—", "—", "—"]
                    continue
                speed = "1" if r.subject.baseline else _fmt(c.speedup(b) if c else None, 2)
                spread = c.speedup_range(b) if c and not r.subject.baseline else None
                if spread is not None and spread[0] != spread[1]:
                    speed += f" ({spread[0]:.2f}–{spread[1]:.2f})"
                row += [_fmt(t.p50_ms, 4), _fmt(t.p90_ms, 4), speed]
            lines.append(row)
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        text = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))) for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        text.append("speed × = FP32 baseline p50 / artifact p50 on the same backend (> 1: faster); in brackets its range "
                    "over the interleaved rounds (noise)")
        text += [f"note: {note}" for note in self.notes]
        text += [f"note: {r.label}: batch {b} timed as {b // n} runs of batch {n} (its batch was frozen when it was "
                 f"lowered)" for r in self.results for b, n in r.split.items()]
        for r in self.failed:
            errors = [r.error] if r.error else [f"batch {b}: {e}" for b, e in r.batch_errors.items()]
            text += [f"error: {r.label}: {e}" for e in errors]
        for c, slow in self.slower():
            at = ", ".join(f"{s:.2f}× at batch {b}" for b, s in slow.items())
            text.append(f"warning: {c.result.label} is slower than FP32 on {c.result.subject.backend.name}: {at}")
            if c.result.subject.note:
                text.append(f"  why, from its fusion report: {c.result.subject.note}")
        for layers in self.layers:
            text += ["", layers.format()]
        return "\n".join(text)


    def slower_every_round(self, batch: int) -> list[Comparison]:
        """Artifacts that every interleaved round at ``batch`` found slower than their FP32 baseline."""
        return [c for c in self.comparisons() if (spread := c.speedup_range(batch)) is not None and spread[1] < 1.0]

    def speed_lines(self, batch: int) -> list[str]:
        """One line per artifact at ``batch``: its speed against FP32 on its backend and what that means.

        Slower is said only when every interleaved round found it slower (the whole range below 1): on a
        shared machine a single median near 1 is noise, and the line says "about as fast" then."""
        lines = []
        slower = {id(c.result) for c in self.slower_every_round(batch)}
        for c in self.comparisons():
            speed, spread = c.speedup(batch), c.speedup_range(batch)
            backend = c.result.subject.backend.name
            name = f"{backend} ({Path(c.result.subject.artifact.path).name})"
            if speed is None or spread is None:
                error = c.result.error or c.result.batch_errors.get(batch) or "no FP32 baseline on this backend"
                lines.append(f"{name}: not timed ({error})")
                continue
            figure = f"{speed:.2f}× FP32 ({spread[0]:.2f}–{spread[1]:.2f} over {len(c.result.timings[batch].rounds_ms)} rounds)"
            if id(c.result) in slower:
                lines.append(f"! speed: {name} is slower than FP32 on {backend} at batch {batch}: {figure}. FP32 is the "
                             f"faster plan here (--precision fp32); `mpcompile bench OUT` measures longer and at more "
                             f"batch sizes")
            elif spread[0] > 1.0:
                lines.append(f"{name}: {figure}, faster than FP32")
            else:
                lines.append(f"{name}: {figure}, about as fast as FP32 (the rounds disagree)")
        return lines


@dataclasses.dataclass
class LayerComparison:
    """One artifact against its baseline, per plan node: µs per run on the same backend (``--per-layer``)."""

    label: str
    baseline_label: str
    backend: str
    batch: int
    artifact: LayerProfile | None = None
    baseline: LayerProfile | None = None
    #: why there is no comparison (no profiler on this backend, a failed run)
    error: str | None = None
    #: nodes listed by ``format``
    top: int = 10

    def rows(self) -> list[tuple[str, float, float]]:
        """(node, artifact µs, baseline µs), the largest excess of the artifact over the baseline first."""
        if self.artifact is None or self.baseline is None:
            return []
        names = list(dict.fromkeys([*self.artifact.nodes, *self.baseline.nodes]))
        rows = [(n, self.artifact.nodes.get(n, 0.0), self.baseline.nodes.get(n, 0.0)) for n in names]
        return sorted(rows, key=lambda r: (-(r[1] - r[2]), r[0]))

    def format(self) -> str:
        head = f"per-layer cost on {self.backend} at batch {self.batch}: {self.label} against {self.baseline_label}"
        if self.artifact is None or self.baseline is None:
            return f"{head}\n  not available: {self.error}; the table above times whole artifacts"
        a, b = self.artifact, self.baseline
        rows = self.rows()
        slower = [r for r in rows if r[1] > r[2]]
        lines = [head, f"  total {a.total_us:.0f} µs per run against {b.total_us:.0f} µs (median of {a.repeats} runs "
                       f"per node; profiling adds overhead, so totals exceed the latency above)"]
        table = [("node", "µs", "FP32 µs", "− FP32 µs", "share")]
        for name, ours, theirs in rows[:self.top]:
            share = (ours - theirs) / a.total_us if a.total_us > 0 else 0.0
            table.append((name, f"{ours:.1f}", f"{theirs:.1f}", f"{ours - theirs:+.1f}", f"{share:+.1%}"))
        widths = [max(len(r[i]) for r in table) for i in range(5)]
        lines += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in table]
        excess = sum(r[1] - r[2] for r in slower)
        lines.append(f"  {len(slower)} of {len(rows)} nodes cost more here than in FP32, {excess:.0f} µs per run together "
                     f"(share: of this artifact's total); `--keep NODE=fp32` or `--precision auto --objective latency` "
                     f"keeps such nodes in float")
        if a.unmapped:
            lines.append(f"  not given to a plan node: {', '.join(sorted(a.unmapped)[:5])} ({sum(a.unmapped.values()):.0f} µs)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "baseline": self.baseline_label, "backend": self.backend, "batch": self.batch,
                "error": self.error, "artifact": self.artifact.to_dict() if self.artifact else None,
                "baseline_profile": self.baseline.to_dict() if self.baseline else None}


def profile_layers(subjects: Sequence[Subject], feeds: Feeds, *, batch: int = 1, repeats: int = 30, rounds: int = 3,
                   plan_nodes: Mapping[str, Sequence[str]] | None = None, top: int = 10) -> list[LayerComparison]:
    """Each artifact of ``subjects`` against its backend's baseline, per plan node, profiled by their runners.

    ``plan_nodes``: artifact path -> the node names of the plan it was lowered from (its baseline uses the same).
    Artifact and baseline alternate over ``rounds`` rounds of ``repeats`` runs; per node the median of the rounds.
    A backend without a profiler gives a comparison with ``error`` set, never an exception."""
    from mpcompile.backends.profile import ProfilingUnavailable

    plan_nodes = plan_nodes or {}
    baselines = {s.backend.name: s for s in subjects if s.baseline}
    out = []
    for subject in subjects:
        if subject.baseline:
            continue
        base = baselines.get(subject.backend.name)
        comparison = LayerComparison(subject.label, base.label if base else "—", subject.backend.name, batch, top=top)
        out.append(comparison)
        if base is None:
            comparison.error = "no FP32 baseline on this backend"
            continue
        nodes = plan_nodes.get(str(subject.artifact.path))
        runners: list[Runner] = []
        try:
            runners = [subject.backend.runner(subject.artifact, subject.options), base.backend.runner(base.artifact, base.options)]
            profiles: list[list[LayerProfile]] = [[], []]
            for _ in range(rounds):
                for i, runner in enumerate(runners):
                    profiles[i].append(runner.profile(feeds, repeats, nodes))
            comparison.artifact, comparison.baseline = median_profile(profiles[0]), median_profile(profiles[1])
        except ProfilingUnavailable as exc:
            comparison.error = str(exc).splitlines()[0]
        except Exception as exc:  # noqa: BLE001 - any backend failure is this comparison's error, reported
            comparison.error = _error(exc)
        finally:
            for runner in runners:
                runner.close()
    return out


def median_profile(profiles: Sequence[LayerProfile]) -> LayerProfile:
    """Per plan node, the median over rounds (a node absent from a round counts 0 there)."""
    first = profiles[0]
    names = list(dict.fromkeys(n for p in profiles for n in p.nodes))
    nodes = {n: float(np.median([p.nodes.get(n, 0.0) for p in profiles])) for n in names}
    stray = list(dict.fromkeys(n for p in profiles for n in p.unmapped))
    unmapped = {n: float(np.median([p.unmapped.get(n, 0.0) for p in profiles])) for n in stray}
    return LayerProfile(first.backend, first.artifact, sum(p.repeats for p in profiles), nodes, unmapped, dict(first.layers))


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"


def _warm(run: Callable[[], Any], clock: Callable[[], float]) -> float:
    """Warm-up: at least 3 runs and 0.2 s (at most 200 runs); returns the mean seconds per run."""
    start = clock()
    count = 0
    while count < 3 or (clock() - start < 0.2 and count < 200):
        run()
        count += 1
    return (clock() - start) / count


def measure(
    subjects: Sequence[Subject],
    feeds: Callable[[int], Feeds],
    *,
    batches: Sequence[int] = (1, 32),
    seconds: float = 2.0,
    rounds: int = 10,
    clock: Callable[[], float] = time.perf_counter,
    notes: Sequence[str] = (),
) -> BenchReport:
    """Time every subject at every batch size, interleaved per backend.

    ``feeds(batch)`` returns the inputs for that batch size (the same for every subject). A subject
    whose runner cannot be made or fails is reported with its error; the others go on.
    """
    results = [Result(s) for s in subjects]
    runners: dict[int, Runner] = {}
    for r in results:
        try:
            runners[id(r)] = r.subject.backend.runner(r.subject.artifact, r.subject.options)
        except Exception as exc:  # noqa: BLE001 - any backend failure is this subject's error, reported
            r.error = _error(exc)
    try:
        by_backend: dict[str, list[Result]] = {}
        for r in results:
            by_backend.setdefault(r.subject.backend.name, []).append(r)
        for batch in batches:
            data = feeds(batch)
            for group in by_backend.values():
                _measure_group([r for r in group if r.error is None], runners, data, batch, seconds, rounds, clock)
    finally:
        for runner in runners.values():
            runner.close()
    return BenchReport(list(batches), results, seconds, rounds, list(notes))


def _measure_group(group: list[Result], runners: Mapping[int, Runner], data: Feeds, batch: int, seconds: float,
                   rounds: int, clock: Callable[[], float]) -> None:
    calls: dict[int, Callable[[], Any]] = {}
    per_round: dict[int, int] = {}
    for r in group:
        runner = runners[id(r)]
        chunks = [data]
        frozen = getattr(runner, "max_batch", None)  # test doubles and third-party runners may not define it
        if frozen and batch > frozen and batch % frozen == 0:
            # the artifact takes one batch size only: a batch of ``batch`` samples is that many runs of it
            chunks = [{k: v[i:i + frozen] for k, v in data.items()} for i in range(0, batch, frozen)]
            r.split[batch] = frozen

        def call(runner: Runner = runner, chunks: list[Feeds] = chunks) -> Any:
            return [runner.run(chunk) for chunk in chunks]

        try:
            estimate = _warm(call, clock)
        except Exception as exc:  # noqa: BLE001
            r.batch_errors[batch] = _error(exc)
            continue
        calls[id(r)] = call
        per_round[id(r)] = max(1, min(10_000, int(seconds / rounds / max(estimate, 1e-9))))
    live = [r for r in group if id(r) in calls]
    times: dict[int, list[float]] = {id(r): [] for r in live}
    medians: dict[int, list[float]] = {id(r): [] for r in live}
    for i in range(rounds):
        order = live if i % 2 == 0 else list(reversed(live))
        for r in order:
            if batch in r.batch_errors:
                continue
            call, this_round = calls[id(r)], []
            try:
                for _ in range(per_round[id(r)]):
                    t0 = clock()
                    call()
                    this_round.append((clock() - t0) * 1000.0)
            except Exception as exc:  # noqa: BLE001
                r.batch_errors[batch] = _error(exc)
                continue
            times[id(r)].extend(this_round)
            medians[id(r)].append(float(np.median(this_round)))
    for r in live:
        if batch in r.batch_errors or not times[id(r)]:
            continue
        t = np.asarray(times[id(r)])
        r.timings[batch] = Timing(float(np.percentile(t, 50)), float(np.percentile(t, 90)), int(t.size), medians[id(r)])


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, MpcompileError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def tile_batch(sample: Feeds, batch: int) -> dict[str, np.ndarray]:
    """``sample`` (arrays whose first axis is the sample axis) repeated or cut to ``batch`` samples."""
    out = {}
    for name, value in sample.items():
        value = np.asarray(value)
        n = value.shape[0]
        reps = -(-batch // n)
        out[name] = np.ascontiguousarray(np.concatenate([value] * reps)[:batch] if reps > 1 else value[:batch])
    return out

"""Kernel by kernel: every quantized tensor as a backend computes it from the plan's exact inputs.

End to end, a backend and the reference are fed the model's inputs, so every tensor carries the
backend's own upstream rounding. Backends may break a near-tie either way (1 LSB, the numerics
contract in docs/design.md), and a plan whose scales shrink along a path (a Sigmoid at 1/256
behind a Conv at 0.21, a Clip(0, 6) at 6/255 behind an Add at 0.635) multiplies that one LSB by
the scale ratio, then cascades: end to end, such a plan cannot be matched in LSB by any backend
other than the reference itself. Three backends written independently all hit it on the zoo.

The question end to end cannot answer is whether the backend computes each step of the plan.
:func:`cut_plan` cuts the legalized plan at every quantized activation: each consumer of tensor
``t`` reads a new graph input ``t__given`` instead, carrying the reference's value of ``t``
(on ``t``'s integer grid, so the backend's input quantization recovers the plan's integers
exactly), and ``t`` itself becomes an output; quantized model inputs are fed on their grid too.
``t__given`` has ``t``'s shape in the plan, or, where the plan has none (shape arithmetic ONNX's
inference cannot follow), the shape of the values it is fed, the batch left dynamic: OpenVINO
cannot compile an input of unknown rank. One lowering of the cut plan and one run per
batch give every quantized tensor as the backend computes it from exact inputs, each region
between consecutive quantized tensors fused as the backend chooses. It needs no intermediates
from the runner, so it works for every backend that can lower a plan.

What it cannot see: a fusion that spans a quantized tensor in the deployed artifact (the cut
makes that tensor an output). That is why conformance accepts an end-to-end difference only
with a second, independent piece of evidence: the plan itself moves beyond tolerance at that
output when its scales are nudged by one part in a million (``compare.rounding_envelope``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.backends.targets import Target, internal_error, open_runner
from mpcompile.conformance.compare import Tolerances, layer_accumulators, output_accumulators
from mpcompile.errors import MpcompileError
from mpcompile.ir.graph import Dim, Graph, Tensor
from mpcompile.reference import ReferenceRunner
from mpcompile.reference.metrics import Accumulator, integer_counts

Batch = dict[str, np.ndarray]

#: Reference intermediates held at once while certifying (the batch is split to stay under it).
MEMORY_BUDGET_BYTES = 512 * 2**20
#: Samples certified (the first of the evaluation data): a kernel that computes something else does so on
#: every sample, and every tensor of every sample is compared, so a few dozen suffice; it bounds the cost on
#: batch-1 backends, where each sample is one run of a model with hundreds of outputs.
KERNEL_SAMPLES = 64


@dataclasses.dataclass
class KernelCertificate:
    """Each quantized tensor (and each output) of one backend, computed from the plan's exact inputs."""

    tensors: dict[str, Accumulator] = dataclasses.field(default_factory=dict)
    #: why there is no certificate (the cut plan could not be lowered or run), else empty
    error: str = ""
    seconds: float = 0.0
    samples: int = 0

    @property
    def agrees(self) -> bool:
        """Every tensor within its tolerance (float outputs: their float rule), and there was one."""
        return not self.error and bool(self.tensors) and all(acc.passed() for acc in self.tensors.values() if acc.elements)

    @property
    def counts(self) -> dict[str, int]:
        return integer_counts(self.tensors.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, acc in self.tensors.items() if acc.elements and not acc.passed()]

    def summary(self) -> str:
        if self.error:
            return f"kernel by kernel: not checked ({self.error})"
        c = self.counts
        line = (f"kernel by kernel (each quantized tensor from the plan's exact inputs, {self.samples} samples): "
                f"{c['exact']} tensors exact, "
                f"{c['within_tolerance']} within tolerance, {c['beyond_tolerance']} beyond")
        failing = self.failing
        if failing:
            acc = self.tensors[failing[0]]
            worst = f"{acc.max_lsb:.0f} LSB > {acc.tolerance_lsb:g}" if acc.quantized else acc.rule()
            line += f"; first beyond: {failing[0]!r} ({worst})"
        return line

    def to_dict(self) -> dict:
        return {"agrees": self.agrees, "error": self.error, "seconds": round(self.seconds, 3), "samples": self.samples,
                **self.counts,
                "failing": self.failing, "tensors": {k: v.to_dict() for k, v in self.tensors.items()}}


def _cut_tensors(legal: Graph) -> list[str]:
    """The tensors :func:`cut_plan` cuts, in node order: consumed per-tensor quantized activations a node produces."""
    producers, consumers = legal.producers(), legal.consumers()
    names = []
    for node in legal.nodes:
        for name in node.outputs:
            t = legal.tensors.get(name) if name else None
            if t is not None and t.quant is not None and t.quant.axis is None and name in producers and consumers.get(name):
                names.append(name)
    return names


def cut_plan(legal: Graph, shapes: Mapping[str, tuple[Dim, ...]] | None = None) -> tuple[Graph, dict[str, str]]:
    """``legal`` with every consumed quantized activation fed from a graph input of its own.

    Returns the cut plan and ``{tensor: its given input}``. Graph inputs are not cut (they are
    inputs already), nor per-channel activations (no backend has an input quantized that way).
    Each given input has the tensor's shape in the plan, or, where the plan has none, its shape in
    ``shapes`` (:func:`observed_shapes`): an input of unknown rank is what some backends cannot
    compile (OpenVINO's SoftmaxDecomposition: "Cannot get length of dynamic dimension").
    """
    shapes = shapes or {}
    cut = legal.copy()
    consumers = cut.consumers()
    given: dict[str, str] = {}
    for name in _cut_tensors(legal):
        t = legal.tensors[name]
        feed = cut.unique_name(f"{name}__given")
        for consumer in consumers[name]:
            consumer.inputs = [feed if i == name else i for i in consumer.inputs]
        cut.add_tensor(Tensor(feed, t.dtype, t.shape if t.shape is not None else shapes.get(name), quant=t.quant))
        cut.inputs.append(feed)
        if name not in cut.outputs:
            cut.outputs.append(name)
        given[name] = feed
    return cut, given


def _batch_is_dynamic(legal: Graph) -> bool:
    return any(not (legal.tensors[n].shape and isinstance(legal.tensors[n].shape[0], int)) for n in legal.inputs)


def observed_shapes(legal: Graph, one: Batch, two: Batch | None) -> dict[str, tuple[Dim, ...]]:
    """The shape of every tensor the cut feeds whose shape the plan does not know, from reference values.

    ``one`` holds the reference's values of those tensors for one sample, ``two`` (when the data has
    batches of two samples or more) for two: a dim that differs between them follows the batch and is
    left dynamic, every other dim is fixed as observed. Without ``two`` the first dim is left dynamic
    when the plan's batch is (the cut is then only ever fed one sample at a time, but says no more
    than it knows). A plan whose shape arithmetic ONNX's inference cannot follow (Paddle2ONNX's
    opset-11 Slice of a Shape: zoo ppocr_cls with a dynamic batch) has such tensors.
    """
    dynamic_batch = _batch_is_dynamic(legal)
    shapes: dict[str, tuple[Dim, ...]] = {}
    for name in _cut_tensors(legal):
        if legal.tensors[name].shape is not None or name not in one:
            continue
        first = np.shape(one[name])
        second = np.shape(two[name]) if two is not None and name in two else None
        if second is not None and len(second) == len(first):
            shapes[name] = tuple(a if a == b else None for a, b in zip(first, second))
        elif second is not None:  # the rank follows the batch: only say it is unknown
            continue
        else:
            shapes[name] = tuple(None if i == 0 and dynamic_batch else d for i, d in enumerate(first))
    return shapes


def _on_grid(legal: Graph, batch: Batch) -> Batch:
    """The batch with every quantized float input already on its grid (the reference's own fake-quantization).

    Quantizing a float input is the one step where a backend breaks genuine ties, not near-ties of
    exact arithmetic; fed on-grid values it recovers the plan's integers exactly, so the first
    kernel is judged like the others. That input rounding is what ``rounding_envelope`` nudges too.
    """
    fed = dict(batch)
    for name, value in batch.items():
        spec = legal.tensors[name].quant if name in legal.tensors else None
        if spec is not None and spec.axis is None and np.asarray(value).dtype.kind == "f":
            fed[name] = spec.fake_quantize(value)
    return fed


class _Pending:
    """(backend, reference) pairs per tensor, folded into the accumulators a few times per run, not per batch.

    A batch-1 backend gives hundreds of tensors per sample: one ``Accumulator.update`` each (a dozen
    numpy reductions on a small array) would cost more than running the models. Pairs are joined along
    the batch axis first, so per-row statistics (top-1) mean what they do for one large batch.
    """

    def __init__(self, accumulators: dict[str, Accumulator]) -> None:
        self.accumulators = accumulators
        self.pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self.nbytes = 0

    def add(self, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for name, pair in values.items():
            self.pairs.setdefault(name, []).append(pair)
            self.nbytes += pair[0].nbytes + pair[1].nbytes

    def flush(self) -> None:
        for name, pairs in self.pairs.items():
            try:
                joined = [(np.concatenate([g for g, _ in pairs]), np.concatenate([r for _, r in pairs]))]
            except ValueError:  # sizes that differ beyond the batch axis: one update each
                joined = pairs
            for got, ref in joined:
                self.accumulators[name].update(got, ref)
        self.pairs, self.nbytes = {}, 0


def certify(target: Target, legal: Graph, batches: list[Batch], tol: Tolerances, engine: str, work: Path,
            progress: bool = False) -> KernelCertificate:
    """Lower the cut plan of ``legal`` on ``target`` and compare every cut tensor and output with the reference.

    With ``progress``, a bar "kernel certificate (BACKEND)" counts the samples certified (``mpcompile.progress``;
    inside conformance's own bar it is a line of that display).
    """
    from mpcompile.progress import progress_bar

    start = time.perf_counter()
    total = min(KERNEL_SAMPLES, sum(len(next(iter(b.values()))) for b in batches))
    with progress_bar(progress, total=total, description=f"kernel certificate ({target.name})") as bar:
        cert = _certify(target, legal, batches, tol, engine, work, bar)
    cert.seconds = time.perf_counter() - start
    return cert


def _certify(target: Target, legal: Graph, batches: list[Batch], tol: Tolerances, engine: str, work: Path,
             bar: Any) -> KernelCertificate:
    cert = KernelCertificate()
    reference = ReferenceRunner(legal, engine=engine)
    cut_names = _cut_tensors(legal)
    inter = tuple(name for name in cut_names if name not in legal.outputs)
    head = batches[0]
    try:
        # The reference of the first sample, before lowering: the shapes of the tensors the plan has none for.
        first_ref = reference.run({k: v[:1] for k, v in head.items()}, inter)
        unknown = [n for n in cut_names if legal.tensors[n].shape is None]
        two = None
        if unknown and len(next(iter(head.values()))) >= 2:  # which of their dims follow the batch
            two = reference.run({k: v[:2] for k, v in head.items()}, tuple(n for n in unknown if n in inter))
    except MpcompileError as exc:
        cert.error = f"the plan cut at its quantized tensors did not run: {str(exc).splitlines()[0]}"
        return cert
    cut, given = cut_plan(legal, observed_shapes(legal, first_ref, two))
    compared = [*given, *(o for o in legal.outputs if o not in given)]
    work.mkdir(parents=True, exist_ok=True)
    try:
        artifact = target.backend.lower(cut, work, stem="kernels", options=target.options)
        runner = open_runner(target, artifact)
    except MpcompileError as exc:
        cert.error = f"the backend cannot lower the plan cut at its quantized tensors: {str(exc).splitlines()[0]}"
        return cert
    except Exception as exc:  # noqa: BLE001 - the plugin's fault; the end-to-end verdict stands without it
        cert.error = internal_error(target.name, "lowering the plan cut at its quantized tensors", exc)
        return cert
    outputs = output_accumulators(legal, tol)
    accumulators = {**layer_accumulators(legal, [n for n in compared if n not in outputs], tol), **outputs}
    pending = _Pending(accumulators)
    size = 1  # samples per run: one first, then as many as the first run's intermediates say fit the budget
    try:
        for whole in batches:
            count, first = len(next(iter(whole.values()))), 0
            while first < count and cert.samples < KERNEL_SAMPLES:
                stop = min(count, first + size, first + KERNEL_SAMPLES - cert.samples)
                batch = {k: v[first:stop] for k, v in whole.items()}
                ref = first_ref if first_ref is not None else reference.run(batch, inter)
                first_ref = None
                feed = {**_on_grid(legal, batch), **{g: ref[t] for t, g in given.items()}}
                got = runner.run({k: feed[k] for k in cut.inputs})
                pending.add({name: (np.asarray(got[name]), np.asarray(ref[name])) for name in compared if name in got})
                if pending.nbytes > MEMORY_BUDGET_BYTES // 3:
                    pending.flush()
                per_sample = sum(v.nbytes for v in ref.values()) // (stop - first)
                size = max(1, MEMORY_BUDGET_BYTES // (3 * max(per_sample, 1)))  # reference, feed and backend copies
                cert.samples += stop - first
                bar.advance(stop - first)
                first = stop
        pending.flush()
    except MpcompileError as exc:
        cert.error = f"the plan cut at its quantized tensors did not run: {str(exc).splitlines()[0]}"
        return cert
    except Exception as exc:  # noqa: BLE001 - the plugin's fault, as above
        cert.error = internal_error(target.name, "running the plan cut at its quantized tensors", exc)
        return cert
    finally:
        runner.close()
    cert.tensors = {name: accumulators[name] for name in compared}
    return cert

"""One backend of a run: its validated options, and the error boundary around every call into it.

A multi-backend run lowers each target on its own. Whatever one backend cannot do (an op it
lacks, an option it rejects, a bug in a plugin) becomes that target's ``LowerResult.error``,
with the reason; the other targets are still lowered, conformed and listed in the manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import time
import traceback
from pathlib import Path

from mpcompile.backends.base import Artifact, Backend, Runner
from mpcompile.backends.capabilities import Deviation
from mpcompile.backends.options import BackendOptions
from mpcompile.errors import BackendError, MpcompileError, UnsupportedOperatorError
from mpcompile.ir import ops
from mpcompile.ir.cost import PrecisionSummary, node_cost
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision
from mpcompile.passes.freeze_batch import FreezeBatch, batch_to_freeze, runtime_shape_nodes

#: an integer artifact with less than this share of its MACs in integers is flagged as possibly no faster than FP32
FLOAT_DOMINATED_BELOW = 0.5


@dataclasses.dataclass(frozen=True)
class Target:
    """One backend a run lowers to, with its validated options."""

    backend: Backend
    options: BackendOptions

    @property
    def name(self) -> str:
        return self.backend.name


@dataclasses.dataclass
class LowerResult:
    """What lowering one target gave: an artifact for the legalized plan, or the reason there is none."""

    backend: str
    artifact: Artifact | None
    plan: Graph | None  # the legalized plan the artifact implements
    deviations: list[Deviation]
    seconds: float
    error: str | None = None
    #: how much of the legalized plan runs in each precision, and how much of the plan did before
    precision: PrecisionSummary | None = None
    planned: PrecisionSummary | None = None
    #: the artifact was handed in (``conform --artifact``), not lowered here: what lowers the plan now may differ
    given: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def collapsed(self) -> bool:
        """Legalization took most of the plan's integer work away (the artifact is mostly float)."""
        if self.precision is None or self.planned is None:
            return False
        before, after = self.planned.integer_mac_share(), self.precision.integer_mac_share()
        if not sum(self.planned.macs.values()):
            before, after = self.planned.integer_node_share(), self.precision.integer_node_share()
        return before > 0 and after < 0.5 * before

    def precision_note(self) -> str:
        """``nodes: 12 INT8 (98.0 % of MACs), 2 FP32`` plus a warning when legalization emptied the plan."""
        if self.precision is None:
            return ""
        note = self.precision.format()
        if self.collapsed:
            note += (f"; ! legalization moved most of the plan to float (integer MACs {self.planned.integer_mac_share():.0%}"
                     f" planned, {self.precision.integer_mac_share():.0%} here): see the deviations")
        return note

    def speed_warning(self) -> str:
        """Why this artifact may be no faster than FP32, said at compile time (``--bench`` measures it), or "".

        The backend's own estimate (``Artifact.metadata["speed_warning"]``, from what its runtime made of the
        artifact) comes first. Any backend's integer artifact is also flagged when most of its arithmetic runs
        in float: the quantize/dequantize passes around those float nodes cost time, and the little integer work
        left cannot pay for them (measured: silero_vad on TFLite, 7 % of MACs in int8, 0.93x FP32)."""
        if self.artifact is None:
            return ""
        own = str(self.artifact.metadata.get("speed_warning") or "")
        if own or self.plan is None or self.precision is None or not self.plan.quantized_tensors():
            return own
        share = self.precision.integer_mac_share()
        if not sum(self.precision.macs.values()) or share >= FLOAT_DOMINATED_BELOW:
            return ""
        return (f"only {share:.0%} of the MACs run in integers here (in float: {_float_mac_ops(self.plan)}): the "
                f"quantize/dequantize passes around the float nodes can cost more than the integer work saves; "
                f"measure with `mpcompile bench`, and compile with --precision fp32 where it is slower")



def _float_mac_ops(plan: Graph) -> str:
    """``LSTM ×2, MatMul ×1``: the float nodes that carry MACs, by their share of them."""
    macs: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    for node in plan.nodes:
        cost = 0 if (node.precision or Precision.FP32).is_integer else node_cost(plan, node)[0]
        if cost:
            macs[node.op_type] += cost
            count[node.op_type] += 1
    return ", ".join(f"{op} ×{count[op]}" for op, _ in macs.most_common(4)) or "no weighted op"


def strict_plugins() -> bool:
    """``MPCOMPILE_STRICT_PLUGINS=1``: a plugin's internal errors propagate (for plugin authors)."""
    return os.environ.get("MPCOMPILE_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def unsupported_ops(plan: Graph, backend: Backend) -> str | None:
    """Why ``backend`` cannot run ``plan`` at all (an op it has in no precision), or None.

    Shape computations that the backend's frozen batch will fold (``shaped_for``) are not counted: whether
    they do is known only once folded, and ``lower_target`` checks the frozen copy again."""
    table = backend.supported_ops()
    if table is None:
        return None
    folds = backend.capabilities.static_shapes and bool(batch_to_freeze(plan))
    missing = sorted({(n.op_type, n.name) for n in plan.nodes
                      if n.op_type not in table and not (folds and n.op_type in ops.RUNTIME_SHAPE_OPS)})
    if not missing:
        return None
    listing = ", ".join(f"{op} (node {name})" for op, name in missing[:6])
    more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
    if ops.RUNTIME_SHAPE_OPS & {op for op, _ in missing}:
        hint = "the model computes shapes at run time: freeze its inputs with --input-shape NAME=DIMS"
    else:
        hint = "lower it for another backend, or keep those nodes out of the model"
    return f"backend {backend.name!r} cannot run {len(missing)} node(s) of model {plan.name!r}: {listing}{more}; {hint}"


def internal_error(backend: str, what: str, exc: BaseException) -> str:
    detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"backend {backend!r} failed while {what} (a bug in the backend, please report it): {detail}"


def shaped_for(target: Target, plan: Graph) -> tuple[Graph, list[Deviation]]:
    """``plan`` with the input shapes ``target`` needs: for a backend with static shapes, a copy whose dynamic batch is
    frozen to 1 when the plan computes shapes at run time (``passes.freeze_batch``), with the one deviation that says so;
    for any other backend (and any plan without shape computations), ``plan`` itself."""
    if not target.backend.capabilities.static_shapes:
        return plan, []
    computing, inputs = runtime_shape_nodes(plan), list(batch_to_freeze(plan))
    result = FreezeBatch()(plan)
    if not result.modified:
        return plan, []
    reason = (f"{target.name} computes no shapes at run time and the plan does ({len(computing)} node(s) such as "
              f"{computing[0]!r}); the plan and the other backends keep the batch dynamic; --input-shape chooses another")
    return result.graph, [Deviation(", ".join(inputs), "shapes", f"{' '.join(result.notes)} (batch frozen to 1)", reason)]


def lower_target(target: Target, plan: Graph, out_dir: Path, stem: str) -> LowerResult:
    """Legalize ``plan`` for ``target`` and lower it into ``out_dir/<backend>/``; never raises for the backend's faults.

    ``out_dir`` is a staging folder mpcompile owns: a failed target's half-written folder is removed.
    """
    name = target.name
    started = time.perf_counter()
    backend_dir = Path(out_dir) / name
    legal: Graph | None = None
    deviations: list[Deviation] = []
    try:
        shaped, deviations = shaped_for(target, plan)
        refusal = unsupported_ops(shaped, target.backend)
        if refusal:
            raise UnsupportedOperatorError(refusal)
        legal, legalized = target.backend.legalize(shaped, target.options)
        deviations = deviations + legalized
        backend_dir.mkdir(parents=True, exist_ok=True)
        artifact = target.backend.lower(legal, backend_dir, stem=stem, options=target.options)
        _check_artifact(name, artifact, backend_dir)
    except Exception as exc:  # the boundary: one backend's failure never stops the others
        if not isinstance(exc, MpcompileError) and strict_plugins():
            raise
        shutil.rmtree(backend_dir, ignore_errors=True)
        error = str(exc) if isinstance(exc, MpcompileError) else internal_error(name, "lowering", exc)
        return LowerResult(name, None, legal, deviations, time.perf_counter() - started, error)
    artifact.deviations = list(deviations) + [d for d in artifact.deviations if d not in deviations]
    return LowerResult(name, artifact, legal, artifact.deviations, time.perf_counter() - started,
                       precision=PrecisionSummary.of(legal), planned=PrecisionSummary.of(plan))


def _check_artifact(name: str, artifact: object, backend_dir: Path) -> None:
    if not isinstance(artifact, Artifact):
        raise BackendError(f"backend {name!r} returned {type(artifact).__name__} from lower(), not an Artifact")
    root = backend_dir.resolve()
    for path in [artifact.path, *artifact.files]:
        resolved = Path(path).resolve()
        if root != resolved and root not in resolved.parents:
            raise BackendError(f"backend {name!r} wrote {path} outside its output folder {backend_dir}")
        if not resolved.exists():
            raise BackendError(f"backend {name!r} reported artifact file {path}, which it did not write")


def open_runner(target: Target, artifact: Artifact) -> Runner:
    """``target``'s runner on ``artifact``; a plugin's internal error becomes a ``BackendError`` naming it."""
    try:
        runner = target.backend.runner(artifact, target.options)
    except MpcompileError:
        raise
    except Exception as exc:
        if strict_plugins():
            raise
        raise BackendError(internal_error(target.name, "opening its runner", exc)) from None
    if not isinstance(runner, Runner):
        raise BackendError(f"backend {target.name!r} returned {type(runner).__name__} from runner(), not a Runner")
    return runner

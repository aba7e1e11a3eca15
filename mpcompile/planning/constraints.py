"""What the backends a plan will be lowered to can run, as the planner needs it.

A plan searched for the asymmetric reference and then legalized for a symmetric-only backend
is not the plan that was measured (a CTC recogniser: 0.995 exact match planned, 0.005 once
legalized for TensorRT). So the planner plans under the targets' constraints, read from their
``Capabilities`` (never from their names), and measures each candidate *after* each target's
own ``Backend.legalize``: the legalized plan is the plan that was measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from mpcompile.backends.targets import Target
from mpcompile.ir.graph import Graph
from mpcompile.ir.types import Precision
from mpcompile.planning.config import PlanConfig


@dataclasses.dataclass(frozen=True)
class TargetConstraints:
    """The intersection of what every target runs; no targets means backend-neutral (the fake-quant reference)."""

    targets: tuple[Target, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.targets)

    @property
    def symmetric_activations(self) -> bool:
        return any(t.backend.capabilities.symmetric_activations_only for t in self.targets)

    @property
    def promotion(self) -> Precision:
        """The float precision a promoted layer gets: FP16 only where every target runs FP16, else FP32.

        Without targets the deployed precision is unknown, so promotions are FP32: the one every backend runs.
        """
        if self.targets and all(Precision.FP16 in t.backend.capabilities.float_precisions for t in self.targets):
            return Precision.FP16
        return Precision.FP32

    def plan_config(self, config: PlanConfig) -> PlanConfig:
        """``config`` as the targets can run it: symmetric activations where any target demands them."""
        if self.symmetric_activations and not config.symmetric_activations:
            return dataclasses.replace(config, symmetric_activations=True)
        return config

    def legalized(self, plan: Graph) -> list[tuple[str, Graph]]:
        """(target names, legalized plan) per distinct legalization; the plan itself without targets."""
        if not self.targets:
            return [("reference", plan)]
        if len(self.targets) == 1:
            target = self.targets[0]
            return [(target.name, target.backend.legalize(plan, target.options)[0])]
        from mpcompile.ir import serde

        seen: dict[str, tuple[list[str], Graph]] = {}
        for target in self.targets:
            legal, _ = target.backend.legalize(plan, target.options)
            key = serde.plan_hash(legal)
            seen.setdefault(key, ([], legal))[0].append(target.name)
        return [("+".join(names), legal) for names, legal in seen.values()]

    def describe(self) -> str:
        if not self.targets:
            return "backend-neutral (no target given: promotions in FP32)"
        flags = ["symmetric activations" if self.symmetric_activations else "asymmetric activations",
                 f"promotions in {self.promotion.value.upper()}"]
        return f"for {', '.join(self.names)}: " + ", ".join(flags)


def constraints_of(targets: Sequence[Target] | None) -> TargetConstraints:
    return TargetConstraints(tuple(targets or ()))

"""Accuracy recovery that changes only weights, biases and scales.

Every transform here leaves the graph's structure (apart from folding constant scalings into
the layer next to them) and the numerics contract alone, so every backend inherits the result
and conformance still holds in LSB. Two kinds:

- graph transforms run on the FP32 graph before calibration and leave its FP32 function
  unchanged (``fold_scalars``, ``equalize``); calibration then sees the transformed graph;
- plan transforms run on the annotated plan and change weight values (onto the plan's own
  weight grid) or bias values (``bias_correction``, ``rounding``); each is measured on the
  calibration data (output SQNR against FP32 before and after) and undone when it does not help.

``run.py`` drives them; each transform is one module.
"""

from __future__ import annotations

from mpcompile.recovery.run import (
    GRAPH_TRANSFORMS,
    PLAN_TRANSFORMS,
    RECOVERIES,
    RecoveryStep,
    parse_recover,
    prepare_graph,
    refine_plan,
)

__all__ = ["GRAPH_TRANSFORMS", "PLAN_TRANSFORMS", "RECOVERIES", "RecoveryStep", "parse_recover", "prepare_graph", "refine_plan"]

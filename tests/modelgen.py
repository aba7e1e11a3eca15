"""Test-side access to the generated models (they live in the package so third parties can use them)."""

from mpcompile.testing.cases import CASES, depthwise_cnn, random_inputs, residual_mlp, small_cnn  # noqa: F401

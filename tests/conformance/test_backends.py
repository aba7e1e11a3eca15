"""mpcompile's own run of the conformance suite: every installed backend × case × precision mode."""

from mpcompile.testing.testsuite import model_case, test_backend_conforms  # noqa: F401

"""Fails at import, like a plugin whose dependency is missing or whose code has a bug."""

import mpcompile_dependency_that_does_not_exist  # noqa: F401

backend = None

"""pytest plugin (entry point ``pytest11``): run mpcompile's conformance suite against any backend.

Adds ``--mpcompile-backend NAME`` (repeatable). Without it, the suite runs on every
available backend. Backends that are installed but unavailable are reported as skipped
with their reason.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mpcompile")
    group.addoption(
        "--mpcompile-backend",
        action="append",
        default=[],
        help="backend(s) to run mpcompile's conformance suite against (default: every available backend)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mpcompile_backend_name" not in metafunc.fixturenames:
        return
    from mpcompile.backends.registry import discover

    entries = {e.name: e for e in discover()}
    chosen = metafunc.config.getoption("mpcompile_backend") or sorted(entries)
    params = []
    for name in chosen:
        entry = entries.get(name)
        if entry is None:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=f"backend {name!r} is not installed")))
        elif not entry.available:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=f"backend {name!r} unavailable: {entry.reason}")))
        else:
            params.append(name)
    metafunc.parametrize("mpcompile_backend_name", params)

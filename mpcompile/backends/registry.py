"""Backend discovery through the ``mpcompile.backends`` entry-point group.

Built-in backends are registered exactly like third-party ones. A plugin that fails to
import, or whose library is missing, becomes an *unavailable* entry carrying the reason;
it never breaks the CLI. ``MPCOMPILE_STRICT_PLUGINS=1`` turns load failures into errors,
which is what a plugin author wants while developing.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from importlib.metadata import EntryPoint, entry_points

from mpcompile.backends.base import Backend
from mpcompile.errors import BackendError, BackendUnavailableError, MpcompileError

GROUP = "mpcompile.backends"


@dataclasses.dataclass
class BackendEntry:
    name: str
    backend: Backend | None
    available: bool
    reason: str = ""
    install_hint: str = ""
    source: str = ""

    def to_dict(self) -> dict:
        data = {
            "name": self.name,
            "available": self.available,
            "reason": self.reason,
            "install_hint": self.install_hint,
            "source": self.source,
            "version": None,
            "capabilities": None,
        }
        if self.backend is not None:
            data["description"] = self.backend.description
            if self.available:
                data["version"] = self.backend.version()
            data["capabilities"] = self.backend.capabilities.summary()
        return data


def _strict() -> bool:
    return os.environ.get("MPCOMPILE_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def _load(ep: EntryPoint) -> BackendEntry:
    source = f"{ep.value}" + (f" ({ep.dist.name} {ep.dist.version})" if getattr(ep, "dist", None) else "")
    try:
        obj = ep.load()
        backend = obj() if isinstance(obj, type) else obj
        if not isinstance(backend, Backend):
            raise TypeError(f"entry point {ep.name!r} gave {type(backend).__name__}, not an mpcompile Backend")
    except Exception as exc:
        if _strict():
            raise
        reason = f"plugin failed to load: {type(exc).__name__}: {exc}"
        return BackendEntry(ep.name, None, False, reason, "reinstall or fix the plugin package", source)
    try:
        backend.check_available()
    except BackendUnavailableError as exc:  # a missing optional library is not a broken plugin, even in strict mode
        return BackendEntry(ep.name, backend, False, str(exc), backend.install_hint, source)
    except Exception as exc:
        if _strict():
            raise
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return BackendEntry(ep.name, backend, False, f"availability check failed: {detail}", backend.install_hint, source)
    return BackendEntry(ep.name, backend, True, "", backend.install_hint, source)


def discover() -> list[BackendEntry]:
    """Every registered backend, sorted by name, each either available or with the reason it is not."""
    seen: dict[str, BackendEntry] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in seen:
            continue  # the same distribution can be visible twice (editable + site); the first wins
        seen[ep.name] = _load(ep)
    return [seen[k] for k in sorted(seen)]


def get_backend(name: str, **lower_options: object) -> Backend:
    """The named backend; an unavailable one only if it can lower with ``lower_options`` regardless."""
    entries = {e.name: e for e in discover()}
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise BackendError(f"unknown backend {name!r}; installed backends: {known} (see `mpcompile backends`)")
    entry = entries[name]
    if not entry.available and entry.backend is not None and entry.backend.can_lower_without_runtime(**lower_options):
        return entry.backend
    if not entry.available or entry.backend is None:
        hint = f"; {entry.install_hint}" if entry.install_hint else ""
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {entry.reason}{hint}")
    return entry.backend


def available_backends() -> list[str]:
    return [e.name for e in discover() if e.available]


def resolve_backends(names: list[str] | tuple[str, ...] | None, **lower_options: object) -> list[Backend]:
    """``None``/empty = every available backend; ``all`` likewise; otherwise each name must be available."""
    if not names or list(names) == ["all"]:
        backends = [e.backend for e in discover() if e.available and e.backend is not None]
        if not backends:
            raise MpcompileError("no backend is available; run `mpcompile backends` to see why")
        return backends
    result = []
    for name in dict.fromkeys(names):
        result.append(get_backend(name, **lower_options))
    return result

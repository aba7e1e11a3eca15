"""Backend discovery through the ``mpcompile.backends`` entry-point group.

Built-in backends are registered exactly like third-party ones. A plugin that fails to
import, or whose library is missing, becomes an *unavailable* entry carrying the reason;
it never breaks the CLI. ``MPCOMPILE_STRICT_PLUGINS=1`` turns load failures into errors,
which is what a plugin author wants while developing.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from mpcompile.backends.base import Backend
from mpcompile.backends.capabilities import Capabilities
from mpcompile.backends.options import BackendOptionError, BackendOptions, describe
from mpcompile.backends.targets import Target, strict_plugins
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

    def to_dict(self, options: bool = False) -> dict:
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
            if options:
                data["options"] = describe(self.backend.Options)
        return data


def _check_surface(backend: Backend) -> None:
    """What every later call relies on, asked once here so a broken plugin is one 'unavailable' line."""
    if not isinstance(backend.capabilities, Capabilities):
        raise TypeError(f"its capabilities are {type(backend.capabilities).__name__}, not Capabilities")
    if not (isinstance(backend.Options, type) and issubclass(backend.Options, BackendOptions)):
        raise TypeError(f"its Options is {backend.Options!r}, not a BackendOptions subclass")


def _load(ep: EntryPoint) -> BackendEntry:
    source = f"{ep.value}" + (f" ({ep.dist.name} {ep.dist.version})" if getattr(ep, "dist", None) else "")
    try:
        obj = ep.load()
        backend = obj() if isinstance(obj, type) else obj
        if not isinstance(backend, Backend):
            raise TypeError(f"entry point {ep.name!r} gave {type(backend).__name__}, not an mpcompile Backend")
        _check_surface(backend)
    except Exception as exc:
        if strict_plugins():
            raise
        reason = f"plugin failed to load: {type(exc).__name__}: {exc}"
        return BackendEntry(ep.name, None, False, reason, "reinstall or fix the plugin package", source)
    try:
        backend.check_available()
    except BackendUnavailableError as exc:  # a missing optional library is not a broken plugin, even in strict mode
        return BackendEntry(ep.name, backend, False, str(exc), backend.install_hint, source)
    except Exception as exc:
        if strict_plugins():
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


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A backend a run without ``--backend`` leaves out, and why."""

    name: str
    reason: str


def _entries() -> dict[str, BackendEntry]:
    return {e.name: e for e in discover()}


def _unknown(name: str, entries: Mapping[str, BackendEntry]) -> BackendError:
    known = ", ".join(sorted(entries)) or "none"
    return BackendError(f"unknown backend {name!r}; installed backends: {known} (see `mpcompile backends`)")


def _target(entry: BackendEntry, values: Mapping[str, Any] | BackendOptions | None) -> Target:
    """The entry as a target; an unavailable backend only if its options let it lower regardless."""
    if entry.backend is None:
        raise BackendUnavailableError(f"backend {entry.name!r} is unavailable: {entry.reason}")
    options = entry.backend.options(values)
    if entry.available or entry.backend.can_lower_without_runtime(options):
        return Target(entry.backend, options)
    hint = f"; {entry.install_hint}" if entry.install_hint and entry.install_hint not in entry.reason else ""
    raise BackendUnavailableError(f"backend {entry.name!r} is unavailable: {entry.reason}{hint}")


def get_backend(name: str) -> Backend:
    """The named, available backend."""
    return resolve_targets([name])[0][0].backend


def available_backends() -> list[str]:
    return [e.name for e in discover() if e.available]


def resolve_targets(
    names: Sequence[str] | None, options: Mapping[str, Mapping[str, Any] | BackendOptions] | None = None
) -> tuple[list[Target], list[Skipped]]:
    """The backends to lower to, each with validated options, and those left out (only without ``names``).

    ``None``/empty/``["all"]`` = every available backend, plus an unavailable one whose
    options let it lower without its runtime (``tensorrt.onnx_only``). Options for a backend
    that is not installed, or not among ``names``, are an error rather than silently unused.
    """
    entries = _entries()
    options = dict(options or {})
    for name in options:
        if name not in entries:
            raise _unknown(name, entries)
    if names and list(names) != ["all"]:
        for name in names:
            if name not in entries:
                raise _unknown(name, entries)
        stray = sorted(set(options) - set(names))
        if stray:
            raise BackendOptionError(
                f"options given for backend(s) {', '.join(map(repr, stray))}, which this run does not target "
                f"(--backend {' --backend '.join(names)})"
            )
        return [_target(entries[name], options.get(name)) for name in dict.fromkeys(names)], []
    targets, skipped = [], []
    for name, entry in sorted(entries.items()):
        try:
            targets.append(_target(entry, options.get(name)))
        except BackendOptionError:
            raise
        except BackendError as exc:
            if name in options:
                raise
            skipped.append(Skipped(name, str(exc)))
    if not targets:
        raise MpcompileError("no backend is available; run `mpcompile backends` to see why")
    return targets, skipped

"""Typed, per-backend options: one frozen type per backend, validated before any work starts.

A backend declares its options as a subclass of ``BackendOptions`` (a frozen pydantic model
that rejects unknown keys)::

    class TFLiteOptions(BackendOptions):
        io: Literal["float", "int8"] = Field("float", description="type of the model's inputs and outputs")

and sets ``Backend.Options = TFLiteOptions``. Options reach a backend from the Python API
(``backend_options={"tflite": {"io": "int8"}}``) or the CLI (``--backend-option
tflite.io=int8``); both go through ``parse_options``, so an unknown key or a wrong type is
the same ``BackendOptionError`` naming the backend, the key and the valid keys.

pydantic does the type coercion (``"true"``/``"1"``/``"yes"`` → ``True``, ``"4"`` → ``4``,
``Literal`` choices) and gives the JSON schema ``mpcompile backends NAME --json`` prints.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pydantic

from mpcompile.errors import BackendError

if TYPE_CHECKING:
    from mpcompile.backends.base import Backend


class BackendOptionError(BackendError):
    """An option a backend does not have, or a value of the wrong type."""


class BackendOptions(pydantic.BaseModel):
    """Base of every backend's options type: frozen, unknown keys refused, defaults documented."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def option_names(options_type: type[BackendOptions]) -> list[str]:
    return sorted(options_type.model_fields)


def _valid_keys(backend: Backend) -> str:
    names = option_names(backend.Options)
    return ", ".join(names) if names else "none (this backend takes no options)"


def parse_options(backend: Backend, values: Mapping[str, Any] | BackendOptions | None) -> BackendOptions:
    """``values`` as ``backend.Options``; CLI strings are coerced to the declared types."""
    if isinstance(values, backend.Options):
        return values
    if isinstance(values, BackendOptions):
        raise BackendOptionError(
            f"backend {backend.name!r} takes {backend.Options.__name__}, not {type(values).__name__}"
        )
    values = dict(values or {})
    unknown = sorted(set(values) - set(backend.Options.model_fields))
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        raise BackendOptionError(
            f"backend {backend.name!r} has no option {keys}; valid options: {_valid_keys(backend)} "
            f"(see `mpcompile backends {backend.name}`)"
        )
    try:
        return backend.Options(**values)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first.get("loc", ())) or "?"
        given = values.get(str(first["loc"][0])) if first.get("loc") else None
        raise BackendOptionError(
            f"backend {backend.name!r} option {key}={given!r}: {first['msg']} "
            f"(valid options: {_valid_keys(backend)}; see `mpcompile backends {backend.name}`)"
        ) from None


def parse_assignments(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["tflite.io=int8", "tensorrt.onnx_only=true"]`` → ``{"tflite": {"io": "int8"}, ...}``."""
    result: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        backend, dot, key = target.partition(".")
        if not sep or not dot or not backend or not key:
            raise BackendOptionError(
                f"--backend-option {item!r} must look like BACKEND.KEY=VALUE, e.g. tflite.io=int8 "
                f"(`mpcompile backends BACKEND` lists a backend's options)"
            )
        result.setdefault(backend, {})[key] = value
    return result


def describe(options_type: type[BackendOptions]) -> list[dict[str, Any]]:
    """One row per option: name, type, default and help, for ``mpcompile backends NAME``."""
    rows = []
    for name, field in sorted(options_type.model_fields.items()):
        rows.append({
            "name": name,
            "type": _type_name(field.annotation),
            "default": _jsonable(field.default),
            "help": field.description or "",
        })
    return rows


def _type_name(annotation: Any) -> str:
    """``Literal["a", "b"] | None`` → ``'a' | 'b' | None``: what a user may write, not Python's repr."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value

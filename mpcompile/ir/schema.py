"""Schemas of the files mpcompile reads from users: a plan's metadata and annotations, an
overrides file, a calibration cache. Each is a strict pydantic model, checked when the file
is loaded and before any work; every violation becomes one line that names the file, the
tensor (or node) and the fix::

    plan.onnx: tensor 'conv1.weight': per-channel scale has 3 entries but dimension 0 has size 16 (...)

Bounds, and why they are what they are:

* qtype one of int8, uint8, int16, int32, int64 (``QType``); int32/int64 only on constants
  (biases); a precision one of int8, int16, fp16, bf16, fp32 (``Precision``).
* scales: float32, finite and > 0 *as float32* (``1e-50`` rounds to 0, ``1e39`` to inf).
* zero-points: integers (a float zero-point is refused, never truncated), of the qtype's
  own element type in a plan, within ``[qmin, qmax]`` of the qtype, 0 when symmetric.
* per-channel: ``axis`` an integer in ``[-rank, rank)``, scale and zero-point 1-d of length
  ``shape[axis]``; per-tensor: scalars.
* ranges (overrides): finite, ``lo <= hi``, within float32 (``±3.4e38``): no float32 scale
  covers more.
* histograms (calibration caches): ``8 <= bins <= HISTOGRAM_MAX_BINS`` (2**16: 512 KiB of
  counts, 32x the default; entropy's ``bins`` counts |x| bins and keeps twice as many, so
  at most 2**15 there); the bin width ``2**exponent`` with ``HISTOGRAM_MIN_EXPONENT <=
  exponent <= HISTOGRAM_MAX_EXPONENT``: the top is float32's (2**128 exceeds every float32,
  so wider bins never arise from float32 activations), the bottom is the histogram's own
  floor (an all-zero tensor gets -1000; subnormal activations reach about -190); counts
  non-negative and summing to the recorded count; min/max finite and within float32.
  ``StreamingHistogram.from_dict`` then checks the grid invariants (the window starts at
  the minimum's bin and covers the maximum).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from mpcompile.ir.types import Precision, QType

__all__ = [
    "CALIBRATION_CACHE_FORMAT", "HISTOGRAM_MAX_BINS", "HISTOGRAM_MAX_EXPONENT", "HISTOGRAM_MIN_BINS",
    "HISTOGRAM_MIN_EXPONENT", "Annotation", "CalibrationCache", "OverridesFile", "SchemaError", "TensorPin",
    "check", "float32_scale", "kind_of", "one_line",
]

F32_MAX = float(np.finfo(np.float32).max)
HISTOGRAM_MIN_BINS = 8
#: Most bins a streaming histogram (and a cache entry) may have: 2**16 int64 counts are 512 KiB.
HISTOGRAM_MAX_BINS = 1 << 16
#: Bin widths are ``2**exponent``: never below the histogram's own floor, never above float32's range.
HISTOGRAM_MIN_EXPONENT = -1000
HISTOGRAM_MAX_EXPONENT = 128
CALIBRATION_CACHE_FORMAT = "mpcompile-calibration-cache/1"
CALIBRATION_METHODS = ("entropy", "minmax", "mse", "percentile")


class SchemaError(ValueError):
    """A violation found by a validator: ``what`` is wrong, ``fix`` (if given) says how to mend it;
    without one, the file's own fix is used (a plan: re-create it)."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.fix = fix


# =========================================================================== one line per error
def _brief(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return f"the string {_brief(value)}"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"the number {_brief(value)}"
    return type(value).__name__


def _what(err: Mapping[str, Any], field: str) -> str:
    """Pydantic's error, in mpcompile's words (without the fix)."""
    kind, given = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    subject = f"{field} " if field else ""
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        # A SchemaError names what it checks; any other ValueError gets the field in front.
        return str(ctx["error"]) if isinstance(ctx["error"], SchemaError) else f"{subject}{ctx['error']}"
    if kind == "missing":
        return f"{field or 'a required key'} is missing"
    if kind == "extra_forbidden":
        parent, _, key = field.rpartition(".")
        return (f"{parent}: " if parent else "") + f"unknown key {key!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"{subject}must be an object, got {kind_of(given)}"
    if kind in ("list_type", "tuple_type"):
        return f"{subject}must be a list, got {kind_of(given)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{subject}must be an integer, got {kind_of(given)}"
    if kind in ("float_type", "float_parsing"):
        return f"{subject}must be a number, got {kind_of(given)}"
    if kind == "finite_number":
        return f"{subject}must be finite, got {_brief(given)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{subject}must be true or false, got {kind_of(given)}"
    if kind in ("string_type", "str_type"):
        return f"{subject}must be a string, got {kind_of(given)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": "> ", "greater_than_equal": ">= ", "less_than": "< ", "less_than_equal": "<= "}[kind]
        bound = next(iter(ctx.values()), "?")
        bound = f"{bound:.5g}" if isinstance(bound, float) else bound
        return f"{subject}must be {op}{bound}, got {_brief(given)}"
    if kind in ("too_short", "too_long"):
        expected = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{subject}needs {expected} entries, got {ctx.get('actual_length', '?')}"
    if kind == "literal_error":
        return f"{subject}must be {ctx.get('expected', '?')}, got {_brief(given)}"
    if kind == "union_tag_invalid":
        return f"{subject}unknown {ctx.get('discriminator', 'kind').strip(chr(39))} {ctx.get('tag')!r}; valid: {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{subject}needs a {ctx.get('discriminator', 'kind').strip(chr(39))!s} key"
    msg = str(err.get("msg", kind))
    return f"{subject}{msg[:1].lower() + msg[1:]}, got {_brief(given)}"


#: keys of a file whose entries are named things: the error names the entry ("tensor 'x'").
_SUBJECTS = {"tensors": "tensor", "nodes": "node pattern", "op_types": "op type", "aliases": "alias"}


def _field(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += (" " if text else "") + "name"
        else:
            text += ("." if text else "") + str(part)
    return text


Fix = str | Mapping[str, str]


def one_line(exc: ValidationError, *, root: str | None = None, fix: Fix, skip: frozenset[str] = frozenset()) -> str:
    """The first error of ``exc`` as ``<subject>: <what> (<fix>)``.

    ``root`` names the entries of a top-level mapping ("tensor" for a plan's tensor table);
    ``skip`` drops location parts that are only pydantic's bookkeeping (union tags); ``fix`` is
    the file's fix, or one per top-level key (``""`` for the rest).
    """
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    section = str(loc[0]) if loc else ""
    subject = ""
    if root is not None and loc:
        subject = f"{root} {str(loc.pop(0))!r}"
    elif len(loc) >= 2 and loc[0] in _SUBJECTS:
        subject = f"{_SUBJECTS[loc[0]]} {str(loc[1])!r}"
        loc = loc[2:]
    if loc and str(loc[0]) in skip:  # the union tag right after the entry's name
        loc = loc[1:]
    field = _field(loc)
    if len(field) > 60:  # a path into deeply nested data: its start and its end say where
        field = f"{field[:30]}…{field[-25:]}"
    what = _what(err, field)
    ctx_error = (err.get("ctx") or {}).get("error")
    own = ctx_error.fix if isinstance(ctx_error, SchemaError) else None
    if own is None:
        own = fix if isinstance(fix, str) else fix.get(section, fix.get("", ""))
    return (f"{subject}: " if subject else "") + f"{what} ({own})"


def check(adapter: TypeAdapter | type[BaseModel], data: Any, source: str, *, root: str | None = None, fix: Fix,
          skip: frozenset[str] = frozenset(), error: type[Exception] = ValueError, context: Any = None) -> Any:
    """``data`` validated by ``adapter``, or ``error`` raised with one line: ``SOURCE: <subject>: <what> (<fix>)``."""
    try:
        if isinstance(adapter, TypeAdapter):
            return adapter.validate_python(data, context=context)
        return adapter.model_validate(data, context=context)
    except ValidationError as exc:
        raise error(f"{source}: {one_line(exc, root=root, fix=fix, skip=skip)}") from None


# =========================================================================== shared field types
def _qtype(value: Any) -> QType:
    if isinstance(value, QType):
        return value
    valid = ", ".join(q.value for q in QType)
    if not isinstance(value, str):
        raise SchemaError(f"qtype must be one of {valid}, got {kind_of(value)}")
    try:
        return QType(value)
    except ValueError:
        raise SchemaError(f"qtype {value!r} is unknown; valid: {valid}") from None


def _precision(value: Any) -> Precision:
    if isinstance(value, Precision):
        return value
    valid = ", ".join(p.value for p in Precision)
    if not isinstance(value, str):
        raise SchemaError(f"precision must be one of {valid}, got {kind_of(value)}")
    try:
        return Precision(value.strip().lower())
    except ValueError:
        raise SchemaError(f"unknown precision {value!r}; valid: {valid}") from None


QTypeField = Annotated[QType, BeforeValidator(_qtype)]
PrecisionField = Annotated[Precision, BeforeValidator(_precision)]
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Float32 = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-F32_MAX, le=F32_MAX)]
Count = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]
JsonScalar = StrictStr | StrictBool | StrictInt | Finite | None


def float32_scale(value: float, fix: str | None = None) -> float:
    """``value`` as a float32 scale, or ``SchemaError``: finite and > 0 after rounding to float32."""
    if not math.isfinite(value) or not value > 0:
        raise SchemaError(f"scale {value!r} is not finite and > 0", fix or "a scale must be a finite number > 0")
    with np.errstate(over="ignore", under="ignore"):
        scale = float(np.float32(value))
    if not math.isfinite(scale) or scale <= 0:
        raise SchemaError(
            f"scale {value!r} is {scale!r} in float32",
            fix or f"give a scale between {float(np.finfo(np.float32).smallest_subnormal):.3g} and {F32_MAX:.4g}",
        )
    return scale


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# =========================================================================== plans
class QuantEntry(_Strict):
    """``mpcompile.quant`` metadata of one tensor (the numbers are initializers; see ``Annotation``)."""

    qtype: QTypeField
    axis: StrictInt | None
    symmetric: StrictBool
    narrow_range: StrictBool
    provenance: dict[str, JsonValue] = Field(default_factory=dict)


class PrecisionEntry(_Strict):
    """``mpcompile.precision`` metadata of one node."""

    precision: PrecisionField
    reason: StrictStr = ""


PLAN_QUANT = TypeAdapter(dict[str, QuantEntry])
PLAN_PRECISION = TypeAdapter(dict[str, PrecisionEntry])
PLAN_GRAPH = TypeAdapter(dict[str, JsonScalar])
PLAN_FIX = "the plan was edited or damaged; re-create it with `mpcompile calibrate`"


class Annotation(BaseModel):
    """One quantized tensor of a plan: its metadata, its scale and zero-point initializers, and the
    tensor they annotate (dtype, shape, whether it is a constant)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    entry: QuantEntry
    scale: np.ndarray
    zero_point: np.ndarray
    scale_name: str
    zero_point_name: str
    dtype: np.dtype | None = None
    shape: tuple[int | str | None, ...] | None = None
    constant: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Annotation:
        e, scale, zp = self.entry, self.scale, self.zero_point
        qtype = e.qtype
        if self.dtype is not None and self.dtype.kind != "f" and self.dtype.name != "bfloat16":
            raise SchemaError(f"is a {self.dtype} tensor, and only float tensors are quantized")
        if qtype in (QType.INT32, QType.INT64) and not self.constant:
            raise SchemaError(f"qtype {qtype.value} is for biases (constants); an activation cannot have it")
        if scale.dtype != np.float32:
            raise SchemaError(f"scale initializer {self.scale_name!r} is {scale.dtype}, not float32")
        if zp.dtype != qtype.numpy_dtype:
            kind = "a float" if zp.dtype.kind == "f" else str(zp.dtype)
            raise SchemaError(f"zero-point initializer {self.zero_point_name!r} is {kind}, not the qtype's {qtype.value}")
        bad = ~np.isfinite(scale) | ~(scale > 0)
        if bad.any():
            raise SchemaError(f"scale {_first(scale, bad)} in {self.scale_name!r} is not finite and > 0")
        if e.symmetric and np.any(zp != 0):
            raise SchemaError(f"is symmetric but has zero-point {_first(zp, zp != 0)}, not 0")
        if e.axis is None:
            if scale.ndim != 0 or zp.ndim != 0:
                raise SchemaError(
                    f"is per-tensor (axis null) but its scale has shape {list(scale.shape)} and its zero-point "
                    f"{list(zp.shape)}, not scalars"
                )
            return self
        if scale.ndim != 1 or zp.shape != scale.shape:
            raise SchemaError(
                f"is per-channel (axis {e.axis}) but its scale has shape {list(scale.shape)} and its zero-point "
                f"{list(zp.shape)}, not one 1-d shape"
            )
        if self.shape is not None:
            rank = len(self.shape)
            if not -rank <= e.axis < rank:
                raise SchemaError(f"quantization axis {e.axis} is out of range for its rank {rank}")
            dim = self.shape[e.axis]
            if isinstance(dim, int) and dim != scale.shape[0]:
                raise SchemaError(
                    f"per-channel scale has {scale.shape[0]} entries but dimension {e.axis} has size {dim}"
                )
        return self


def _first(values: np.ndarray, mask: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)[np.asarray(mask).reshape(-1)]
    return repr(flat[0].item()) if flat.size else "?"


# =========================================================================== overrides files
class TensorPin(_Strict):
    """``{"range": [lo, hi]}`` (the spec is re-derived) or ``{"scale": s, "zero_point": z}`` (pinned exactly)."""

    range: Annotated[tuple[Float32, Float32], Field(strict=False)] | None = None  # a JSON list is fine
    scale: Finite | None = None
    zero_point: StrictInt | None = None

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float | None) -> float | None:
        return None if value is None else float32_scale(value)

    @model_validator(mode="after")
    def _onekind_of(self) -> TensorPin:
        if (self.range is None) == (self.scale is None):
            raise SchemaError("needs either 'range' or 'scale'", _PIN_FIX)
        if self.range is not None:
            lo, hi = self.range
            if lo > hi:
                raise SchemaError(f"range [{lo!r}, {hi!r}] has lo > hi", "write [lo, hi] with lo <= hi")
            if self.zero_point is not None:
                raise SchemaError("has a 'zero_point' next to 'range'",
                                  "a range derives its own zero-point; pin 'scale' and 'zero_point' together instead")
        return self


_PIN_FIX = 'write {"range": [lo, hi]} or {"scale": s, "zero_point": z}'
OVERRIDES_FIX: Mapping[str, str] = {
    "nodes": 'write "nodes": {"NODE_NAME_OR_GLOB": "fp16", ...}',
    "op_types": 'write "op_types": {"Softmax": "fp32", ...}',
    "tensors": f"pin each tensor with {_PIN_FIX[6:]}",
    "": 'write e.g. {"op_types": {"Softmax": "fp32"}, "tensors": {"logits": {"range": [-8, 8]}}}',
}


class OverridesFile(_Strict):
    """A plan-overrides file (JSON or YAML); ``null`` sections are empty."""

    nodes: dict[StrictStr, PrecisionField] | None = None
    op_types: dict[StrictStr, PrecisionField] | None = None
    tensors: dict[StrictStr, TensorPin] | None = None


# =========================================================================== calibration caches
class StatsState(_Strict):
    count: Count
    min: Float32 | None
    max: Float32 | None
    min_abs_nonzero: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> StatsState:
        if (self.min is None) != (self.max is None) or (self.min is None) != (self.count == 0):
            raise SchemaError(f"count {self.count} with min {self.min!r} and max {self.max!r} do not agree "
                              "(min and max are null exactly when count is 0)")
        if self.min is not None and self.min > self.max:
            raise SchemaError(f"min {self.min!r} is above max {self.max!r}")
        return self


class HistogramState(_Strict):
    bins: Annotated[int, Field(strict=True, ge=HISTOGRAM_MIN_BINS, le=HISTOGRAM_MAX_BINS)]
    exponent: Annotated[int, Field(strict=True, ge=HISTOGRAM_MIN_EXPONENT, le=HISTOGRAM_MAX_EXPONENT)] | None
    start: Annotated[int, Field(strict=True, ge=-(2**62), le=2**62)]
    counts: list[Count]
    stats: StatsState

    @model_validator(mode="after")
    def _consistent(self) -> HistogramState:
        if len(self.counts) != self.bins:
            raise SchemaError(f"histogram has {len(self.counts)} counts for {self.bins} bins")
        total = sum(self.counts)
        if total != self.stats.count:
            raise SchemaError(f"histogram counts sum to {total}, but stats.count is {self.stats.count}")
        if (self.exponent is None) != (self.stats.count == 0):
            raise SchemaError(f"histogram exponent {self.exponent!r} with count {self.stats.count} "
                              "(the exponent is null exactly when the histogram is empty)")
        return self


class _Options(_Strict):
    pass


# Options left out (or null) take the observer's own defaults.
class MinMaxOptions(_Options):
    moving_average: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0, le=1)] | None = None


class PercentileOptions(_Options):
    percentile: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=50, le=100)] | None = None
    bins: Annotated[int, Field(strict=True, ge=HISTOGRAM_MIN_BINS, le=HISTOGRAM_MAX_BINS)] | None = None


class EntropyOptions(_Options):
    bins: Annotated[int, Field(strict=True, ge=HISTOGRAM_MIN_BINS, le=HISTOGRAM_MAX_BINS // 2)] | None = None
    quant_bins: Annotated[int, Field(strict=True, ge=2, le=HISTOGRAM_MAX_BINS)] | None = None


class MseOptions(_Options):
    bins: Annotated[int, Field(strict=True, ge=HISTOGRAM_MIN_BINS, le=HISTOGRAM_MAX_BINS)] | None = None


class MinMaxState(_Strict):
    stats: StatsState
    average: Annotated[tuple[Finite | None, Finite | None], Field(strict=False)] | None = None


class HistogramObserverState(_Strict):
    histogram: HistogramState


class MinMaxEntry(_Strict):
    method: Literal["minmax"]
    options: MinMaxOptions = Field(default_factory=MinMaxOptions)
    state: MinMaxState


class PercentileEntry(_Strict):
    method: Literal["percentile"]
    options: PercentileOptions = Field(default_factory=PercentileOptions)
    state: HistogramObserverState

    @model_validator(mode="after")
    def _bins(self) -> PercentileEntry:
        return _same_bins(self, 1)


class EntropyEntry(_Strict):
    method: Literal["entropy"]
    options: EntropyOptions = Field(default_factory=EntropyOptions)
    state: HistogramObserverState

    @model_validator(mode="after")
    def _bins(self) -> EntropyEntry:
        return _same_bins(self, 2)


class MseEntry(_Strict):
    method: Literal["mse"]
    options: MseOptions = Field(default_factory=MseOptions)
    state: HistogramObserverState

    @model_validator(mode="after")
    def _bins(self) -> MseEntry:
        return _same_bins(self, 1)


def _same_bins(entry: Any, per_option: int) -> Any:
    """An explicit ``bins`` option must match the histogram (a default one is the observer's to check)."""
    bins, option = entry.state.histogram.bins, entry.options.bins
    if option is not None and bins != option * per_option:
        raise SchemaError(f"histogram has {bins} bins, but {entry.method} bins={option} needs {option * per_option}")
    return entry


ObserverEntry = Annotated[MinMaxEntry | PercentileEntry | EntropyEntry | MseEntry, Field(discriminator="method")]
OBSERVER_ENTRY = TypeAdapter(ObserverEntry)
CACHE_FIX = "re-create the cache with `mpcompile calibrate --save-stats`"
#: union tags pydantic puts in error locations; an error names the tensor, not the tag
CACHE_SKIP = frozenset(CALIBRATION_METHODS)


class CalibrationCache(_Strict):
    """A calibration cache (``--save-stats`` writes it, ``--stats`` reads it)."""

    format: Literal["mpcompile-calibration-cache/1"]
    method: Literal["entropy", "minmax", "mse", "percentile"]
    options: dict[StrictStr, JsonScalar] = Field(default_factory=dict)
    samples: Count
    tensors: dict[StrictStr, ObserverEntry]
    aliases: dict[StrictStr, StrictStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> CalibrationCache:
        for name, entry in self.tensors.items():
            if entry.method != self.method:
                raise SchemaError(f"tensor {name!r} has a {entry.method} observer in a {self.method} cache")
        for alias, target in self.aliases.items():
            if target not in self.tensors:
                raise SchemaError(f"alias {alias!r} stands for tensor {target!r}, which has no statistics in the cache")
        return self

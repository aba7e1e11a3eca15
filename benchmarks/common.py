"""Shared benchmark plumbing: result rows, measured child processes, statistics, table and JSON output,
and the run context (settings, logging, the models and data every family uses).

Every measured job runs in a fresh child process (``benchmarks/_worker.py JOB ARGS``). The child
warms up, resets its peak-RSS counter, times the job itself and prints its result as JSON; its peak
resident set size comes from the OS (``os.wait4`` → ``ru_maxrss``, read by a tiny launcher process,
see ``LAUNCHER``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
WORKER = Path(__file__).with_name("_worker.py")
RESULT_PREFIX = "@@RESULT "
MNIST_MODEL = MODELS / "mnist_cnn.onnx"
MNIST_CALIB = MODELS / "mnist_cnn.calib.npz"
MNIST_EVAL = MODELS / "mnist_cnn.eval.npz"
#: Batch size fed by mpcompile and by every peer. It divides every MNIST sample count used here:
#: ONNX Runtime's histogram calibrators stack the collected batches with ``np.asarray`` and fail
#: on a final partial batch, so all tools get the same equal-sized batches.
MNIST_BATCH = 50
MINILM_BATCH = 32


# ============================================================================ rows
@dataclasses.dataclass
class Row:
    """One line of the result table.

    ``metric`` says what ``ours``/``peer`` are (with unit) and what ``ratio`` means; ``target`` is
    a comparison of ``ratio`` such as ``">= 3"`` or ``"<= 0.25"`` (``None``: informational row);
    ``met`` is ``None`` when the row was skipped or has no target.
    """

    name: str
    metric: str
    ours: float | None = None
    peer: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def meets(ratio: float | None, target: str | None) -> bool | None:
    """``ratio`` against a target such as ``">= 3"``; ``None`` without a ratio or a target."""
    if target is None or ratio is None or not math.isfinite(ratio):
        return None
    op, value = target.split()
    bound = float(value)
    if op == ">=":
        return ratio >= bound
    if op == "<=":
        return ratio <= bound
    raise ValueError(f"bad target {target!r}")


def safe_div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def row(
    name: str,
    metric: str,
    ours: float | None,
    peer: float | None,
    ratio: float | None,
    target: str | None,
    note: str = "",
    *,
    ours_failed: bool = False,
) -> Row:
    """A row whose ``met`` follows from ``ratio`` and ``target``.

    ``ours_failed``: mpcompile itself could not produce the measured thing: ``met`` is False, also
    on an informational row (a skip is only for missing peers or missing optional tools).
    """
    met = meets(ratio, target)
    if ours_failed:
        met = False
    return Row(name, metric, ours, peer, ratio, target, met, note)


def skipped(name: str, metric: str, target: str | None, reason: str) -> Row:
    return Row(name, metric, None, None, None, target, None, f"skipped: {reason}")


# ============================================================================ child processes
class WorkerError(RuntimeError):
    """A child job crashed, timed out or printed no result."""


@dataclasses.dataclass
class JobResult:
    data: dict[str, Any]
    peak_rss_mib: float  # from os.wait4 (ru_maxrss of the child; reset after the child's warm-up)
    wall: float  # seconds the child lived (start-up and warm-up included; not a measurement)

    @property
    def error(self) -> str | None:
        return self.data.get("error")


#: A minimal launcher between the benchmark parent and each worker. ``ru_maxrss`` of a process
#: includes the high-water mark of the address space it replaced at ``exec`` — for a child spawned
#: with vfork/posix_spawn that is its *spawner's* memory. Spawned straight from the parent (numpy,
#: onnx, ...), every worker's peak would read at least the parent's. The launcher (``python -I -S``,
#: about 9 MiB) spawns the worker, waits for it with ``os.wait4`` and writes the worker's
#: ``ru_maxrss`` (KiB) and wait status to a file.
LAUNCHER = r"""
import os, sys
report = sys.argv[1]
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as f:
    f.write("%d %d" % (usage.ru_maxrss, status))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_job(job: str, args: dict[str, Any], *, timeout: float = 3600.0) -> JobResult:
    """Run ``_worker.py job args`` in a fresh process; return its JSON result and OS peak RSS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory(prefix="mpbench-job.") as tmp:
        report = Path(tmp) / "rusage"
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        command = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), sys.executable, str(WORKER), job, json.dumps(args)]
        started = time.perf_counter()
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=str(REPO), start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher's own session: launcher and worker
                proc.wait()
                raise WorkerError(f"job {job} timed out after {timeout:.0f} s") from None
        wall = time.perf_counter() - started
        stdout, stderr = out_path.read_text(), err_path.read_text()
        try:
            maxrss_kib, status = (int(v) for v in report.read_text().split())
            code = os.waitstatus_to_exitcode(status)
        except (OSError, ValueError):
            maxrss_kib, code = 0, proc.returncode
    lines = [ln for ln in stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if code != 0 or not lines:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
        raise WorkerError(f"job {job} exited with {code}:\n{tail}")
    data = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return JobResult(data, maxrss_kib / 1024.0, wall)


# ============================================================================ statistics
def median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) over log(x): the growth exponent (1 = linear)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


# ============================================================================ output
def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def markdown_table(rows: Sequence[Row]) -> str:
    header = "| case | metric | mpcompile | peer | ratio | target | met? |"
    lines = [header, "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    notes: list[str] = []  # numbered footnotes; rows sharing a note share its number
    for r in rows:
        case = r.name
        if r.note:
            if r.note not in notes:
                notes.append(r.note)
            case += f" [{notes.index(r.note) + 1}]"
        met = "skip" if r.met is None and r.note.startswith("skipped") else fmt(r.met) if r.met is not None else "—"
        target = r.target.replace(">=", "≥").replace("<=", "≤") if r.target else "—"
        lines.append(
            f"| {case} | {r.metric} | {fmt(r.ours)} | {fmt(r.peer)} | {fmt(r.ratio)} | {target} | {met} |"
        )
    if notes:
        lines.append("")
        lines.extend(f"[{i}] {n}" for i, n in enumerate(notes, 1))
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> str:
    with_target = [r for r in rows if r.target is not None]
    met = sum(1 for r in with_target if r.met is True)
    missed = [r.name for r in with_target if r.met is False]
    skip = sum(1 for r in with_target if r.met is None)
    text = f"{met}/{len(with_target)} targets met, {len(missed)} missed, {skip} skipped or not measurable"
    if missed:
        text += "\nmissed: " + ", ".join(missed)
    return text


def environment() -> dict[str, Any]:
    import onnx
    import onnxruntime

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import mpcompile

        env["mpcompile"] = getattr(mpcompile, "__version__", "?")
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        env["mpcompile"] = f"import failed: {exc}"
    return env


def write_json(rows: Sequence[Row], path: str | os.PathLike, meta: dict[str, Any]) -> None:
    payload = {"meta": meta, "rows": [r.to_dict() for r in rows]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


# ============================================================================ run context
@dataclasses.dataclass
class Settings:
    """Knobs that differ between ``--quick`` and the full run."""

    quick: bool

    @property
    def repeats(self) -> int:
        """Fresh-process repeats of MNIST-scale measurements (the median is reported)."""
        return 3 if self.quick else 5

    @property
    def repeats_large(self) -> int:
        """Repeats of MiniLM-scale measurements."""
        return 1 if self.quick else 3

    @property
    def minilm_samples(self) -> int:
        return 128 if self.quick else 256

    @property
    def minilm_eval_samples(self) -> int:
        return 64 if self.quick else 256

    @property
    def latency_seconds(self) -> float:
        """Measured time budget per artifact and batch size (runs are interleaved across artifacts)."""
        return 1.0 if self.quick else 8.0

    @property
    def chain_depths(self) -> list[int]:
        return [4, 8, 16, 32] if self.quick else [4, 8, 16, 32, 64, 128]

    @property
    def chain_samples(self) -> int:
        return 64 if self.quick else 256

    @property
    def light_samples(self) -> int:
        return 2 if self.quick else 8

    @property
    def sample_counts(self) -> list[int]:
        return [250, 500, 1000, 2000] if self.quick else [250, 500, 1000, 2000, 4000, 10000]


class Context:
    """What every benchmark family shares in one run: settings, a work folder, prepared data, artifacts."""

    def __init__(self, quick: bool, workdir: Path, cache: Path) -> None:
        self.settings = Settings(quick)
        self.quick = quick
        self.workdir = workdir
        self.cache = cache
        self.started = time.perf_counter()
        self._minilm: dict[str, Any] | None = None
        self._minilm_error: str | None = None
        self._artifacts: dict[str, dict[str, Any]] = {}
        self._tflite: tuple[bool, str] | None = None

    # ------------------------------------------------------------------ logging
    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    def job(self, job: str, args: dict[str, Any], *, timeout: float = 3600.0) -> JobResult:
        return run_job(job, args, timeout=timeout)

    # ------------------------------------------------------------------ MNIST data
    def mnist_data(self, samples: int, *, compressed: bool = False) -> Path:
        """An ``.npz`` (key ``input``) with ``samples`` real MNIST images.

        The first 1,000 are the 500 calibration images followed by the first 500 held-out
        images; beyond that the 1,000 are tiled with a random ±2 pixel shift and a little noise
        per copy (numpy seed 0), clipped to [0, 1]. Uncompressed (memory-mapped by mpcompile)
        unless ``compressed``.
        """
        path = self.workdir / f"mnist_{samples}{'_z' if compressed else ''}.npz"
        if path.exists():
            return path
        with np.load(MNIST_CALIB) as calib, np.load(MNIST_EVAL) as ev:
            base = np.concatenate([calib["input"], ev["input"][:500]]).astype(np.float32)
        rng = np.random.RandomState(0)
        parts, have = [], 0
        while have < samples:
            if have == 0:
                part = base
            else:
                dy, dx = rng.randint(-2, 3, size=2)
                part = np.roll(base, (int(dy), int(dx)), axis=(2, 3))
                part = np.clip(part + rng.normal(0, 0.02, part.shape).astype(np.float32), 0.0, 1.0)
            parts.append(part[: samples - have])
            have += parts[-1].shape[0]
        data = np.concatenate(parts).astype(np.float32)
        (np.savez_compressed if compressed else np.savez)(path, input=data)
        return path

    # ------------------------------------------------------------------ MiniLM
    def minilm(self) -> dict[str, Any] | None:
        """``{"model", "calib", "eval"}`` paths for MiniLM, exported on first use (cached), or None.

        When the export fails, ``minilm_error`` says why (printed once).
        """
        if self._minilm is not None or self._minilm_error is not None:
            return self._minilm
        folder = self.cache / "minilm"
        model, calib_full, eval_full = folder / "minilm.onnx", folder / "minilm_calib.npz", folder / "minilm_eval.npz"
        script = MODELS / "export_minilm.py"
        stamp = folder / "export.sha256"
        digest = hashlib.sha256(script.read_bytes()).hexdigest() if script.exists() else "missing"
        fresh = all(p.exists() for p in (model, calib_full, eval_full)) and stamp.exists() and stamp.read_text() == digest
        if not fresh:
            self.log(f"exporting MiniLM to {folder} (models/export_minilm.py; cached for later runs)")
            folder.mkdir(parents=True, exist_ok=True)
            try:
                res = self.job("export_minilm", {"out": str(model), "eval": str(eval_full), "eval_samples": 256}, timeout=1200)
            except WorkerError as exc:
                self._minilm_error = f"MiniLM export failed: {str(exc).splitlines()[-1]}"
                print(f"MiniLM benchmarks skipped: {self._minilm_error}", flush=True)
                return None
            if res.error:
                self._minilm_error = f"MiniLM export failed: {res.error}"
                print(f"MiniLM benchmarks skipped: {self._minilm_error}", flush=True)
                return None
            stamp.write_text(digest)
        n, n_eval = self.settings.minilm_samples, self.settings.minilm_eval_samples
        calib = self.workdir / f"minilm_calib_{n}.npz"
        evaluation = self.workdir / f"minilm_eval_{n_eval}.npz"
        with np.load(calib_full) as z:
            np.savez(calib, **{k: z[k][:n] for k in z.files})
        with np.load(eval_full) as z:
            np.savez(evaluation, **{k: z[k][:n_eval] for k in z.files})
        self._minilm = {"model": str(model), "calib": str(calib), "eval": str(evaluation), "samples": n}
        return self._minilm

    @property
    def minilm_error(self) -> str:
        return self._minilm_error or "MiniLM unavailable"

    def models(self) -> list[tuple[str, dict[str, Any] | None, str]]:
        """``(key, paths or None, skip reason)`` for the two real models."""
        mnist = {"model": str(MNIST_MODEL), "calib": str(self.mnist_data(1000)), "eval": str(MNIST_EVAL), "samples": 1000}
        minilm = self.minilm()
        return [("mnist", mnist, ""), ("minilm", minilm, self.minilm_error if minilm is None else "")]

    # ------------------------------------------------------------------ backends
    def tflite(self) -> tuple[bool, str]:
        """(available, reason): ``mpcompile backends --json`` lists tflite as available,
        ``get_backend("tflite")`` does not raise, and LiteRT (the latency runtime) imports."""
        if self._tflite is None:
            self._tflite = _tflite_status()
        return self._tflite

    @staticmethod
    def tensorflow() -> tuple[bool, str]:
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            return False, "tensorflow is not installed, so the TFLite converter peer cannot run (pip install tensorflow-cpu)"
        return True, ""

    # ------------------------------------------------------------------ artifacts (latency, accuracy)
    def artifacts(self, key: str, paths: dict[str, Any]) -> dict[str, Any]:
        """Build once per run: mpcompile's ORT artifact (static, and ``quantization=dynamic``), ORT
        quantize_static's (per-channel QDQ) and quantize_dynamic's, and (if available) mpcompile's int8 and fp32
        .tflite, all from the same calibration data."""
        if key not in self._artifacts:
            calib = str(MNIST_CALIB) if key == "mnist" else paths["calib"]  # MNIST: the shipped calibration set
            batch = MNIST_BATCH if key == "mnist" else MINILM_BATCH
            tflite = self.tflite()[0] and key == "mnist"
            self.log(f"building {key} artifacts (mpcompile ORT static + dynamic, ORT quantize_static + quantize_dynamic"
                     f"{', tflite' if tflite else ''})")
            res = self.job(
                "build_artifacts",
                {
                    "model": paths["model"],
                    "calib": calib,
                    "batch": batch,
                    "out": str(self.workdir / f"artifacts_{key}"),
                    "tflite": tflite,
                    "dynamic": True,
                },
            )
            self._artifacts[key] = res.data
        return self._artifacts[key]


def _tflite_status() -> tuple[bool, str]:
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "mpcompile", "backends", "--json"], capture_output=True, text=True, timeout=120
        )
        entry = next((b for b in json.loads(listing.stdout) if b.get("name") == "tflite"), None)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return False, f"`mpcompile backends --json` failed ({exc})"
    if entry is None:
        return False, "`mpcompile backends --json` lists no tflite backend"
    if not entry.get("available"):
        return False, f"mpcompile's tflite backend is unavailable: {entry.get('reason') or '?'}"
    try:
        from mpcompile.backends.registry import get_backend

        get_backend("tflite")
        import ai_edge_litert.interpreter  # noqa: F401 - the runtime the latency rows need
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable", with its reason
        return False, f"mpcompile's tflite backend is unavailable ({str(exc).splitlines()[0]})"
    return True, ""


def default_cache() -> Path:
    root = os.environ.get("MPCOMPILE_BENCH_CACHE")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mpcompile" / "bench"


def short_error(text: str | None, limit: int = 220) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 1] + "…"

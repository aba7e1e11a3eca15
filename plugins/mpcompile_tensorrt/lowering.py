"""Write the TensorRT artifact files and, when TensorRT is installed, build the engine.

Files (``<stem>`` from the options):

* ``<stem>.trt.onnx``: the TensorRT-ready QDQ ONNX (explicit quantization; TensorRT 11, or
  10.x with ``--stronglyTyped``). Valid ONNX that ONNX Runtime runs.
* ``<stem>.fp32.onnx``: the plan's float model, for 10.x implicit INT8.
* ``<stem>.calib.cache``: the plan's scales as a TensorRT calibration cache (10.x implicit).
* ``<stem>.engine``: the serialized engine (not with ``onnx_only``).

The metadata carries the ``trtexec`` command lines that build the engine from these files
on the target machine, the optimization profile, and the placement notes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import Any

from mpcompile.backends.api import Artifact, BackendError, BackendUnavailableError, Deviation, Graph, open_data, serde
from mpcompile_tensorrt import cache as calib_cache
from mpcompile_tensorrt.environment import DEFAULT_TRT10_VERSION
from mpcompile_tensorrt.options import TensorRTOptions
from mpcompile_tensorrt.profiles import InputProfile, input_profiles, trtexec_commands
from mpcompile_tensorrt.qdq import cache_scales, float_graph, node_precisions, tensorrt_qdq_graph

BACKEND = "tensorrt"
PLACEMENT = {
    "weights": "int8 initializers → DequantizeLinear (zero-point int8 0, explicit axis = output channel)",
    "biases": "float32, holding the plan's int32 bias dequantized (TensorRT adds biases in float)",
    "activations": "per-tensor QuantizeLinear → DequantizeLinear (zero-point int8 0) after each producer",
    "half_precision": "FP16/BF16 nodes on FP16/BF16 tensors, Cast at the boundaries",
}


@dataclasses.dataclass
class WrittenFiles:
    qdq_onnx: Path
    float_onnx: Path
    calibration_cache: Path
    engine: Path
    tensor_map: dict[str, str]
    notes: list[str]
    cache_text: str
    cache_header: str

    def names(self) -> dict[str, str]:
        return {
            "qdq_onnx": self.qdq_onnx.name,
            "float_onnx": self.float_onnx.name,
            "calibration_cache": self.calibration_cache.name,
            "engine": self.engine.name,
        }


def write_files(plan: Graph, out_dir: Path, stem: str, options: TensorRTOptions, cache_version: str) -> WrittenFiles:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    qdq = tensorrt_qdq_graph(plan)
    qdq_path = serde.save_onnx(qdq.graph, out_dir / f"{stem}.trt.onnx")
    float_path = serde.save_onnx(float_graph(plan), out_dir / f"{stem}.fp32.onnx")
    text = calib_cache.write_cache(cache_scales(plan), cache_version, "entropy")
    cache_path = out_dir / f"{stem}.calib.cache"
    serde.write_atomic(cache_path, text.encode("utf-8"))
    return WrittenFiles(
        qdq_path, float_path, cache_path, out_dir / f"{stem}.engine", qdq.tensor_map, qdq.notes, text, text.split("\n", 1)[0]
    )


def _sample_shapes(plan: Graph, options: TensorRTOptions) -> tuple[Any, dict[str, tuple[int, ...]] | None]:
    """The calibration dataset (opened) and the shapes of its first batch, if data was given."""
    if options.calibration_data is None:
        return None, None
    dataset = open_data(plan, options.calibration_data)
    first = next(iter(dataset.batches(options.batch_size, limit=options.calibration_samples)), None)
    return dataset, None if first is None else {k: tuple(v.shape) for k, v in first.items()}


def _metadata(
    plan: Graph, files: WrittenFiles, profiles: dict[str, InputProfile], options: TensorRTOptions
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "files": files.names(),
        "calibration_cache_header": files.cache_header,
        "profiles": {k: p.to_dict() for k, p in profiles.items()},
        "trtexec": trtexec_commands(plan, profiles, files.names(), options),
        "trtexec_cwd": "the artifact's folder",
        "placement": {**PLACEMENT, "notes": list(files.notes)},
        "tensor_map": files.tensor_map,
    }
    return meta


# ============================================================================ onnx_only
def lower_onnx_files(
    plan: Graph, out_dir: Path, stem: str, options: TensorRTOptions, installed_version: str | None = None
) -> Artifact:
    """The ``onnx_only`` artifact: QDQ ONNX + float ONNX + calibration cache, no TensorRT needed."""
    version = options.tensorrt_version or installed_version or DEFAULT_TRT10_VERSION
    _, sample = _sample_shapes(plan, options)
    profiles = input_profiles(plan, options, sample)
    files = write_files(plan, out_dir, stem, options, version)
    meta = _metadata(plan, files, profiles, options)
    meta.update(
        {
            "format": "TensorRT-ready QDQ ONNX (onnx_only: no engine was built)",
            "onnx_only": True,
            "tensorrt": installed_version,
            "calibration_cache_for": version,
            "quantization": "explicit Q/DQ (11.x, or 10.x --stronglyTyped); implicit on 10.x from the float ONNX + cache",
        }
    )
    if options.tensorrt_version is None and installed_version is None:
        meta["calibration_cache_note"] = (
            f"header written for TensorRT {version}; TensorRT rejects a cache for another version: re-lower with "
            f"tensorrt_version='<the target's version>' for 10.x implicit builds"
        )
    return Artifact(BACKEND, files.qdq_onnx, [files.qdq_onnx, files.float_onnx, files.calibration_cache], metadata=meta)


# ============================================================================ engine
def select_builder(trt: ModuleType) -> ModuleType:
    """The version-specific builder module: ``trt10`` for 10.x, ``trt11`` for 11.x and later."""
    from mpcompile_tensorrt.environment import major_version, tensorrt_version

    major = major_version(trt)
    if major >= 11:
        from mpcompile_tensorrt import trt11

        return trt11
    if major == 10:
        from mpcompile_tensorrt import trt10

        return trt10
    raise BackendUnavailableError(
        f"TensorRT {tensorrt_version(trt)} is older than 10, which mpcompile does not support; use onnx_only=True "
        f"and build with that version's trtexec, or install TensorRT 10 or 11"
    )


def lower_engine(plan: Graph, out_dir: Path, stem: str, options: TensorRTOptions) -> Artifact:
    from mpcompile_tensorrt.build_common import BuildRequest
    from mpcompile_tensorrt.environment import cuda_device, import_tensorrt, major_version, tensorrt_version

    trt = import_tensorrt()
    builder = select_builder(trt)
    version = tensorrt_version(trt)
    quantization = options.quantization or builder.DEFAULT_QUANTIZATION
    if quantization not in builder.QUANTIZATION_MODES:
        raise BackendError(
            f"TensorRT {version} supports quantization {list(builder.QUANTIZATION_MODES)}, not {quantization!r}"
            + (" (implicit INT8 was removed in TensorRT 11)" if quantization == "implicit" else "")
        )
    if options.calibrator != "plan" and quantization != "implicit":
        raise BackendError(f"calibrator={options.calibrator!r} needs quantization='implicit' (TensorRT 10)")
    device = cuda_device(prefer=options.device_library)
    dataset, sample = _sample_shapes(plan, options)
    profiles = input_profiles(plan, options, sample)
    files = write_files(plan, out_dir, stem, options, options.tensorrt_version or version)
    buffers = None
    if options.calibrator != "plan":
        from mpcompile_tensorrt.cuda_memory import device_buffers

        buffers = device_buffers(device.library, device.index)
    request = BuildRequest(
        qdq_onnx=files.qdq_onnx,
        float_onnx=files.float_onnx,
        quantization=quantization,
        profiles=profiles,
        workspace=options.workspace,
        calibrator=options.calibrator,
        cache=files.cache_text.encode("utf-8"),
        node_precisions=node_precisions(plan),
        dataset=dataset,
        calibration_samples=options.calibration_samples,
        batch_size=options.batch_size,
        device=buffers,
        calibration_cache_out=files.calibration_cache.with_name(f"{stem}.tensorrt.calib.cache")
        if options.calibrator != "plan"
        else None,
    )
    try:
        result = builder.build(trt, request)
    finally:
        if buffers is not None:
            buffers.free()
    serde.write_atomic(files.engine, result.engine)
    meta = _metadata(plan, files, profiles, options)
    meta.update(
        {
            "format": "TensorRT engine",
            "onnx_only": False,
            "tensorrt": version,
            "tensorrt_major": major_version(trt),
            "quantization": quantization,
            "gpu": device.name,
            "compute_capability": device.compute_capability,
            "device_library": device.library,
            "workspace": options.workspace,
            "build": result.details,
        }
    )
    artifact_files = [files.engine, files.qdq_onnx, files.float_onnx, files.calibration_cache]
    deviations: list[Deviation] = []
    if result.calibrator_cache is not None:
        artifact_files.append(request.calibration_cache_out)  # type: ignore[arg-type]
        meta["tensorrt_scales_vs_plan"] = compare_scales(files.cache_text, result.calibrator_cache)
        deviations.append(
            Deviation(
                plan.name,
                "node",
                f"activation scales calibrated by TensorRT ({options.calibrator}), not the plan's",
                "calibrator option: the engine does not carry the plan's activation numbers",
            )
        )
    return Artifact(BACKEND, files.engine, [f for f in artifact_files if f is not None], deviations, meta)


def compare_scales(plan_cache: str, tensorrt_cache: bytes) -> dict[str, Any]:
    """How far TensorRT's own calibration moved from the plan: per-tensor scale ratios."""
    plan = calib_cache.read_cache(plan_cache).scales
    try:
        ours = calib_cache.read_cache(tensorrt_cache).scales
    except BackendError as exc:
        return {"error": str(exc)}
    ratios = {k: float(ours[k]) / float(plan[k]) for k in plan if k in ours}
    if not ratios:
        return {"compared": 0}
    worst = max(ratios, key=lambda k: abs(ratios[k] - 1.0))
    return {"compared": len(ratios), "max_ratio_tensor": worst, "max_ratio": ratios[worst]}

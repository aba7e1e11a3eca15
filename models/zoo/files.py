"""Byte-level input: Google's Magika file-type classifier (integer inputs) on real files of
this machine, labelled by their extension."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np

from models.zoo import Entry, register
from models.zoo._metrics import accuracy

MAGIKA = ("magika", "1.0.3")
CONFIG = "magika/models/standard_v3_3/config.min.json"
BEG, END, BLOCK, PAD = 1024, 1024, 4096, 256

#: extension -> Magika label, for the labels whose extension says what the content is
EXTENSIONS = {
    "py": "python", "c": "c", "cpp": "cpp", "json": "json", "html": "html", "xml": "xml", "css": "css",
    "js": "javascript", "md": "markdown", "pm": "perl", "png": "png", "gif": "gif", "jpg": "jpeg", "pdf": "pdf",
    "whl": "zip", "gz": "gzip", "so": "elf", "ttf": "ttf", "toml": "toml", "rst": "rst", "csv": "csv",
    "sh": "shell", "svg": "svg", "sql": "sql", "tcl": "tcl", "npy": "npy", "npz": "npz", "wav": "wav",
    "jar": "jar", "yaml": "yaml", "yml": "yaml", "bz2": "bzip", "xz": "xz",
}
N_CALIB, N_EVAL, MIN_FILES = 4, 12, 16


def roots() -> list[Path]:
    """Where the files come from: this interpreter's stdlib and site-packages, C headers, Perl
    modules and shared libraries of the OS image (searched in sorted order)."""
    paths = sysconfig.get_paths()
    cands = [paths["stdlib"], paths["purelib"], "/usr/include", "/usr/share/perl5", "/usr/share/perl",
             "/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/share/fonts", "/usr/share/mime"]
    seen, out = set(), []
    for c in cands:
        p = Path(c)
        if p.is_dir() and p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def find_files(labels: set[str], per_label: int = 300, scan_limit: int = 400_000) -> dict[str, list[Path]]:
    """Up to ``per_label`` regular files (>= 64 bytes) per label, deterministic order."""
    found: dict[str, list[Path]] = {}
    scanned = 0
    for root in roots():
        for dirpath, dirnames, filenames in os.walk(root):
            # __pycache__ grows as Python runs: leaving it out keeps the sample stable
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                scanned += 1
                ext = f.rsplit(".", 1)[-1].lower() if "." in f else ""
                label = EXTENSIONS.get(ext)
                if label is None or label not in labels or len(found.get(label, ())) >= per_label:
                    continue
                p = Path(dirpath) / f
                try:
                    if p.is_symlink() or not p.is_file() or p.stat().st_size < 64:
                        continue
                except OSError:
                    continue
                found.setdefault(label, []).append(p)
            if scanned > scan_limit:
                return found
    return found


def features(path: Path) -> np.ndarray:
    """Magika's standard_v3 features: the first 1024 bytes after lstrip and the last 1024 bytes
    before rstrip (of at most the first/last 4096 bytes), padded with token 256; int32 (2048,)."""
    size = path.stat().st_size
    n = min(BLOCK, size)
    with open(path, "rb") as fh:
        beg = fh.read(n)
        fh.seek(size - n)
        end = fh.read(n)
    beg, end = beg.lstrip()[:BEG], end.rstrip()[-END:] if end.rstrip() else b""
    b = list(beg) + [PAD] * (BEG - len(beg))
    e = [PAD] * (END - len(end)) + list(end)
    return np.asarray(b + e, np.int32)


def _copy(source: Path, out_dir: Path, cache: Path) -> None:
    (out_dir / "model.onnx").write_bytes(source.read_bytes())


def _data(model: Path, out_dir: Path):
    import json

    from models.zoo._common import fetch_wheel, read_member

    wheel = fetch_wheel(*MAGIKA, out_dir.parent)  # out_dir is <cache>/<name>.partial
    space = json.loads(read_member(wheel, CONFIG))["target_labels_space"]
    found = find_files(set(EXTENSIONS.values()) & set(space))
    rng = np.random.RandomState(61)
    xc, xe, ye = [], [], []
    for label in sorted(found):
        files = found[label]
        if len(files) < MIN_FILES:
            continue
        pick = rng.permutation(len(files))[:N_CALIB + N_EVAL]
        for k, i in enumerate(pick):
            (xc if k < N_CALIB else xe).append(features(files[i]))
            if k >= N_CALIB:
                ye.append(space.index(label))
    (out_dir / "labels.json").write_text(json.dumps(space))
    return {"bytes": np.stack(xc)}, {"bytes": np.stack(xe), "labels": np.asarray(ye, np.int64)}


def _score(outputs, ev) -> float:
    return accuracy(outputs["target_label"].argmax(-1), ev["labels"])


register(Entry(
    name="magika",
    families=("integer-input",),
    description="Google Magika standard_v3_3 file-type classifier: byte embedding (int32 tokens 0..256), "
                "Conv, attention-like pooling, 214 content types",
    package=MAGIKA[0], version=MAGIKA[1],
    member="magika/models/standard_v3_3/model.onnx",
    sha256="fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    inputs="bytes int32 (N,2048): first 1024 bytes (lstripped) + last 1024 bytes (rstripped), pad token 256; "
           "output target_label (N,214) softmax",
    metric_name="accuracy vs file extension (real files of this machine, up to 30 content types x 12)",
    make_model=_copy, make_data=_data, score=_score,
    input_shapes={"bytes": (1, 2048)},
    min_fp32=0.7, needs=(), recipe_version=2,
    notes="the files are this machine's (Python stdlib and site-packages, /usr/include, /usr/share/perl*, "
          "/usr/lib/x86_64-linux-gnu, /usr/share/doc): another machine image gives another sample",
))

"""How mpcompile publishes an output folder (placeholder until the output-hygiene branch lands)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Build outputs in a temporary sibling folder, then move them into ``out_dir`` only on success."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        os.replace(tmp, out)
        return
    for item in tmp.iterdir():
        target = out / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    shutil.rmtree(tmp, ignore_errors=True)

"""Shared values for local worker processes: one file, memory-mapped by every worker.

The value is pickled once (protocol 5) with its numpy arrays *out of band*: the pickle
stream holds the object structure, the arrays' bytes follow it in the same file, each
64-byte aligned. A worker maps the file copy-on-write and unpickles with those slices as
buffers, so every array is a view on the mapping: the pages are shared by all workers
(and by the page cache, or tmpfs under ``/dev/shm``), nothing is copied per worker or per
task, and a worker that writes to an array only gets its own copy of the pages it touched.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import tempfile
from pathlib import Path
from typing import Any

MAGIC = b"MPCSHR1\0"
ALIGN = 64
_HEADER = struct.Struct("<8sQ")  # magic, number of sections (the pickle stream, then each buffer)


def _pad(n: int) -> int:
    return (-n) % ALIGN


def default_folder() -> Path:
    """``/dev/shm`` where it exists and is writable (memory, not disk), else the temporary folder."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def dump(value: Any, path: Path) -> int:
    """Write ``value`` to ``path``; returns the file size."""
    buffers: list[pickle.PickleBuffer] = []
    stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    sections = [memoryview(stream)] + [b.raw() for b in buffers]
    sizes = [s.nbytes for s in sections]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        header = _HEADER.pack(MAGIC, len(sections)) + struct.pack(f"<{len(sizes)}Q", *sizes)
        f.write(header + b"\0" * _pad(len(header)))
        for section in sections:
            f.write(section)
            f.write(b"\0" * _pad(section.nbytes))
        return f.tell()


def load(path: str | os.PathLike) -> Any:
    """The value written by ``dump``; its arrays are views on a private (copy-on-write) mapping of the file."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    view = memoryview(mapped)
    magic, count = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError(f"{path}: not an mpcompile shared-data file")
    sizes = struct.unpack_from(f"<{count}Q", view, _HEADER.size)
    offset = _HEADER.size + 8 * count
    offset += _pad(offset)
    sections = []
    for size in sizes:
        sections.append(view[offset:offset + size])
        offset += size + _pad(size)
    return pickle.loads(sections[0], buffers=sections[1:])

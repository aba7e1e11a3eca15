"""Arrays stored in files, read lazily: ``.npy`` files and the members of ``.npz`` archives.

Opening reads only headers (:func:`_npy_member`, :func:`_npz_members`); a pass over the
data reads rows through :class:`_MemberReader`.

Nothing is loaded eagerly; only headers are read when the dataset is opened.

* ``.npy`` files and *stored* (uncompressed, ``np.savez``) ``.npz`` members are
  memory-mapped: ``np.load(mmap_mode="r")`` does not map ``.npz`` members, so the member's
  data offset is computed from its zip local header and its ``.npy`` header and the member
  is mapped with ``np.memmap``. A batch costs one batch of memory; the pages are
  file-backed, so the OS can drop them.
* *compressed* members (``np.savez_compressed``) in C order are decompressed as a stream,
  one batch at a time, for each pass over the data: memory stays at one batch, and the
  price is decompressing the member again on every pass (calibration makes one pass).
* compressed members in Fortran order cannot be streamed by sample; such a member is
  decoded whole once per pass (the memory of that one array) and sliced.
* extra arrays (labels) are read whole, when asked for.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.data.specs import _fmt_shape
from mpcompile.errors import DataError


@dataclass
class _Member:
    """One array stored in a file: a .npy file or a member of an .npz archive."""

    path: Path
    key: str  # input/extra name (for a .npy file: the file stem)
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int | None  # byte offset of the raw data in ``path`` when it can be memory-mapped
    zipinfo: zipfile.ZipInfo | None = None
    where: str = ""

    @property
    def count(self) -> int:
        return self.shape[0] if self.shape else 1


def _read_npy_header(fp: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:  # 2.0 and 3.0 share the 4-byte header length; 3.0 only allows utf-8 field names
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except (ValueError, OSError, EOFError, struct.error, SyntaxError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where} is not a valid .npy array ({exc}); re-save it with numpy.save/numpy.savez") from exc
    if dtype.hasobject:
        raise DataError(
            f"{where} holds Python objects, which are not loaded (allow_pickle=False); "
            "save plain numeric arrays instead"
        )
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _npy_member(path: Path, where: str) -> _Member:
    try:
        with open(path, "rb") as fp:
            shape, fortran, dtype = _read_npy_header(fp, where)
            offset = fp.tell()
            size = os.fstat(fp.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{where} cannot be read ({exc}); check the path and its permissions") from exc
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes > size:
        raise DataError(
            f"{where} is truncated: its header declares {_fmt_shape(shape)} {dtype} ({nbytes} bytes) but only "
            f"{size - offset} bytes follow; re-create the file"
        )
    return _Member(path, path.stem, shape, dtype, fortran, offset, None, where)


def _npz_members(path: Path, where: str) -> dict[str, _Member]:
    """Read the .npy headers of every member of an .npz archive (no array data is read)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"{where} is not a valid .npz archive ({exc}); re-create it with numpy.savez(path, input_name=array, ...)"
        ) from exc
    members: dict[str, _Member] = {}
    try:
        with zf, open(path, "rb") as raw:
            size = os.fstat(raw.fileno()).st_size
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                mwhere = f"{where} (member '{info.filename}')"
                if info.flag_bits & 0x1:
                    raise DataError(f"{mwhere} is encrypted; save the data with numpy.savez without encryption")
                if info.compress_type == zipfile.ZIP_STORED:
                    raw.seek(info.header_offset)
                    local = raw.read(30)
                    if len(local) != 30 or local[:4] != b"PK\x03\x04":
                        raise DataError(f"{mwhere} has a corrupt zip header; re-create the archive with numpy.savez")
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    raw.seek(start)
                    shape, fortran, dtype = _read_npy_header(raw, mwhere)
                    offset = raw.tell()
                    nbytes = math.prod(shape) * dtype.itemsize
                    if offset + nbytes > size or offset - start + nbytes > info.file_size:
                        raise DataError(
                            f"{mwhere} is truncated: it declares {_fmt_shape(shape)} {dtype} but the archive holds "
                            "fewer bytes; re-create the file"
                        )
                else:
                    try:
                        with zf.open(info) as stream:
                            shape, fortran, dtype = _read_npy_header(stream, mwhere)
                    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
                        raise DataError(f"{mwhere} cannot be decompressed ({exc}); re-create the archive") from exc
                    offset = None
                members[key] = _Member(path, key, shape, dtype, fortran, offset, info, mwhere)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"{where} is a corrupt .npz archive ({exc}); re-create it with numpy.savez") from exc
    return members


class _MemberReader:
    """Reads rows ``[start, stop)`` of one member, in increasing order, during one pass."""

    def __init__(self, member: _Member, zf: zipfile.ZipFile | None) -> None:
        self.member = member
        self._zf = zf
        self._mm: np.ndarray | None = None
        self._whole: np.ndarray | None = None
        self._stream: Any = None
        self._pos = 0
        self._file: Any = None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._file is not None:
            self._file.close()
        self._stream = self._mm = self._whole = self._file = None

    def _read_rows(self, start: int, stop: int) -> np.ndarray:
        """C-order rows read with one positioned read: pages do not stay mapped (and resident) after use."""
        m = self.member
        if self._file is None:
            self._file = open(m.path, "rb")  # noqa: SIM115 - closed by close()
        row = math.prod(m.shape[1:]) * m.dtype.itemsize
        count = max(0, min(stop, m.shape[0]) - start)
        data = os.pread(self._file.fileno(), count * row, m.offset + start * row)
        if len(data) != count * row:
            raise DataError(f"{m.where} is truncated; re-create the file")
        return np.frombuffer(data, dtype=m.dtype).reshape((count,) + tuple(m.shape[1:])).copy()

    def read(self, start: int, stop: int) -> np.ndarray:
        m = self.member
        try:
            if not m.shape:  # a 0-d array: one sample, read whole
                return self._read_whole()
            if m.offset is not None:
                if math.prod(m.shape) == 0:
                    return np.empty((stop - start,) + m.shape[1:], m.dtype)
                if not m.fortran:
                    return self._read_rows(start, stop)
                if self._mm is None:
                    self._mm = np.memmap(m.path, dtype=m.dtype, mode="r", offset=m.offset, shape=m.shape, order="F")
                return np.array(self._mm[start:stop])
            if m.fortran:  # cannot be streamed by sample: decoded whole, once per pass
                return self._read_whole()[start:stop]
            return self._read_stream(start, stop)
        except DataError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
            raise DataError(f"{m.where} cannot be read ({exc}); the file may be corrupt, re-create it") from exc

    def _open_stream(self) -> Any:
        assert self._zf is not None and self.member.zipinfo is not None
        stream = self._zf.open(self.member.zipinfo)
        _read_npy_header(stream, self.member.where)
        return stream

    def _read_whole(self) -> np.ndarray:
        if self._whole is None:
            m = self.member
            if m.offset is not None:
                self._whole = (
                    np.array(
                        np.memmap(
                            m.path,
                            dtype=m.dtype,
                            mode="r",
                            offset=m.offset,
                            shape=m.shape,
                            order="F" if m.fortran else "C",
                        )
                    )
                    if math.prod(m.shape)
                    else np.empty(m.shape, m.dtype)
                )
            else:
                with self._open_stream() as stream:
                    nbytes = math.prod(m.shape) * m.dtype.itemsize
                    data = stream.read(nbytes)
                    if len(data) != nbytes:
                        raise DataError(f"{m.where} is truncated; re-create the archive")
                    self._whole = np.frombuffer(data, m.dtype).reshape(m.shape, order="F" if m.fortran else "C")
        return self._whole

    def _read_stream(self, start: int, stop: int) -> np.ndarray:
        m = self.member
        if self._stream is None:
            self._stream = self._open_stream()
            self._pos = 0
        if start != self._pos:  # never happens in a pass; restart to stay correct
            self._stream.close()
            self._stream = self._open_stream()
            self._pos = 0
            row = math.prod(m.shape[1:]) * m.dtype.itemsize
            skip = start * row
            while skip:
                chunk = self._stream.read(min(skip, 1 << 24))
                if not chunk:
                    raise DataError(f"{m.where} is truncated; re-create the archive")
                skip -= len(chunk)
        row_bytes = math.prod(m.shape[1:]) * m.dtype.itemsize
        want = (stop - start) * row_bytes
        data = self._stream.read(want)
        if len(data) != want:
            raise DataError(
                f"{m.where} is truncated: expected {want} more bytes, got {len(data)}; re-create the archive"
            )
        self._pos = stop
        return np.frombuffer(data, m.dtype).reshape((stop - start,) + m.shape[1:])


class _Readers:
    """The readers of one pass over one file, with the zip archive they share."""

    def __init__(self, path: Path, members: Iterable[_Member], is_zip: bool) -> None:
        self._zf = zipfile.ZipFile(path) if is_zip else None
        self.by_key = {m.key: _MemberReader(m, self._zf) for m in members}

    def close(self) -> None:
        for reader in self.by_key.values():
            reader.close()
        if self._zf is not None:
            self._zf.close()

    def __enter__(self) -> _Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_readers(path: Path, members: Iterable[_Member], is_zip: bool, where: str) -> _Readers:
    try:
        return _Readers(path, members, is_zip)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{where} cannot be opened ({exc}); check that the file still exists and is intact") from exc

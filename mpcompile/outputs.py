"""How mpcompile publishes an output folder.

Bad input loses nothing, and mpcompile never deletes what it did not write:

* Everything is built in a hidden staging folder and only published into ``out_dir`` when
  the whole step succeeded; on any failure (an error, Ctrl-C, SIGTERM in the CLI) the
  staging folder is removed and ``out_dir`` is untouched.
* Ownership: publishing leaves a record, ``out_dir/.mpcompile-files.json``, of every file
  mpcompile wrote there (relative path, size, mtime and SHA-256) and of the folders it
  created. The next publish into the same folder removes or replaces exactly the
  recorded files that still hold what mpcompile wrote (and the recorded folders that
  become empty), never anything else: a user's own files and folders, also inside
  ``out_dir/tflite/``, stay. A new file that would land on a path mpcompile did not write
  (or whose content changed since) is refused with an :class:`MpcompileError` before
  anything in ``out_dir`` changes.
* Publishing is as atomic as a folder shared with the user's own files allows: a new
  folder appears with one rename; into an existing folder, previous files are first moved
  aside, new ones renamed in, and any failure moves everything back. SIGINT/SIGTERM are
  held for the few milliseconds of that commit.
* Output-path faults (parent is a file, read-only or full disk, ...) are one-line
  :class:`MpcompileError` messages that name the path and the fix; :func:`check_output_dir`
  finds most of them before any work is done.
* Files and folders follow the process umask (0644/0755 under umask 022), like any tool.

This module imports only the standard library and :mod:`mpcompile.errors`, so that every
floor (``ir.serde`` included) may use its umask helpers.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from mpcompile._version import __version__
from mpcompile.errors import MpcompileError

#: The ownership record inside a published folder.
RECORD = ".mpcompile-files.json"
_RECORD_FORMAT = "mpcompile-files/1"
_STAGING_INSIDE = ".mpcompile-staging."  # staging folder inside an existing out_dir
_OLD_INSIDE = ".mpcompile-old."  # previous files, moved aside while publishing
_PARTIAL = ".partial"

__all__ = [
    "RECORD",
    "check_output_dir",
    "current_umask",
    "dir_mode",
    "file_mode",
    "owned_files",
    "scratch_dir",
    "staging_dir",
]


# ============================================================================ umask
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ≥ 4.7).

    Elsewhere ``os.umask`` must be set to read it: that round trip happens under a lock and
    sets the restrictive 077 meanwhile, so a file another thread creates in that instant
    is never more open than intended.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets from ``open()``: 0o666 minus the umask (0644 under 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir``: 0o777 minus the umask (0755 under 022)."""
    return 0o777 & ~current_umask()


# ============================================================================ errors
_FIXES = {
    errno.ENOSPC: "free some disk space or choose another output folder (-o)",
    errno.EFBIG: "choose an output folder on a file system that allows larger files (-o)",
    errno.EACCES: "choose an output folder you can write (-o) or change its permissions",
    errno.EPERM: "choose an output folder you can write (-o) or change its permissions",
    errno.EROFS: "the file system is read-only: choose another output folder (-o)",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another output folder (-o) or move the file",
    errno.EISDIR: "a folder is in the way: choose another output folder (-o) or move the folder",
    errno.ENAMETOOLONG: "choose a shorter output folder path (-o)",
    errno.EXDEV: "choose an output folder on one file system (-o)",
}
if hasattr(errno, "EDQUOT"):  # not on every OS
    _FIXES[errno.EDQUOT] = "free some space within your disk quota or choose another output folder (-o)"
#: Errors that name no file when they happen (write(), close()): any of them is about the output.
_NAMELESS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _output_error(exc: OSError, path: Path, staging: Path | None = None) -> MpcompileError:
    """A one-line error for an OSError on an output path: the path, what happened, the fix."""
    where = Path(exc.filename) if exc.filename else path
    if staging is not None:
        with contextlib.suppress(ValueError):  # a staged file: name where it was going to
            where = path / Path(os.path.abspath(where)).relative_to(os.path.abspath(staging))
    fix = _FIXES.get(exc.errno or 0, "check the output folder or choose another one (-o)")
    reason = exc.strerror or str(exc)
    return MpcompileError(f"cannot write {where}: {reason}; {fix}")


def _is_output_fault(exc: OSError, *places: Path) -> bool:
    if exc.errno not in _FIXES:
        return False
    if exc.errno in _NAMELESS or not exc.filename:
        return exc.errno in _NAMELESS
    name = os.path.abspath(exc.filename)
    return any(name == str(p) or name.startswith(str(p) + os.sep) for p in map(os.path.abspath, places))


# ============================================================================ preflight
def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse early (``MpcompileError``: the path and the fix) when ``out_dir`` cannot be written.

    Checks that ``out_dir`` is a folder or can be created (no parent is a file), and that a
    small file can be written there (permissions, read-only file system, full disk). Leaves
    nothing behind. Returns ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    if out.is_symlink() and not out.exists():
        raise MpcompileError(f"{out}: is a broken symbolic link; remove it or choose another output folder (-o)")
    if out.exists():
        if not out.is_dir():
            raise MpcompileError(f"{out}: exists and is a file, not a folder; choose another output folder (-o) or move the file")
        where = out
    else:
        where = Path(os.path.abspath(out)).parent
        while not where.exists() and where != where.parent:
            where = where.parent
        if not where.is_dir():
            raise MpcompileError(f"{out}: {where} is a file, not a folder; choose another output folder (-o) or move the file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mpcompile-probe.", dir=where)
    except OSError as exc:
        raise _preflight_error(out, where, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:  # a small file, flushed to the disk: a full disk fails here
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _preflight_error(out, where, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return out


def _preflight_error(out: Path, where: Path, exc: OSError) -> MpcompileError:
    fix = _FIXES.get(exc.errno or 0, "check the output folder or choose another one (-o)")
    reason = exc.strerror or str(exc)
    if where == out:
        return MpcompileError(f"{out}: cannot write in this folder ({reason}); {fix}")
    return MpcompileError(f"{out}: cannot create this folder in {where} ({reason}); {fix}")


# ============================================================================ ownership record
def _stamp(path: Path) -> dict[str, Any]:
    """What identifies a file mpcompile wrote: size and mtime (fast check), SHA-256 (after a copy or touch)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return {"link": os.readlink(path)}
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest() if hasattr(hashlib, "file_digest") else _sha256(fh)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}


def _sha256(fh: Any) -> str:  # Python 3.10
    h = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def _safe_rel(rel: Any) -> PurePosixPath | None:
    """A recorded relative path, or None when it could point outside the folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("", ".", "..") for part in p.parts) or p.as_posix() != rel:
        return None
    return p


def _read_record(out: Path) -> dict[str, Any]:
    try:
        record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"files": {}, "dirs": []}
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        return {"files": {}, "dirs": []}
    files = record.get("files") if isinstance(record.get("files"), dict) else {}
    dirs = record.get("dirs") if isinstance(record.get("dirs"), list) else []
    return {
        "files": {rel: s for rel, s in files.items() if _safe_rel(rel) is not None and isinstance(s, dict)},
        "dirs": [d for d in dirs if _safe_rel(d) is not None],
    }


def _still_ours(out: Path, rel: str, stamp: dict[str, Any]) -> bool:
    """Whether ``out/rel`` still holds exactly what mpcompile wrote there."""
    if isinstance(stamp.get("either"), list):  # the journal of a publish that did not finish: old or new file
        return any(isinstance(s, dict) and _still_ours(out, rel, s) for s in stamp["either"])
    p = _safe_rel(rel)
    if p is None or not _is_real_dir(out, p.parent.as_posix()):
        return False
    path = out.joinpath(*p.parts)
    try:
        st = os.lstat(path)
        if "link" in stamp:
            return stat.S_ISLNK(st.st_mode) and os.readlink(path) == stamp["link"]
        if not stat.S_ISREG(st.st_mode) or st.st_size != stamp.get("size"):
            return False
        if st.st_mtime_ns == stamp.get("mtime_ns"):
            return True
        return "sha256" in stamp and _stamp(path)["sha256"] == stamp["sha256"]  # copied, touched: same bytes
    except OSError:
        return False


def owned_files(out_dir: str | os.PathLike) -> list[str]:
    """The files (relative POSIX paths) in ``out_dir`` that mpcompile wrote and nobody changed since."""
    out = Path(out_dir)
    record = _read_record(out)
    return sorted(rel for rel, stamp in record["files"].items() if _still_ours(out, rel, stamp))


def _record_bytes(files: dict[str, dict[str, Any]], dirs: set[str]) -> bytes:
    record = {
        "format": _RECORD_FORMAT,
        "about": "the files mpcompile wrote into this folder; a later run removes or replaces only these",
        "mpcompile": __version__,
        "files": dict(sorted(files.items())),
        "dirs": sorted(dirs),
    }
    return json.dumps(record, indent=1).encode()


def _write_small(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, with the umask's mode."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, file_mode())
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _scan(staging: Path) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Every file (with its stamp) and folder under ``staging``, as relative POSIX paths."""
    files: dict[str, dict[str, Any]] = {}
    dirs: set[str] = set()
    for root, dirnames, filenames in os.walk(staging):
        base = PurePosixPath(Path(root).relative_to(staging).as_posix())
        for name in dirnames[:]:
            if os.path.islink(os.path.join(root, name)):
                dirnames.remove(name)
                filenames.append(name)
            else:
                dirs.add((base / name).as_posix())
        for name in filenames:
            rel = (base / name).as_posix()
            if rel != RECORD:
                files[rel] = _stamp(Path(root, name))
    return files, dirs


# ============================================================================ staging and publishing
@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike, *, keep: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Build outputs in a hidden staging folder, then publish them into ``out_dir`` only on success.

    The staging folder is a sibling ``.<name>.XXXX.partial`` when ``out_dir`` does not
    exist yet (published with one rename), else ``out_dir/.mpcompile-staging.XXXX.partial``
    (same file system as ``out_dir``, even when it is a mount point). Any exception in the
    ``with`` body removes it and leaves ``out_dir`` as it was; an ``OSError`` about the
    output (full disk, permissions, ...) becomes a one-line ``MpcompileError``.

    ``keep``: files of the previous output that must survive although this run does not
    write them again, e.g. the plan a ``lower`` into the same folder reads.
    """
    out = Path(out_dir)
    existed = out.is_dir()
    staging: Path | None = None
    try:
        if existed:
            staging = Path(tempfile.mkdtemp(prefix=_STAGING_INSIDE, suffix=_PARTIAL, dir=out))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=_PARTIAL, dir=out.parent))
        os.chmod(staging, dir_mode())  # mkdtemp makes 0700; follow the umask like mkdir does
    except OSError as exc:
        if staging is not None:
            _remove_tree(staging)
        raise _output_error(exc, out) from None
    try:
        yield staging
    except OSError as exc:
        _remove_tree(staging)
        if _is_output_fault(exc, out, staging):
            raise _output_error(exc, out, staging) from exc
        raise
    except BaseException:
        _remove_tree(staging)
        raise
    try:
        _publish(staging, out, fresh=not existed, keep=keep)
    except OSError as exc:
        raise _output_error(exc, out, staging) from exc
    finally:
        _remove_tree(staging)


def _publish(staging: Path, out: Path, *, fresh: bool, keep: Iterable[str | os.PathLike] = ()) -> None:
    if fresh and not os.path.lexists(out):
        files, dirs = _scan(staging)
        _write_small(staging / RECORD, _record_bytes(files, dirs))
        try:
            os.rename(staging, out)  # the whole folder appears at once
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            os.unlink(staging / RECORD)  # someone created out_dir meanwhile: merge into it instead
    if not out.is_dir():
        raise MpcompileError(f"{out}: exists and is a file, not a folder; choose another output folder (-o) or move the file")
    _merge(staging, out, keep)


def _at(base: Path, rel: str) -> Path:
    return base.joinpath(*PurePosixPath(rel).parts)


def _merge(staging: Path, out: Path, keep: Iterable[str | os.PathLike] = ()) -> None:
    """Publish ``staging`` into the existing folder ``out``, replacing only what mpcompile wrote there."""
    old = _read_record(out)
    old_dirs = set(old["dirs"])
    ours = {rel for rel, stamp in old["files"].items() if _still_ours(out, rel, stamp)}
    files, dirs = _scan(staging)
    kept = (_inside(out, keep) & ours) - set(files)
    ours -= kept
    in_the_way = _conflicts(out, files, dirs, ours)
    if in_the_way:
        raise _in_the_way_error(out, in_the_way)
    record_path = out / RECORD
    try:
        previous_record: bytes | None = record_path.read_bytes() if record_path.is_file() else None
    except OSError:
        previous_record = None
    aside: Path | None = None
    moved_old: list[str] = []
    created: list[str] = []
    moved_new: list[str] = []
    with _signals_held():
        try:
            # The journal first: should the process die midway, the next run still knows every file it owns.
            journal = {rel: old["files"][rel] for rel in ours | kept} | files
            journal |= {rel: {"either": [old["files"][rel], files[rel]]} for rel in ours & set(files)}
            _write_small(record_path, _record_bytes(journal, old_dirs | {d for d in dirs if not os.path.lexists(_at(out, d))}))
            aside = Path(tempfile.mkdtemp(prefix=_OLD_INSIDE, suffix=_PARTIAL, dir=out))
            for rel in sorted(ours):
                _at(aside, rel).parent.mkdir(parents=True, exist_ok=True)
                os.rename(_at(out, rel), _at(aside, rel))
                moved_old.append(rel)
            for rel in sorted(dirs, key=lambda d: d.count("/")):
                if not os.path.lexists(_at(out, rel)):
                    os.mkdir(_at(out, rel))
                    created.append(rel)
            for rel in sorted(files):
                if os.path.lexists(_at(out, rel)):  # appeared meanwhile (another process): not ours
                    raise MpcompileError(
                        f"{_at(out, rel)}: appeared while mpcompile was publishing; "
                        "move it away or choose another output folder (-o)"
                    )
                os.rename(_at(staging, rel), _at(out, rel))
                moved_new.append(rel)
        except BaseException:
            stuck = _roll_back(staging, out, aside, moved_old, created, moved_new, record_path, previous_record)
            if stuck:
                raise MpcompileError(
                    f"{out}: publishing failed and {len(stuck)} previous file(s) could not be put back; "
                    f"they are in {aside}"
                ) from None
            raise
        # Committed: drop the previous files, and the folders mpcompile made that are empty now.
        _remove_tree(aside)
        for rel in sorted(old_dirs - dirs, key=lambda d: -d.count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(_at(out, rel))  # only when empty: a user's file inside keeps the folder
        mine = {d for d in old_dirs | set(created) if _is_real_dir(out, d)}
        with contextlib.suppress(OSError):  # if this fails the journal (a superset) stays, and is still right
            _write_small(record_path, _record_bytes(files | {rel: old["files"][rel] for rel in kept}, mine))


def _is_real_dir(out: Path, rel: str) -> bool:
    here = out
    for part in PurePosixPath(rel).parts:
        here = here / part
        try:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                return False
        except OSError:
            return False
    return True


def _inside(out: Path, paths: Iterable[str | os.PathLike]) -> set[str]:
    """``paths`` that lie in ``out``, relative to it."""
    found = set()
    for path in paths:
        with contextlib.suppress(ValueError, OSError):
            found.add(Path(path).resolve().relative_to(out.resolve()).as_posix())
    return found


def _in_the_way_error(out: Path, paths: list[str]) -> MpcompileError:
    legacy = ""
    if not os.path.lexists(out / RECORD) and (out / "manifest.json").is_file():
        legacy = (" (this folder has no record of what mpcompile wrote: an older mpcompile made it;"
                  " delete its old outputs if you do not need them)")
    if len(paths) == 1:
        return MpcompileError(
            f"{out / paths[0]}: exists and mpcompile did not write it (or it changed since){legacy}; "
            "move it away or choose another output folder (-o)"
        )
    shown = ", ".join(str(out / p) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
    return MpcompileError(
        f"{out}: {len(paths)} paths that mpcompile did not write (or that changed since) are in the way{legacy}: "
        f"{shown}; move them away or choose another output folder (-o)"
    )


def _conflicts(out: Path, files: dict[str, Any], dirs: set[str], ours: set[str]) -> list[str]:
    """Paths in ``out`` that publishing would have to overwrite although mpcompile did not write them."""
    found: dict[str, None] = {}
    for rel in sorted(set(files) | dirs):
        parts = PurePosixPath(rel).parts
        here = out
        for i, part in enumerate(parts):
            here = here / part
            sub = "/".join(parts[: i + 1])
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                break
            except OSError:
                found[sub] = None
                break
            last = i == len(parts) - 1
            wants_dir = not last or rel in dirs
            if wants_dir and stat.S_ISDIR(st.st_mode):
                continue
            if sub not in ours:
                found[sub] = None
            break
    record = out / RECORD
    if os.path.lexists(record) and not record.is_file():
        found[RECORD] = None
    return list(found)


def _roll_back(
    staging: Path,
    out: Path,
    aside: Path | None,
    moved_old: list[str],
    created: list[str],
    moved_new: list[str],
    record_path: Path,
    previous_record: bytes | None,
) -> list[str]:
    """Undo a failed publish; returns the previous files that could not be put back (left in ``aside``)."""
    for rel in reversed(moved_new):
        with contextlib.suppress(OSError):
            os.rename(_at(out, rel), _at(staging, rel))
    for rel in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(_at(out, rel))
    kept = []
    for rel in reversed(moved_old):
        try:
            os.rename(_at(aside, rel), _at(out, rel))  # type: ignore[arg-type]  # moved_old implies aside
        except OSError:
            kept.append(rel)
    with contextlib.suppress(OSError):
        if previous_record is None:
            os.unlink(record_path)
        else:
            _write_small(record_path, previous_record)
    if not kept and aside is not None:
        _remove_tree(aside)
    return kept


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the duration (milliseconds of renames), then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if sig is None:
            continue
        handler = signal.getsignal(sig)
        if handler is None or handler is signal.SIG_IGN:
            continue  # installed outside Python (cannot be restored), or ignored anyway
        previous[sig] = handler
        signal.signal(sig, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)


def _remove_tree(path: Path) -> None:
    """Remove a folder mpcompile made, even when a runner still holds a file open (Windows)."""
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
    except OSError:
        gc.collect()  # drop runners/sessions nobody references any more, then try once more
        shutil.rmtree(path, ignore_errors=True)


# ============================================================================ scratch
@contextlib.contextmanager
def scratch_dir(prefix: str = "mpcompile-") -> Iterator[Path]:
    """A private temporary work folder in ``$TMPDIR``, always removed on exit (also on errors).

    It stays 0700 (``mkdtemp``): scratch space in a shared temporary folder is nobody
    else's business, and it never outlives the ``with`` block. Close whatever holds files
    inside it (runners, sessions) before the block ends.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        _remove_tree(path)

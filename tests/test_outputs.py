"""Output hygiene: bad input loses nothing, and mpcompile never deletes what it did not write."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import MNIST, MNIST_CALIB, MNIST_EVAL

import mpcompile
from mpcompile import outputs
from mpcompile.errors import MpcompileError

SAMPLES = 16


def compile_into(out: Path, backends=("onnxruntime",), **kw):
    kw.setdefault("samples", SAMPLES)
    return mpcompile.compile(str(MNIST), str(MNIST_CALIB), list(backends), out, progress=False, **kw)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    return {p.relative_to(root).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def leftovers(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.name.endswith(".partial")]


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mpcompile", *map(str, args)], capture_output=True, text=True, **kw)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ============================================================================ ownership
def test_user_folders_and_files_are_kept(tmp_path):
    out = tmp_path / "out"
    (out / "tflite").mkdir(parents=True)
    (out / "tflite" / "notes.txt").write_text("mine")
    (out / "onnxruntime").mkdir()
    (out / "onnxruntime" / "keep.bin").write_bytes(b"\x01\x02")
    (out / "mydata").mkdir()
    (out / "mydata" / "x.npy").write_bytes(b"data")
    (out / "README").write_text("my notes")
    mine = {k: v for k, v in tree(out).items()}

    compile_into(out, ("onnxruntime", "tflite"))
    after = tree(out)
    assert all(after[k] == v for k, v in mine.items())  # every user path, with its content
    assert (out / "tflite" / "mnist_cnn.tflite").is_file()

    compile_into(out, ("onnxruntime",))  # tflite's artifact goes; the user's tflite/ folder and notes stay
    after = tree(out)
    assert all(after[k] == v for k, v in mine.items())
    assert not (out / "tflite" / "mnist_cnn.tflite").exists()
    assert not leftovers(tmp_path)


def test_recompile_leaves_no_stale_files(tmp_path):
    out = tmp_path / "out"
    compile_into(out, ("onnxruntime", "tflite"), conform=True, eval_data=str(MNIST_EVAL))
    assert (out / "tflite").is_dir() and (out / "conformance.html").is_file()

    result = compile_into(out, ("onnxruntime",), conform=False)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {"plan.onnx", "manifest.json", "onnxruntime/mnist_cnn.qdq.onnx", outputs.RECORD}
    assert not (out / "tflite").exists()  # mpcompile made that folder: gone once empty
    assert outputs.owned_files(out) == sorted(files - {outputs.RECORD})
    assert set(result.manifest["backends"]) == {"onnxruntime"}
    assert not leftovers(tmp_path)


def test_lower_into_fresh_and_existing_folder(tmp_path):
    plan = tmp_path / "plan.onnx"
    mpcompile.save_plan(mpcompile.calibrate(str(MNIST), str(MNIST_CALIB), samples=SAMPLES, progress=False).plan, plan)
    out = tmp_path / "lowered"
    mpcompile.lower(str(plan), ["onnxruntime", "tflite"], out)
    (out / "tflite" / "notes.txt").write_text("mine")
    results = mpcompile.lower(str(plan), ["onnxruntime"], out)
    assert results["onnxruntime"].artifact.path.is_file()
    assert (out / "tflite" / "notes.txt").read_text() == "mine"
    assert not list((out / "tflite").glob("*.tflite"))
    assert outputs.owned_files(out) == ["manifest.json", results["onnxruntime"].artifact.path.relative_to(out).as_posix()]


def test_keep_spares_a_file_of_the_previous_output(tmp_path):
    """The hook for ``lower out/plan.onnx -o out``: the plan it reads must not go as a stale file."""
    out = tmp_path / "out"
    compile_into(out)
    with outputs.staging_dir(out, keep=[out / "plan.onnx"]) as staging:
        (staging / "other.txt").write_text("new")
    assert (out / "plan.onnx").is_file() and not (out / "manifest.json").exists()
    assert outputs.owned_files(out) == ["other.txt", "plan.onnx"]


def test_user_file_on_an_artifact_path_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    (out / "onnxruntime").mkdir(parents=True)
    (out / "onnxruntime" / "mnist_cnn.qdq.onnx").write_bytes(b"my own model")
    (out / "other.txt").write_text("x")
    before = tree(out)
    with pytest.raises(MpcompileError) as info:
        compile_into(out)
    message = str(info.value)
    assert str(out / "onnxruntime" / "mnist_cnn.qdq.onnx") in message and "-o" in message and "\n" not in message
    assert tree(out) == before  # nothing in out changed
    assert not leftovers(tmp_path)


def test_file_changed_since_mpcompile_wrote_it_is_refused_and_kept(tmp_path):
    out = tmp_path / "out"
    compile_into(out)
    (out / "manifest.json").write_text('{"edited": "by the user"}')
    before = tree(out)
    with pytest.raises(MpcompileError, match="manifest.json"):
        compile_into(out)
    assert tree(out) == before
    # The same bytes with a new mtime (a copy, a touch) are still mpcompile's.
    (out / "manifest.json").unlink()
    os.utime(out / "plan.onnx", ns=(1, 1))
    compile_into(out)
    assert (out / "manifest.json").is_file()


def test_record_cannot_reach_outside_the_folder(tmp_path):
    out = tmp_path / "out"
    compile_into(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    record = json.loads((out / outputs.RECORD).read_text())
    record["files"]["../victim.txt"] = {"size": victim.stat().st_size, "mtime_ns": victim.stat().st_mtime_ns}
    (out / outputs.RECORD).write_text(json.dumps(record))
    compile_into(out)
    assert victim.read_text() == "keep me"


def test_failed_publish_restores_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    compile_into(out, ("onnxruntime", "tflite"))
    (out / "mine.txt").write_text("mine")
    before = tree(out)
    real_rename = os.rename
    moved_in = []

    def flaky(src, dst, *a, **kw):
        if ".mpcompile-staging." in str(src) and str(dst).startswith(str(out)):
            moved_in.append(dst)
            if len(moved_in) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(os, "rename", flaky)
    with pytest.raises(MpcompileError, match="No space left on device.*-o"):
        compile_into(out, ("onnxruntime",))
    monkeypatch.undo()
    assert tree(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".mpcompile-") and p.name != outputs.RECORD]


@pytest.mark.parametrize("phase", ["moving-old-aside", "moving-new-in"])
def test_publish_that_died_midway_is_cleaned_up_by_the_next_run(tmp_path, monkeypatch, phase):
    """The record is written as a journal first: after a crash midway, the next run still knows its files."""
    out = tmp_path / "out"
    compile_into(out, ("onnxruntime", "tflite"), conform=True, eval_data=str(MNIST_EVAL))
    (out / "mine.txt").write_text("mine")
    real_rename = os.rename
    moved_in = []

    class Crash(BaseException):
        pass

    def crashing(src, dst, *a, **kw):
        if phase == "moving-old-aside" and ".mpcompile-old." in str(dst):
            raise Crash
        if ".mpcompile-staging." in str(src) and str(dst).startswith(str(out)):
            moved_in.append(dst)
            if len(moved_in) == 2:
                raise Crash
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(os, "rename", crashing)
    monkeypatch.setattr(outputs, "_roll_back", lambda *a, **kw: [])  # as if the process died here
    with pytest.raises(Crash):
        compile_into(out, ("onnxruntime",))
    monkeypatch.undo()
    compile_into(out, ("onnxruntime",))  # no refusal: the half-published files are known to be mpcompile's
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".mpcompile-old." not in str(p)}
    assert files == {"plan.onnx", "manifest.json", "onnxruntime/mnist_cnn.qdq.onnx", "mine.txt", outputs.RECORD}


def test_signals_are_held_while_publishing(tmp_path, monkeypatch):
    # Python's own Ctrl-C handler for the duration: a library an earlier test started (the whole suite in one
    # process: Ray, OpenVINO) may have left another one in place, which _signals_held rightly delivers to.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_while_publishing(tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt_while_publishing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    compile_into(out, ("onnxruntime", "tflite"))
    real_rename = os.rename
    sent = []

    def interrupted(src, dst, *a, **kw):
        if ".mpcompile-staging." in str(src) and not sent:
            sent.append(1)
            signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the renames
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compile_into(out, ("onnxruntime",))
    monkeypatch.undo()
    assert sent  # the interrupt came after the publish had completed: the new output is whole
    assert outputs.owned_files(out) == ["manifest.json", "onnxruntime/mnist_cnn.qdq.onnx", "plan.onnx"]
    assert not (out / "tflite").exists() and not leftovers(tmp_path)


def test_disk_full_while_building_is_one_line_and_keeps_the_old_output(tmp_path, monkeypatch):
    from mpcompile.ir import serde

    out = tmp_path / "out"
    compile_into(out)
    before = tree(out)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(serde, "write_atomic", full)
    with pytest.raises(MpcompileError) as info:
        compile_into(out)
    assert "No space left on device" in str(info.value) and str(out) in str(info.value)
    assert ".partial" not in str(info.value)
    assert tree(out) == before and not leftovers(tmp_path)


# ============================================================================ temporary folders
def test_conform_leaves_no_temp_folder(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    report = mpcompile.conform(str(MNIST), ["onnxruntime"], str(MNIST_EVAL), calibration_data=str(MNIST_CALIB),
                               samples=SAMPLES)
    assert report.passed
    assert list(scratch.iterdir()) == []


def test_scratch_dir_is_removed_on_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError), outputs.scratch_dir("x-") as work:
        (work / "f").write_text("x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


# ============================================================================ modes
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_modes_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        assert outputs.current_umask() == umask
        out = tmp_path / "out"
        compile_into(out)  # a new folder (one rename) ...
        (out / "mine").mkdir()
        compile_into(out, ("onnxruntime", "tflite"))  # ... and an existing one (merge, new tflite/ folder)
        plan = tmp_path / "plan.onnx"
        mpcompile.save_plan(mpcompile.load(out / "plan.onnx"), plan)  # serde.write_atomic
    finally:
        os.umask(previous)
    paths = [out, *out.rglob("*"), plan]
    for p in paths:
        if p.name == "mine":
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(mode))


# ============================================================================ preflight and CLI
def test_out_dir_under_a_file_fails_before_calibrating(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    called = []

    def data():
        called.append(1)
        raise AssertionError("calibration must not start")

    with pytest.raises(MpcompileError, match="afile is a file"):
        mpcompile.compile(str(MNIST), data, ["onnxruntime"], blocker / "out", progress=False)
    assert not called
    with pytest.raises(MpcompileError, match="exists and is a file"):
        mpcompile.compile(str(MNIST), data, ["onnxruntime"], blocker, progress=False)
    with pytest.raises(MpcompileError, match="afile is a file"):
        mpcompile.lower(str(MNIST), ["onnxruntime"], blocker / "a" / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("code, fix", [(errno.EACCES, "you can write"), (errno.EROFS, "read-only"), (errno.ENOSPC, "disk space")])
def test_preflight_names_the_path_and_the_fix(tmp_path, monkeypatch, code, fix):
    def failing(*a, **kw):
        raise OSError(code, os.strerror(code), str(tmp_path / "probe"))

    monkeypatch.setattr(tempfile, "mkstemp", failing)
    with pytest.raises(MpcompileError) as info:
        outputs.check_output_dir(tmp_path / "out")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "out")) and fix in message and "-o" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_cli_out_dir_whose_parent_is_a_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = run_cli("compile", MNIST, "--backend", "onnxruntime", "-o", blocker / "out", "--quiet")
    assert_one_line_error(result, str(blocker), "-o")
    assert "calibration" not in result.stderr.lower().replace("using calibration data", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_cli_read_only_parent(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("this user can write into a read-only folder (root)")
        result = run_cli("compile", MNIST, "--backend", "onnxruntime", "-o", parent / "out", "--quiet")
        assert_one_line_error(result, str(parent / "out"), "-o")
        lowered = run_cli("lower", MNIST, "--backend", "onnxruntime", "-o", parent / "out")
        assert_one_line_error(lowered, str(parent / "out"))
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


SLOW_DATA = textwrap.dedent(
    """
    import os, time
    from pathlib import Path

    import numpy as np

    def data():
        Path(os.environ["MPCOMPILE_TEST_MARKER"]).write_text("running")
        time.sleep(120)  # SIGTERM arrives meanwhile
        yield {"input": np.zeros((1, 1, 28, 28), np.float32)}
    """
)


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "existing-folder"])
def test_sigterm_during_compile_leaves_no_staging_folder(tmp_path, existing):
    out = tmp_path / "out"
    if existing:
        compile_into(out)
        (out / "mine.txt").write_text("mine")
    before = tree(out) if existing else None
    (tmp_path / "slow.py").write_text(SLOW_DATA)
    marker = tmp_path / "marker"
    env = dict(os.environ, MPCOMPILE_TEST_MARKER=str(marker))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpcompile", "compile", str(MNIST), "--data", str(MNIST_CALIB), "--samples", str(SAMPLES),
         "--backend", "onnxruntime", "--eval-data", f"{tmp_path / 'slow.py'}:data", "-o", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()
        assert leftovers(tmp_path), "the conformance data is read while the staging folder exists"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not leftovers(tmp_path)
    if existing:
        assert tree(out) == before
    else:
        assert not out.exists()

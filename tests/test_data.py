"""Tests of the calibration/evaluation data loaders (mpcompile.data)."""

from __future__ import annotations

import gc
import sys
import textwrap
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mpcompile.data import (
    ArrayDirectoryDataset,
    CallableDataset,
    ImageFolderDataset,
    ImagePreprocess,
    InputSpec,
    NpyDataset,
    NpzDataset,
    effective_batch_size,
    open_dataset,
)
from mpcompile.errors import DataError, MpcompileError

IMAGES = InputSpec("images", ("batch", 3, 8, 8), np.float32)


def data_error(fn, *args, **kwargs) -> str:
    """Run ``fn`` (draining it if it returns an iterator) and return the DataError message."""
    with pytest.raises(DataError) as info:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    message = str(info.value)
    assert "\n" not in message, "user-facing messages are one line"
    assert isinstance(info.value, MpcompileError)
    return message


def collect(dataset, batch_size, limit=None, key=None):
    batches = list(dataset.batches(batch_size, limit))
    key = key or dataset.input_names[0]
    return batches, [len(b[key]) for b in batches]


# ---------------------------------------------------------------------------- InputSpec


def test_input_spec_normalizes_and_displays():
    spec = InputSpec("x", ["batch", 3, None, -1], "float32")
    assert spec.shape == ("batch", 3, None, -1)
    assert spec.dtype == np.dtype(np.float32)
    assert spec.display_shape() == "(batch, 3, ?, ?)"
    assert InputSpec("y", (5,), np.int64).display_shape() == "(5,)"
    assert hash(spec) == hash(InputSpec("x", ("batch", 3, None, -1), np.float32))


# ---------------------------------------------------------------------------- npz


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_batches_partial_batch_limit_and_extras(tmp_path, compressed):
    x = np.random.default_rng(0).random((10, 3, 8, 8))  # float64 -> cast to float32 silently
    labels = np.arange(10, dtype=np.int64)
    path = tmp_path / "data.npz"
    (np.savez_compressed if compressed else np.savez)(path, images=x, labels=labels)

    ds = open_dataset(path, [IMAGES])
    assert isinstance(ds, NpzDataset)
    assert len(ds) == ds.num_samples == 10
    assert ds.extra_names == ("labels",)
    assert str(path) in ds.source

    batches, sizes = collect(ds, 4)
    assert sizes == [4, 4, 2]
    got = np.concatenate([b["images"] for b in batches])
    assert got.dtype == np.float32
    assert all(b["images"].flags.c_contiguous for b in batches)
    np.testing.assert_array_equal(got, x.astype(np.float32))
    assert set(batches[0]) == {"images"}  # extras are not fed to the model

    _, sizes = collect(ds, 4, limit=5)
    assert sizes == [4, 1]
    _, sizes = collect(ds, 3, limit=100)
    assert sizes == [3, 3, 3, 1]
    _, sizes = collect(ds, 64)
    assert sizes == [10]

    np.testing.assert_array_equal(ds.extra_arrays()["labels"], labels)
    np.testing.assert_array_equal(ds.extra_arrays(limit=3)["labels"], labels[:3])
    np.testing.assert_array_equal(ds.extra["labels"], labels)
    # a second pass gives the same data
    again = np.concatenate([b["images"] for b in ds.batches(7)])
    np.testing.assert_array_equal(again, got)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_fortran_order_and_multiple_inputs(tmp_path, compressed):
    rng = np.random.default_rng(1)
    ids = np.asfortranarray(rng.integers(0, 1000, (7, 5), dtype=np.int32))
    mask = rng.integers(0, 2, (7, 5)).astype(bool)
    path = tmp_path / "text.npz"
    (np.savez_compressed if compressed else np.savez)(path, input_ids=ids, attention_mask=mask)
    inputs = [
        InputSpec("input_ids", ("batch", "seq"), np.int64),
        InputSpec("attention_mask", ("batch", "seq"), np.int64),
    ]
    ds = open_dataset(path, inputs)
    batches, sizes = collect(ds, 3)
    assert sizes == [3, 3, 1]
    assert batches[0]["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b["input_ids"] for b in batches]), ids)
    np.testing.assert_array_equal(np.concatenate([b["attention_mask"] for b in batches]), mask.astype(np.int64))
    assert ds.extra_names == ()
    assert ds.extra_arrays() == {}


def test_npz_missing_input_names_input_and_keys_found(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.zeros((2, 3, 8, 8), np.float32), labels=np.zeros(2))
    msg = data_error(open_dataset, path, [IMAGES])
    assert "'images'" in msg and "'pixels'" in msg and "'labels'" in msg and str(path) in msg
    assert "np.savez" in msg


def test_npz_different_sample_counts(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, a=np.zeros((4, 2), np.float32), b=np.zeros((5, 2), np.float32))
    inputs = [InputSpec("a", ("n", 2), np.float32), InputSpec("b", ("n", 2), np.float32)]
    msg = data_error(open_dataset, path, inputs)
    assert "different numbers of samples" in msg and "'a': 4" in msg and "'b': 5" in msg and str(path) in msg


def test_npz_empty_and_zero_rows(tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    msg = data_error(open_dataset, empty, [IMAGES])
    assert "contains no samples" in msg and str(empty) in msg

    zero = tmp_path / "zero.npz"
    np.savez(zero, images=np.zeros((0, 3, 8, 8), np.float32))
    msg = data_error(open_dataset, zero, [IMAGES])
    assert "contains no samples" in msg and str(zero) in msg


def test_npz_corrupt_truncated_and_missing_files(tmp_path):
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"this is not a zip archive at all")
    msg = data_error(open_dataset, corrupt, [IMAGES])
    assert str(corrupt) in msg and "npz" in msg

    good = tmp_path / "good.npz"
    np.savez(good, images=np.ones((20, 3, 8, 8), np.float32))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    msg = data_error(open_dataset, truncated, [IMAGES])
    assert str(truncated) in msg

    bad_member = tmp_path / "badmember.npz"
    with zipfile.ZipFile(bad_member, "w") as zf:
        zf.writestr("images.npy", b"not an npy header")
    msg = data_error(open_dataset, bad_member, [IMAGES])
    assert str(bad_member) in msg and "images.npy" in msg and ".npy" in msg

    missing = tmp_path / "nope.npz"
    msg = data_error(open_dataset, missing, [IMAGES])
    assert str(missing) in msg and "not found" in msg

    weird = tmp_path / "data.csv"
    weird.write_text("1,2,3\n")
    msg = data_error(open_dataset, weird, [IMAGES])
    assert str(weird) in msg and ".npz" in msg


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, images=np.array([object(), object()], dtype=object))
    msg = data_error(open_dataset, path, [IMAGES])
    assert "Python objects" in msg and str(path) in msg


# ---------------------------------------------------------------------------- shapes and hints


def test_nhwc_data_for_nchw_model_hint(tmp_path):
    path = tmp_path / "nhwc.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 3), np.float32))
    msg = data_error(open_dataset, path, [IMAGES])
    assert "'images'" in msg and "(batch, 3, 8, 8)" in msg and "(4, 8, 8, 3)" in msg
    assert "looks like NHWC data for an NCHW model" in msg and "transpose(0, 3, 1, 2)" in msg

    nhwc_model = InputSpec("images", ("batch", 8, 8, 3), np.float32)
    path2 = tmp_path / "nchw.npz"
    np.savez(path2, images=np.zeros((4, 3, 8, 8), np.float32))
    msg = data_error(open_dataset, path2, [nhwc_model])
    assert "looks like NCHW data for an NHWC model" in msg and "transpose(0, 2, 3, 1)" in msg


def test_rank_and_static_dim_hints(tmp_path):
    gray = InputSpec("x", ("N", 1, 28, 28), np.float32)
    path = tmp_path / "g.npy"
    np.save(path, np.zeros((5, 28, 28), np.float32))
    msg = data_error(open_dataset, path, [gray])
    assert "'x'" in msg and "(N, 1, 28, 28)" in msg and "(5, 28, 28)" in msg and "np.expand_dims(x, axis=1)" in msg

    np.save(path, np.zeros((5, 1, 1, 28, 28), np.float32))
    msg = data_error(open_dataset, path, [gray])
    assert "wrong rank" in msg and "np.squeeze(x, axis=1)" in msg

    np.save(path, np.zeros((5, 1, 32, 32), np.float32))
    msg = data_error(open_dataset, path, [gray])
    assert "(5, 1, 32, 32)" in msg and "dim 2=28" in msg and "dim 3=28" in msg

    np.save(path, np.zeros((5, 2), np.float32))
    msg = data_error(open_dataset, path, [gray])
    assert "wrong rank" in msg and "(N, 1, 28, 28)" in msg


def test_single_sample_without_sample_axis(tmp_path):
    path = tmp_path / "one.npy"
    x = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    np.save(path, x)
    ds = open_dataset(path, [IMAGES])
    assert isinstance(ds, NpyDataset) and len(ds) == 1
    (batch,) = ds.batches(8)
    np.testing.assert_array_equal(batch["images"], x[None])


# ---------------------------------------------------------------------------- dtypes


def _feed(tmp_path, data, spec):
    path = tmp_path / "d.npy"
    np.save(path, data)
    ds = open_dataset(path, [spec])
    return np.concatenate([b[spec.name] for b in ds.batches(4)])


def test_dtype_casts_that_are_allowed(tmp_path):
    f32 = InputSpec("x", ("n", 2), np.float32)
    u8 = np.array([[0, 255], [7, 128]], np.uint8)
    out = _feed(tmp_path, u8, f32)
    assert out.dtype == np.float32 and out.tolist() == [[0.0, 255.0], [7.0, 128.0]]

    ok64 = np.array([[2**24, -(2**24)], [2**30, 3]], np.int64)  # all exactly representable in float32
    assert _feed(tmp_path, ok64, f32).tolist() == ok64.tolist()

    bools = np.array([[True, False], [False, True]])
    assert _feed(tmp_path, bools, f32).tolist() == [[1.0, 0.0], [0.0, 1.0]]

    i64 = InputSpec("ids", ("n", 2), np.int64)
    assert _feed(tmp_path, np.array([[1, 2], [3, 4]], np.int32), i64).dtype == np.int64
    i32 = InputSpec("ids", ("n", 2), np.int32)
    assert _feed(tmp_path, np.array([[1, 2], [3, 2**31 - 1]], np.int64), i32).dtype == np.int32

    b = InputSpec("m", ("n", 2), np.bool_)
    assert _feed(tmp_path, np.array([[0, 1], [1, 1]], np.int64), b).dtype == np.bool_

    f16 = InputSpec("h", ("n", 2), np.float16)
    assert _feed(tmp_path, np.array([[0.5, 1.5]], np.float64), f16).dtype == np.float16


def test_dtype_errors_name_both_dtypes(tmp_path):
    i64 = InputSpec("ids", ("n", 2), np.int64)
    msg = data_error(_feed, tmp_path, np.zeros((2, 2), np.float32), i64)
    assert "'ids'" in msg and "int64" in msg and "float32" in msg and "np.rint" in msg

    f32 = InputSpec("x", ("n", 2), np.float32)
    msg = data_error(_feed, tmp_path, np.array([[2**24 + 1, 0]], np.int64), f32)
    assert "'x'" in msg and "float32" in msg and "int64" in msg and "exactly" in msg

    i32 = InputSpec("ids", ("n", 2), np.int32)
    msg = data_error(_feed, tmp_path, np.array([[2**40, 0]], np.int64), i32)
    assert "'ids'" in msg and "int32" in msg and "int64" in msg and "range" in msg

    b = InputSpec("m", ("n", 2), np.bool_)
    msg = data_error(_feed, tmp_path, np.array([[0, 2]], np.int64), b)
    assert "'m'" in msg and "bool" in msg and "0 and 1" in msg

    msg = data_error(_feed, tmp_path, np.array([["a", "b"]]), f32)
    assert "'x'" in msg and "not numeric" in msg

    msg = data_error(_feed, tmp_path, np.array([[np.nan, 1.0]], np.float32), f32)
    assert "'x'" in msg and "NaN or Inf" in msg

    msg = data_error(_feed, tmp_path, np.array([[1e300, 1.0]]), f32)  # overflows float32
    assert "NaN or Inf" in msg and "float64" in msg


# ---------------------------------------------------------------------------- batch dims


def test_effective_batch_size():
    assert effective_batch_size([IMAGES], 32) == 32
    fixed1 = InputSpec("images", (1, 3, 8, 8), np.float32)
    assert effective_batch_size([fixed1], 32) == 1
    assert effective_batch_size([fixed1, InputSpec("m", ("batch", 4), np.float32)], 32) == 1
    assert effective_batch_size([InputSpec("images", (4, 3, 8, 8), np.float32)], 32) == 4
    msg = data_error(effective_batch_size, [fixed1, InputSpec("b", (2, 3), np.float32)], 8)
    assert "'images' has 1" in msg and "'b' has 2" in msg
    msg = data_error(effective_batch_size, [IMAGES], 0)
    assert "batch size" in msg and "0" in msg


def test_static_batch_one_feeds_one_sample_at_a_time(tmp_path):
    path = tmp_path / "d.npz"
    x = np.random.default_rng(2).random((5, 3, 8, 8)).astype(np.float32)
    np.savez(path, images=x)
    ds = open_dataset(path, [InputSpec("images", (1, 3, 8, 8), np.float32)])
    assert ds.effective_batch_size(16) == 1
    batches, sizes = collect(ds, 16)
    assert sizes == [1] * 5
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in batches]), x)
    _, sizes = collect(ds, 16, limit=2)
    assert sizes == [1, 1]


def test_static_batch_k_drops_final_partial_batch(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((10, 3, 8, 8), np.float32))
    ds = open_dataset(path, [InputSpec("images", (4, 3, 8, 8), np.float32)])
    with pytest.warns(UserWarning, match="last 2 sample"):
        _, sizes = collect(ds, 1)
    assert sizes == [4, 4]


def test_bad_batch_size_and_limit(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((3, 3, 8, 8), np.float32))
    ds = open_dataset(path, [IMAGES])
    assert "batch size" in data_error(ds.batches, 0)
    assert "sample limit" in data_error(ds.batches, 2, 0)
    assert "sample limit" in data_error(ds.batches, 2, -3)


# ---------------------------------------------------------------------------- lazy loading


def _rss_anon_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def test_large_uncompressed_npz_is_memory_mapped(tmp_path):
    rows, cols = 12_500, 1_000  # 50 MB of float32
    path = tmp_path / "big.npz"
    big = np.empty((rows, cols), np.float32)
    big[:] = np.arange(rows, dtype=np.float32)[:, None]
    np.savez(path, x=big, labels=np.arange(rows))
    del big
    gc.collect()
    spec = InputSpec("x", ("batch", cols), np.float32)

    rss_before = _rss_anon_kib()
    rss_peak = rss_before
    tracemalloc.start()
    try:
        ds = open_dataset(path, [spec])
        count, checksum = 0, 0.0
        for batch in ds.batches(250):
            x = batch["x"]
            assert x.dtype == np.float32
            checksum += float(x[:, 0].sum())
            count += len(x)
            if rss_before is not None:
                rss_peak = max(rss_peak, _rss_anon_kib())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert checksum == float(np.arange(rows, dtype=np.float64).sum())
    # one batch is 1 MB; loading the member would cost 50 MB
    assert peak < 8 * 2**20, f"peak numpy/python allocation {peak / 2**20:.1f} MiB"
    if rss_before is not None:
        assert rss_peak - rss_before < 25 * 1024, "anonymous RSS grew by the size of the data"


def test_compressed_npz_is_streamed(tmp_path):
    rows, cols = 5_000, 1_000  # 20 MB of float32, compresses to almost nothing
    path = tmp_path / "big_c.npz"
    np.savez_compressed(path, x=np.zeros((rows, cols), np.float32))
    gc.collect()
    spec = InputSpec("x", ("batch", cols), np.float32)
    tracemalloc.start()
    try:
        ds = open_dataset(path, [spec])
        count = sum(len(b["x"]) for b in ds.batches(100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < 6 * 2**20, f"peak allocation {peak / 2**20:.1f} MiB for 0.4 MB batches"


# ---------------------------------------------------------------------------- directories of arrays


def test_directory_of_npz_samples_and_batches(tmp_path):
    root = tmp_path / "samples"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    a = rng.random((3, 8, 8)).astype(np.float32)  # one sample, no sample axis
    b = rng.random((2, 3, 8, 8)).astype(np.float32)  # two samples
    c = rng.random((3, 8, 8)).astype(np.float32)
    np.savez(root / "a.npz", images=a, label=np.int64(1))
    np.savez(root / "b.npz", images=b, label=np.array([2, 3]))
    np.savez_compressed(root / "sub" / "c.npz", images=c, label=np.int64(4))
    (root / "notes.txt").write_text("ignored")

    ds = open_dataset(root, [IMAGES])
    assert isinstance(ds, ArrayDirectoryDataset)
    assert len(ds) == 4 and ds.extra_names == ("label",)
    batches, sizes = collect(ds, 3)
    assert sizes == [3, 1]
    expected = np.concatenate([a[None], b, c[None]])  # sorted: a.npz, b.npz, sub/c.npz
    np.testing.assert_array_equal(np.concatenate([x["images"] for x in batches]), expected)
    np.testing.assert_array_equal(ds.extra_arrays()["label"], [1, 2, 3, 4])
    np.testing.assert_array_equal(ds.extra_arrays(limit=2)["label"], [1, 2])
    _, sizes = collect(ds, 2, limit=3)
    assert sizes == [2, 1]


def test_directory_of_npy_files_sorted(tmp_path):
    root = tmp_path / "npy"
    root.mkdir()
    for i in (2, 0, 1):
        np.save(root / f"s{i}.npy", np.full((3, 8, 8), i, np.float64))
    ds = open_dataset(root, [IMAGES])
    batches, sizes = collect(ds, 2)
    assert sizes == [2, 1]
    got = np.concatenate([b["images"] for b in batches])
    assert got.dtype == np.float32 and got[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]


def test_directory_errors_name_the_file(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    np.savez(root / "a.npz", images=np.zeros((3, 8, 8), np.float32))
    np.savez(root / "b.npz", pixels=np.zeros((3, 8, 8), np.float32))
    msg = data_error(open_dataset, root, [IMAGES])
    assert "b.npz" in msg and "'images'" in msg and "'pixels'" in msg

    (root / "b.npz").unlink()
    np.savez(root / "c.npz", images=np.zeros((8, 8, 3), np.float32))
    msg = data_error(open_dataset, root, [IMAGES])
    assert "c.npz" in msg and "HWC data for a CHW model" in msg and "transpose(2, 0, 1)" in msg

    (root / "c.npz").unlink()
    inputs = [IMAGES, InputSpec("m", ("batch", 2), np.float32)]
    np.savez(root / "a.npz", images=np.zeros((3, 8, 8), np.float32), m=np.zeros((4, 2), np.float32))
    msg = data_error(open_dataset, root, inputs)
    assert "a.npz" in msg and "sample axis" in msg

    np.savez(root / "a.npz", images=np.zeros((3, 8, 8), np.float32), label=np.int64(0))
    np.savez(root / "b.npz", images=np.zeros((3, 8, 8), np.float32))
    ds = open_dataset(root, [IMAGES])
    msg = data_error(ds.extra_arrays)
    assert "'label'" in msg and "b.npz" in msg

    np.save(root / "z.npy", np.zeros((3, 8, 8), np.float32))
    multi = [IMAGES, InputSpec("m", ("batch", 2), np.float32)]
    (root / "b.npz").unlink()
    np.savez(root / "a.npz", images=np.zeros((3, 8, 8), np.float32), m=np.zeros(2, np.float32))
    msg = data_error(open_dataset, root, multi)
    assert "z.npy" in msg and "single-input" in msg


def test_empty_and_mixed_directories(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    msg = data_error(open_dataset, empty, [IMAGES])
    assert "contains no samples" in msg and str(empty) in msg

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", np.zeros((3, 8, 8), np.float32))
    _png(mixed / "b.png", np.zeros((8, 8, 3), np.uint8))
    msg = data_error(open_dataset, mixed, [IMAGES])
    assert str(mixed) in msg and "a.npy" in msg and "b.png" in msg


def test_npy_needs_single_input_model(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((2, 3, 8, 8), np.float32))
    msg = data_error(open_dataset, path, [IMAGES, InputSpec("mask", ("batch", 2), np.float32)])
    assert str(path) in msg and "'images'" in msg and "'mask'" in msg and "np.savez" in msg


def test_dynamic_dims_that_differ_cannot_be_batched(tmp_path):
    root = tmp_path / "seq"
    root.mkdir()
    np.save(root / "a.npy", np.zeros(5, np.int64))
    np.save(root / "b.npy", np.zeros(7, np.int64))
    ds = open_dataset(root, [InputSpec("ids", ("batch", "seq"), np.int64)])
    _, sizes = collect(ds, 1)
    assert sizes == [1, 1]
    msg = data_error(ds.batches, 2)
    assert "'ids'" in msg and "(5,)" in msg and "(7,)" in msg and "batch size 1" in msg


# ---------------------------------------------------------------------------- images


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def test_image_preprocess_parse():
    pre = ImagePreprocess.parse(
        "resize=256,crop=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=NCHW,order=RGB"
    )
    assert pre.resize == 256 and pre.center_crop == 224
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert pre.layout == "NCHW" and pre.channel_order == "RGB"
    assert pre.output_size() == (224, 224)
    pre = ImagePreprocess.parse("resize=240x320, order=bgr, scale=1/127.5, dtype=float32, gray=false")
    assert pre.resize == (240, 320) and pre.channel_order == "BGR" and pre.scale == pytest.approx(1 / 127.5)
    assert pre.grayscale is False and pre.dtype == "float32"
    assert ImagePreprocess.parse("") == ImagePreprocess()

    msg = data_error(ImagePreprocess.parse, "resize=256,size=224")
    assert "'size'" in msg and "valid options" in msg and "crop" in msg
    assert "resize" in data_error(ImagePreprocess.parse, "resize=big")
    assert "mean" in data_error(ImagePreprocess.parse, "mean=a:b:c")
    assert "layout" in data_error(ImagePreprocess.parse, "layout=NCDHW")
    assert "std" in data_error(ImagePreprocess.parse, "std=0")
    assert "dtype" in data_error(ImagePreprocess.parse, "dtype=int16")
    assert "mean/std/scale" in data_error(ImagePreprocess.parse, "dtype=uint8,mean=0.5")


def test_image_folder_nchw_normalization_and_labels(tmp_path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[..., 2] = 51
    _png(root / "dog" / "1.png", blue)
    _png(root / "cat" / "2.png", red)
    _png(root / "cat" / "1.png", blue)

    pre = "mean=0.5:0.5:0.5,std=0.5:0.25:0.5"
    ds = open_dataset(root, [IMAGES], preprocess=pre)
    assert isinstance(ds, ImageFolderDataset)
    assert len(ds) == 3 and ds.class_names == ("cat", "dog")
    np.testing.assert_array_equal(ds.extra_arrays()["labels"], [0, 0, 1])  # cat/1, cat/2, dog/1
    batches, sizes = collect(ds, 2)
    assert sizes == [2, 1]
    x = np.concatenate([b["images"] for b in batches])
    assert x.shape == (3, 3, 8, 8) and x.dtype == np.float32
    # cat/1.png is blue (0, 0, 51): ((0, 0, 0.2) - 0.5) / std
    np.testing.assert_allclose(x[0, :, 0, 0], [-1.0, -2.0, -0.6], rtol=1e-6)
    # cat/2.png is red
    np.testing.assert_allclose(x[1, :, 3, 3], [1.0, -2.0, -1.0], rtol=1e-6)
    _, sizes = collect(ds, 8, limit=2)
    assert sizes == [2]
    np.testing.assert_array_equal(ds.extra_arrays(limit=2)["labels"], [0, 0])


def test_image_folder_nhwc_bgr_uint8_crop_and_resize(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    pixels = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)
    _png(root / "a.png", pixels)
    nhwc_u8 = InputSpec("input", (1, 4, 4, 3), np.uint8)
    ds = open_dataset(root, [nhwc_u8], preprocess=ImagePreprocess(center_crop=4, channel_order="BGR"))
    assert ds.layout == "NHWC" and ds.dtype == "uint8"  # both taken from the model
    (batch,) = ds.batches(8)
    np.testing.assert_array_equal(batch["input"][0], pixels[1:5, 1:5, ::-1])
    assert ds.extra_arrays() == {}

    # int8 input: pixel - 128
    nhwc_i8 = InputSpec("input", ("n", 4, 4, 3), np.int8)
    (batch,) = open_dataset(root, [nhwc_i8], preprocess="crop=4").batches(8)
    np.testing.assert_array_equal(batch["input"][0], (pixels[1:5, 1:5].astype(np.int16) - 128).astype(np.int8))

    # resize of the shorter side keeps the aspect ratio, then crop
    _png(root / "a.png", np.full((20, 30, 3), 200, np.uint8))
    spec = InputSpec("images", ("batch", 3, 10, 10), np.float32)
    (batch,) = open_dataset(root, [spec], preprocess="resize=12,crop=10").batches(4)
    assert batch["images"].shape == (1, 3, 10, 10)
    np.testing.assert_allclose(batch["images"], 200 / 255, rtol=1e-6)
    (batch,) = open_dataset(root, [spec], preprocess="resize=10x10").batches(4)
    assert batch["images"].shape == (1, 3, 10, 10)


def test_image_folder_grayscale_from_model(tmp_path):
    root = tmp_path / "gray"
    root.mkdir()
    _png(root / "a.png", np.full((5, 5, 3), 255, np.uint8))
    ds = open_dataset(root, [InputSpec("x", ("N", 1, 5, 5), np.float32)])
    assert ds.grayscale
    (batch,) = ds.batches(1)
    assert batch["x"].shape == (1, 1, 5, 5)
    np.testing.assert_allclose(batch["x"], 1.0)


def test_image_folder_errors(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    _png(root / "a.png", np.zeros((16, 12, 3), np.uint8))

    msg = data_error(open_dataset, root, [IMAGES])  # 16x12 image, model wants 8x8
    assert "a.png" in msg and "16x12" in msg and "(batch, 3, 8, 8)" in msg and "resize=" in msg

    msg = data_error(open_dataset, root, [IMAGES], preprocess="resize=10x10")
    assert "10x10" in msg and "'images'" in msg and "resize=" in msg

    msg = data_error(open_dataset, root, [IMAGES], preprocess="resize=8x8,layout=NHWC")
    assert "layout=NCHW" in msg and "'images'" in msg

    any_size = InputSpec("images", ("batch", 3, "h", "w"), np.float32)
    msg = data_error(open_dataset, root, [any_size], preprocess="crop=20")
    assert "a.png" in msg and "16x12" in msg and "crop" in msg

    msg = data_error(open_dataset, root, [IMAGES, InputSpec("m", ("b", 2), np.float32)])
    assert "single-input" in msg and "'m'" in msg

    msg = data_error(open_dataset, root, [InputSpec("v", ("b", 10), np.float32)])
    assert "rank-4" in msg and "'v'" in msg

    msg = data_error(open_dataset, root, [IMAGES], preprocess="mean=0.1:0.2,std=1")
    assert "mean" in msg

    (root / "b_broken.png").write_bytes(b"\x89PNG not really")
    ds = open_dataset(root, [IMAGES], preprocess="resize=8x8")  # only the first image is decoded when opening
    msg = data_error(ds.batches, 4)
    assert "b_broken.png" in msg and "decoded" in msg
    (root / "0_broken.png").write_bytes(b"GIF89a nope")
    msg = data_error(open_dataset, root, [IMAGES], preprocess="resize=8x8")
    assert "0_broken.png" in msg and "decoded" in msg

    npz = tmp_path / "d.npz"
    np.savez(npz, images=np.zeros((1, 3, 8, 8), np.float32))
    msg = data_error(open_dataset, npz, [IMAGES], preprocess="resize=8")
    assert "image folders only" in msg and str(npz) in msg


# ---------------------------------------------------------------------------- callables


CALIB_PY = textwrap.dedent(
    """
    import numpy as np

    def batches():
        for i in range(3):
            yield {"images": np.full((2, 3, 8, 8), i, dtype=np.float64)}

    def samples():
        return [{"images": np.full((3, 8, 8), i, dtype=np.float32)} for i in range(5)]

    def one_dict():
        return {"images": np.zeros((4, 3, 8, 8), np.float32)}

    def with_labels():
        yield {"images": np.zeros((2, 3, 8, 8), np.float32), "labels": np.zeros(2)}

    def missing():
        yield {"pixels": np.zeros((2, 3, 8, 8), np.float32)}

    def not_iterable():
        return 42

    def not_a_dict():
        yield np.zeros((2, 3, 8, 8))

    def nothing():
        return iter(())

    def broken():
        yield {"images": np.zeros((1, 3, 8, 8), np.float32)}
        raise RuntimeError("disk on fire")

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def calib_file(tmp_path):
    path = tmp_path / "calib_data.py"
    path.write_text(CALIB_PY)
    return path


def test_callable_from_file_batches_and_samples(calib_file):
    ds = open_dataset(f"{calib_file}:batches", [IMAGES])
    assert isinstance(ds, CallableDataset) and ds.num_samples is None
    with pytest.raises(TypeError):
        len(ds)
    batches, sizes = collect(ds, 4)
    assert sizes == [4, 2]
    got = np.concatenate([b["images"] for b in batches])
    assert got.dtype == np.float32 and got[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(ds) == 6  # known after a full pass
    _, sizes = collect(ds, 4, limit=3)
    assert sizes == [3]

    ds = open_dataset(f"{calib_file}:samples", [IMAGES])
    batches, sizes = collect(ds, 2)
    assert sizes == [2, 2, 1]
    assert np.concatenate([b["images"] for b in batches])[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]

    _, sizes = collect(open_dataset(f"{calib_file}:one_dict", [IMAGES]), 3)
    assert sizes == [3, 1]


def test_callable_from_module_and_object(tmp_path, monkeypatch, calib_file):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "calib_data", raising=False)
    ds = open_dataset("calib_data:samples", [IMAGES])
    assert "calib_data:samples" in ds.source
    assert sum(len(b["images"]) for b in ds.batches(4)) == 5

    def gen():
        yield {"images": np.ones((3, 8, 8), np.float32)}
        yield {"images": np.ones((2, 3, 8, 8), np.float32)}

    ds = open_dataset(gen, [IMAGES])
    _, sizes = collect(ds, 8)
    assert sizes == [3]


def test_callable_errors(calib_file, tmp_path):
    msg = data_error(lambda: list(open_dataset(f"{calib_file}:with_labels", [IMAGES]).batches(2)))
    assert "'labels'" in msg and "not model inputs" in msg

    msg = data_error(lambda: list(open_dataset(f"{calib_file}:missing", [IMAGES]).batches(2)))
    assert "'images'" in msg and "'pixels'" in msg and "item 0" in msg

    msg = data_error(lambda: list(open_dataset(f"{calib_file}:not_iterable", [IMAGES]).batches(2)))
    assert "int" in msg and "feed dicts" in msg

    msg = data_error(lambda: list(open_dataset(f"{calib_file}:not_a_dict", [IMAGES]).batches(2)))
    assert "ndarray" in msg and "dict" in msg

    msg = data_error(lambda: list(open_dataset(f"{calib_file}:nothing", [IMAGES]).batches(2)))
    assert "contains no samples" in msg and "nothing" in msg

    msg = data_error(lambda: list(open_dataset(f"{calib_file}:broken", [IMAGES]).batches(2)))
    assert "RuntimeError" in msg and "disk on fire" in msg

    msg = data_error(open_dataset, f"{calib_file}:nope", [IMAGES])
    assert "'nope'" in msg and str(calib_file) in msg

    msg = data_error(open_dataset, f"{calib_file}:NOT_CALLABLE", [IMAGES])
    assert "not a function" in msg

    msg = data_error(open_dataset, f"{tmp_path / 'absent.py'}:f", [IMAGES])
    assert "absent.py" in msg and "not found" in msg

    msg = data_error(open_dataset, "no_such_module_xyz:load", [IMAGES])
    assert "no_such_module_xyz" in msg and "cannot import" in msg

    bad = tmp_path / "bad_syntax.py"
    bad.write_text("def f(:\n")
    msg = data_error(open_dataset, f"{bad}:f", [IMAGES])
    assert "bad_syntax.py" in msg and "SyntaxError" in msg

    def wrong_shape():
        yield {"images": np.zeros((2, 8, 8, 3), np.float32)}

    msg = data_error(lambda: list(open_dataset(wrong_shape, [IMAGES]).batches(2)))
    assert "'images'" in msg and "transpose(0, 3, 1, 2)" in msg and "wrong_shape" in msg

    msg = data_error(open_dataset, wrong_shape, [IMAGES], preprocess="resize=8")
    assert "image folders only" in msg


def test_batches_are_lazy_for_callables():
    calls = []

    def gen():
        for i in range(1000):
            calls.append(i)
            yield {"images": np.zeros((1, 3, 8, 8), np.float32)}

    ds = open_dataset(gen, [IMAGES])
    it = ds.batches(4)
    assert calls == []
    next(it)
    assert len(calls) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(len(b["images"]) for b in ds.batches(4, limit=10)) == 10


def test_feed_dicts_are_a_data_source_and_other_objects_are_refused():
    x = np.random.default_rng(0).normal(size=(5, 3, 8, 8)).astype(np.float32)
    one = open_dataset({"images": x}, [IMAGES])
    assert sum(b["images"].shape[0] for b in one.batches(2)) == 5
    several = open_dataset([{"images": x[:2]}, {"images": x[2:]}], [IMAGES])
    np.testing.assert_array_equal(np.concatenate([b["images"] for b in several.batches(4)]), x)
    msg = data_error(open_dataset, 42, [IMAGES])
    assert "int is not a data source" in msg and "feed dicts" in msg

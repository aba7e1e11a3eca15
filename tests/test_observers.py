"""Streaming calibration observers and the power-of-two histogram behind them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mpcompile.calibration.histogram import StreamingHistogram
from mpcompile.calibration.observers import (
    OBSERVERS,
    EntropyObserver,
    MinMaxObserver,
    MseObserver,
    Observer,
    PercentileObserver,
    kl_divergences,
    make_observer,
)
from mpcompile.errors import DataError, PlanError
from mpcompile.ir.quant import spec_from_range
from mpcompile.ir.types import QType

METHODS = ["minmax", "percentile", "entropy", "mse"]
HISTOGRAM_METHODS = ["percentile", "entropy", "mse"]
# Small histograms keep the hypothesis tests fast; the defaults are exercised elsewhere.
SMALL = {"minmax": {}, "percentile": {"bins": 256}, "entropy": {"bins": 256, "quant_bins": 16}, "mse": {"bins": 256}}

floats32 = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, width=32)
data_arrays = hnp.arrays(np.float32, st.integers(1, 300), elements=floats32)
wide_floats32 = st.floats(min_value=-(2.0**100), max_value=2.0**100, allow_nan=False, allow_infinity=False, width=32)
wide_arrays = hnp.arrays(np.float32, st.integers(1, 200), elements=wide_floats32)
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def observe(method: str, *batches: np.ndarray, **options) -> Observer:
    obs = make_observer(method, **(options or SMALL[method]))
    for batch in batches:
        obs.update(batch)
    return obs


def split(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    points = sorted({c % (x.size + 1) for c in cuts})
    return np.split(x, points)


@pytest.fixture(scope="module")
def gaussian_with_outliers() -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    x[:4] = [40.0, -40.0, 35.0, -38.0]
    return x


# --------------------------------------------------------------------------- histogram
@fast
@given(data_arrays, st.lists(st.integers(0, 400), max_size=6))
def test_histogram_bins_every_value_where_the_edges_say(x, cuts):
    hist = StreamingHistogram(64)
    for batch in split(x, cuts):
        hist.update(batch)
    edges, counts = hist.edges, hist.counts
    assert counts.sum() == hist.count == x.size
    assert edges[0] <= x.min() and x.max() < edges[-1]
    expected = np.bincount(np.searchsorted(edges, x.astype(np.float64), side="right") - 1, minlength=64)
    np.testing.assert_array_equal(counts, expected)
    width = edges[1] - edges[0]
    assert math.frexp(width)[0] == 0.5  # a power of two
    assert counts.any()


@fast
@given(wide_arrays, st.lists(st.integers(0, 300), max_size=8), st.randoms(use_true_random=False))
def test_histogram_is_independent_of_batching_and_order(x, cuts, rnd):
    one = StreamingHistogram(32)
    one.update(x)
    batches = split(x, cuts)
    rnd.shuffle(batches)
    many = StreamingHistogram(32)
    for batch in batches:
        many.update(batch)
    np.testing.assert_array_equal(one.counts, many.counts)
    np.testing.assert_array_equal(one.edges, many.edges)
    assert (one.min, one.max, one.min_abs_nonzero, one.count) == (many.min, many.max, many.min_abs_nonzero, many.count)


def test_histogram_grows_by_merging_and_shifts_its_window():
    hist = StreamingHistogram(16)
    hist.update(np.array([0.25, 0.5], np.float32))
    first_width = hist.edges[1] - hist.edges[0]
    hist.update(np.array([-100.0, 1000.0], np.float32))
    hist.update(np.array([1e-3], np.float32))
    assert hist.edges[1] - hist.edges[0] > first_width
    assert hist.counts.sum() == 5
    assert hist.edges[0] <= -100.0 and hist.edges[-1] > 1000.0
    direct = StreamingHistogram(16)
    direct.update(np.array([1e-3, 1000.0, 0.5, -100.0, 0.25]))
    np.testing.assert_array_equal(hist.counts, direct.counts)


def test_histogram_stats_and_dtypes():
    hist = StreamingHistogram(64)
    hist.update(np.array([0.0, -0.0, 3.0, -2.0], np.float16))
    hist.update(np.array([[0, 1], [5, -7]], np.int64))
    hist.update(np.array([], np.float32))  # ignored
    assert (hist.count, hist.min, hist.max, hist.abs_max, hist.min_abs_nonzero) == (8, -7.0, 5.0, 7.0, 1.0)
    f32 = StreamingHistogram(64)
    f32.update(np.array([1e-3, -2.5, 7.0], np.float32))
    f64 = StreamingHistogram(64)
    f64.update(np.array([1e-3, -2.5, 7.0], np.float32).astype(np.float64))
    np.testing.assert_array_equal(f32.counts, f64.counts)


def test_min_abs_nonzero_skips_zeros_and_keeps_subnormals():
    obs = MinMaxObserver()
    obs.update(np.zeros(10, np.float32))
    assert obs.min_abs_nonzero is None and obs.abs_max == 0.0
    tiny = np.float32(1e-42)  # float32 subnormal
    obs.update(np.array([0.0, -tiny, 3.0], np.float32))
    assert obs.min_abs_nonzero == float(tiny)


def test_histogram_round_trips_through_json():
    hist = StreamingHistogram(32)
    hist.update(np.linspace(-3, 5, 101))
    clone = StreamingHistogram.from_dict(json.loads(json.dumps(hist.to_dict())))
    np.testing.assert_array_equal(clone.counts, hist.counts)
    np.testing.assert_array_equal(clone.edges, hist.edges)
    more = np.array([-50.0, 0.125])
    hist.update(more)
    clone.update(more)
    np.testing.assert_array_equal(clone.counts, hist.counts)


# --------------------------------------------------------------------------- properties of every method
@fast
@given(data_arrays, st.lists(st.integers(0, 400), max_size=6), st.sampled_from(METHODS), st.booleans())
def test_one_batch_and_many_batches_give_the_same_range(x, cuts, method, symmetric):
    whole = observe(method, x).compute_range(symmetric=symmetric)
    pieces = observe(method, *split(x, cuts)).compute_range(symmetric=symmetric)
    assert np.allclose(whole, pieces, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("method", METHODS)
def test_default_observers_are_batch_invariant_on_real_sized_data(method, gaussian_with_outliers):
    x = gaussian_with_outliers[:200_000]
    whole = make_observer(method)
    whole.update(x)
    many = make_observer(method)
    for batch in np.array_split(x[::-1], 37):
        many.update(batch)
    for symmetric in (False, True):
        assert np.allclose(whole.compute_range(symmetric=symmetric), many.compute_range(symmetric=symmetric), rtol=1e-6)


@fast
@given(data_arrays, st.sampled_from(METHODS), st.booleans(), st.sampled_from([QType.INT8, QType.UINT8, QType.INT16]))
def test_fake_quantization_error_is_at_most_half_a_step_inside_the_range(x, method, symmetric, qtype):
    lo, hi = observe(method, x).compute_range(symmetric=symmetric, qtype_bits=qtype)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    spec = spec_from_range(lo, hi, qtype, symmetric=symmetric)
    rep_lo, rep_hi = (float(v) for v in spec.representable_range())
    assert rep_lo <= 0.0 <= rep_hi
    scale = float(spec.scale)
    inside = x[(x >= rep_lo) & (x <= rep_hi)]
    error = np.abs(spec.fake_quantize(inside).astype(np.float64) - inside.astype(np.float64))
    # float32 division and rounding of x / scale may add a few ulps of x
    slack = 4 * np.spacing(np.abs(inside).astype(np.float32)).astype(np.float64)
    assert np.all(error <= scale / 2 * (1 + 1e-6) + slack)


@fast
@given(data_arrays, st.sampled_from([8, 16]), st.booleans())
def test_entropy_threshold_never_exceeds_abs_max(x, bits, symmetric):
    obs = observe("entropy", x)
    assert obs.threshold(symmetric=symmetric, qtype_bits=bits) <= obs.abs_max
    lo, hi = obs.compute_range(symmetric=symmetric, qtype_bits=bits)
    assert max(-lo, hi) <= obs.abs_max or obs.abs_max == 0.0


@fast
@given(data_arrays, st.floats(50.0, 100.0))
def test_percentile_range_lies_inside_the_data(x, p):
    obs = observe("percentile", x, percentile=p, bins=128)
    lo, hi = obs.compute_range()
    inside = obs.min <= lo <= hi <= obs.max
    # equal percentiles (e.g. p=50) collapse to one value c, widened to (min(0, c), max(0, c))
    collapsed = (lo == 0.0 and obs.min <= hi <= obs.max) or (hi == 0.0 and obs.min <= lo <= obs.max)
    assert inside or collapsed
    t = obs.compute_range(symmetric=True)[1]
    assert 0.0 <= t <= obs.abs_max


@fast
@given(data_arrays, st.sampled_from(["mse", "entropy"]))
def test_clipping_methods_stay_within_the_data(x, method):
    obs = observe(method, x)
    lo, hi = obs.compute_range()
    assert min(obs.min, 0.0) <= lo <= hi <= max(obs.max, 0.0)


# --------------------------------------------------------------------------- behaviour on typical data
def test_outliers_are_clipped_by_histogram_methods_but_not_by_minmax(gaussian_with_outliers):
    x = gaussian_with_outliers
    ranges = {}
    for method in METHODS:
        obs = make_observer(method)
        obs.update(x)
        ranges[method] = (obs.compute_range(), obs.compute_range(symmetric=True))
    assert ranges["minmax"] == ((-40.0, 40.0), (-40.0, 40.0))
    for method, limit in (("percentile", 0.2), ("entropy", 0.2), ("mse", 0.5)):
        for lo, hi in ranges[method]:
            assert 2.5 < hi < limit * 40.0, (method, hi)
            assert -limit * 40.0 < lo < -2.5, (method, lo)


def test_mse_finds_the_known_optimal_clip_of_a_gaussian():
    # Banner et al. (ACIQ): for 8 bits the MSE-optimal symmetric clip of N(0, 1) is ~3.92 sigma.
    x = np.random.default_rng(1).standard_normal(400_000).astype(np.float32)
    obs = MseObserver()
    obs.update(x)
    t = obs.compute_range(symmetric=True)[1]
    assert 3.6 < t < 4.3
    lo, hi = obs.compute_range(qtype_bits=4)  # fewer levels: clip harder
    assert hi < t and lo > -t


def test_relu_output_gets_a_non_negative_range():
    x = np.maximum(np.random.default_rng(2).standard_normal(50_000), 0.0).astype(np.float32)
    for method in METHODS:
        obs = make_observer(method)
        obs.update(x)
        for symmetric in (False, True):
            lo, hi = obs.compute_range(symmetric=symmetric)
            assert lo == 0.0 or (method == "percentile" and not symmetric and 0.0 <= lo < 1e-3)
            assert 2.0 < hi <= obs.max


def test_entropy_int16_quantization_is_finer_than_the_histogram_so_nothing_is_clipped(gaussian_with_outliers):
    obs = EntropyObserver()
    obs.update(gaussian_with_outliers)
    assert obs.compute_range(symmetric=True, qtype_bits=QType.INT16) == (-40.0, 40.0)
    assert obs.compute_range(symmetric=True, qtype_bits=8)[1] < 8.0


def test_entropy_quant_bins_follow_the_quantization():
    obs = EntropyObserver()
    obs.update(np.abs(np.random.default_rng(3).standard_normal(1000)))
    assert obs.quant_bins_for(symmetric=True, levels=256) == 128
    assert obs.quant_bins_for(symmetric=False, levels=256) == 255
    obs.update(np.array([-1.0]))
    assert obs.quant_bins_for(symmetric=False, levels=256) == 128
    assert EntropyObserver(quant_bins=100).quant_bins_for(symmetric=True, levels=256) == 100


def _naive_kl(hist: np.ndarray, nq: int) -> np.ndarray:
    """pytorch-quantization's loop, one candidate at a time."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]
    out = []
    for i in range(nq, bins.size + 1):
        cut = bins[:i]
        group = np.arange(i) * nq // i
        sums = np.bincount(group, weights=cut, minlength=nq)
        nonempty = np.bincount(group, weights=cut > 0, minlength=nq)
        q = np.where(cut > 0, sums[group] / np.maximum(nonempty[group], 1), 0.0)
        p = cut.copy()
        p[-1] += bins[i:].sum()
        mass = p > 0
        if q.sum() == 0 or np.any(q[mass] == 0):
            out.append(np.inf)
            continue
        p, q = p / p.sum(), q / q.sum()
        out.append(float(np.sum(p[mass] * np.log(p[mass] / q[mass]))))
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.int64, st.integers(20, 200), elements=st.integers(0, 1000)),
    st.integers(2, 19),
    st.floats(0.0, 1.0),
)
def test_vectorized_kl_matches_the_reference_loop(hist, nq, sparsity):
    hist = hist * (np.arange(hist.size) % 7 >= int(sparsity * 7))  # some empty bins
    hist[-1] += 1
    candidates, kl = kl_divergences(hist, nq)
    np.testing.assert_array_equal(candidates, np.arange(nq, hist.size + 1))
    expected = _naive_kl(hist, nq)
    np.testing.assert_array_equal(np.isinf(kl), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(kl[finite], expected[finite], rtol=1e-9, atol=1e-12)


def test_moving_average_minmax_follows_the_batches():
    obs = MinMaxObserver(moving_average=0.5)
    obs.update(np.array([-1.0, 1.0]))
    obs.update(np.array([-3.0, 5.0]))
    assert obs.compute_range() == (-2.0, 3.0)
    assert obs.compute_range(symmetric=True) == (-3.0, 3.0)
    assert (obs.min, obs.max) == (-3.0, 5.0)  # the stats stay exact


# --------------------------------------------------------------------------- degenerate data
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [2.5, -3.0, 0.0, 1e-30])
def test_constant_tensor_gives_a_valid_positive_scale(method, value):
    obs = make_observer(method)
    obs.update(np.full(1000, value, np.float32))
    for symmetric in (False, True):
        for qtype in (QType.INT8, QType.UINT8, QType.INT16):
            lo, hi = obs.compute_range(symmetric=symmetric, qtype_bits=qtype)
            assert lo <= min(0.0, float(np.float32(value))) and hi >= max(0.0, float(np.float32(value)))
            assert math.isfinite(lo) and math.isfinite(hi)
            scale = float(spec_from_range(lo, hi, qtype, symmetric=symmetric).scale)
            assert math.isfinite(scale) and scale > 0


@pytest.mark.parametrize("method", METHODS)
def test_empty_updates_are_ignored_and_no_data_is_a_data_error(method):
    obs = make_observer(method)
    obs.update(np.zeros((0, 3), np.float32))
    assert obs.count == 0 and obs.min is None
    with pytest.raises(DataError, match="no calibration data"):
        obs.compute_range()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_without_changing_state(method, bad):
    obs = make_observer(method)
    obs.update(np.array([1.0, 2.0], np.float32))
    before = obs.compute_range()
    with pytest.raises(ValueError, match="non-finite"):
        obs.update(np.array([0.5, bad], np.float32))
    assert obs.count == 2 and obs.compute_range() == before


# --------------------------------------------------------------------------- serde, merge, convert, factory
@pytest.mark.parametrize("method", METHODS)
def test_to_dict_from_dict_round_trip_gives_the_same_range(method):
    rng = np.random.default_rng(4)
    obs = make_observer(method)
    obs.update(rng.laplace(size=20_000).astype(np.float32))
    data = json.loads(json.dumps(obs.to_dict()))
    clone = Observer.from_dict(data)
    assert type(clone) is type(obs) and clone.options == obs.options
    assert type(obs).from_dict(data).method == method
    for symmetric in (False, True):
        assert clone.compute_range(symmetric=symmetric) == obs.compute_range(symmetric=symmetric)
    assert (clone.count, clone.min, clone.max, clone.min_abs_nonzero) == (
        obs.count,
        obs.min,
        obs.max,
        obs.min_abs_nonzero,
    )
    more = rng.standard_normal(1000).astype(np.float32) * 20
    clone.update(more)
    obs.update(more)
    assert clone.compute_range() == obs.compute_range()


def test_from_dict_rejects_bad_cache_entries():
    with pytest.raises(DataError):
        Observer.from_dict({"method": "bogus", "options": {}, "state": {}})
    with pytest.raises(DataError):
        Observer.from_dict({"method": "mse", "options": {}, "state": {"histogram": {"bins": 7}}})
    with pytest.raises(DataError):
        MseObserver.from_dict(MinMaxObserver().to_dict())


@pytest.mark.parametrize("method", METHODS)
def test_merging_parallel_observers_equals_one_observer(method):
    x = np.random.default_rng(5).standard_normal(30_000).astype(np.float32) * 3 + 1
    left, right = make_observer(method), make_observer(method)
    left.update(x[:7_000] * 10)
    right.update(x[7_000:])
    both = make_observer(method)
    both.update(np.concatenate([x[:7_000] * 10, x[7_000:]]))
    left.merge(right)
    for symmetric in (False, True):
        assert np.allclose(left.compute_range(symmetric=symmetric), both.compute_range(symmetric=symmetric), rtol=1e-6)


def test_convert_re_reads_a_histogram_with_another_method():
    x = np.random.default_rng(6).laplace(size=50_000).astype(np.float32)
    entropy = EntropyObserver()
    entropy.update(x)
    as_percentile = entropy.convert("percentile", percentile=99.9)
    direct = PercentileObserver(99.9, bins=entropy.histogram.bins)
    direct.update(x)
    assert as_percentile.compute_range() == direct.compute_range()
    assert entropy.convert("minmax").compute_range() == (float(x.min()), float(x.max()))
    mse = MseObserver()
    mse.update(x)
    back = mse.convert("mse")
    assert back.compute_range() == mse.compute_range() and back is not mse
    with pytest.raises(PlanError, match="keeps no histogram"):
        MinMaxObserver().convert("entropy")
    with pytest.raises(PlanError, match="bins"):
        entropy.convert("mse", bins=512)


def test_make_observer_validates_method_and_options():
    assert set(OBSERVERS) == set(METHODS)
    assert isinstance(make_observer("percentile", percentile=99.9), PercentileObserver)
    with pytest.raises(PlanError, match="entropy, minmax, mse, percentile"):
        make_observer("kl")
    with pytest.raises(PlanError, match="does not accept"):
        make_observer("minmax", bins=10)
    with pytest.raises(PlanError):
        make_observer("percentile", percentile=120)
    with pytest.raises(PlanError):
        make_observer("minmax", moving_average=0.0)
    with pytest.raises(PlanError):
        make_observer("mse").compute_range(qtype_bits="int7")

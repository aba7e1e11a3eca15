import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpcompile.errors import PlanError
from mpcompile.ir.quant import QuantSpec, spec_from_range, weight_spec
from mpcompile.ir.types import QType


def test_spec_validates_scales_and_zero_points():
    with pytest.raises(PlanError, match="finite and positive"):
        QuantSpec(QType.INT8, np.float32(0.0), 0)
    with pytest.raises(PlanError, match="finite and positive"):
        QuantSpec(QType.INT8, np.float32(np.nan), 0)
    with pytest.raises(PlanError, match="outside the int8 range"):
        QuantSpec(QType.INT8, np.float32(0.1), 200)
    with pytest.raises(PlanError, match="symmetric"):
        QuantSpec(QType.INT8, np.float32(0.1), 3, symmetric=True)
    with pytest.raises(PlanError, match="per-channel"):
        QuantSpec(QType.INT8, np.ones(3, np.float32), np.zeros(2, np.int8), axis=0)


def test_per_channel_size_checked_against_shape():
    spec = QuantSpec(QType.INT8, np.ones(4, np.float32), np.zeros(4, np.int8), axis=0, symmetric=True)
    spec.validate_for_shape((4, 3, 3, 3), "w")
    with pytest.raises(PlanError, match="dimension 0 has size 8"):
        spec.validate_for_shape((8, 3, 3, 3), "w")


def test_spec_is_frozen():
    spec = spec_from_range(-1, 1)
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.scale = np.float32(2)  # type: ignore[misc]
    with pytest.raises(ValueError):
        spec.scale[...] = 2


@settings(max_examples=200, deadline=None)
@given(
    lo=st.floats(-1e3, 0, allow_nan=False),
    hi=st.floats(0, 1e3, allow_nan=False),
    qtype=st.sampled_from([QType.INT8, QType.UINT8, QType.INT16]),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fake_quant_error_at_most_half_a_step_inside_range(lo, hi, qtype, symmetric, seed):
    spec = spec_from_range(lo, hi, qtype, symmetric=symmetric)
    rlo, rhi = (float(v) for v in spec.representable_range())
    assert rlo <= 0.0 <= rhi  # zero is exactly representable
    x = np.random.default_rng(seed).uniform(rlo, rhi, 256).astype(np.float32)
    err = np.abs(spec.fake_quantize(x).astype(np.float64) - x.astype(np.float64))
    # half a step, plus the float32 rounding of the dequantized value itself
    slack = 2 * np.finfo(np.float32).eps * np.abs(x.astype(np.float64))
    assert np.all(err <= float(spec.scale) / 2 + slack + 1e-12)


def test_constant_range_gives_valid_scale():
    for lo, hi in [(0, 0), (3, 3), (-2, -2)]:
        spec = spec_from_range(lo, hi)
        assert np.isfinite(spec.scale) and spec.scale > 0


def test_weight_spec_is_symmetric_narrow_per_channel():
    w = np.random.default_rng(0).normal(size=(8, 4, 3, 3)).astype(np.float32)
    spec = weight_spec(w, axis=0)
    q = spec.quantize(w)
    assert spec.symmetric and spec.narrow_range and spec.axis == 0
    assert q.min() >= -127 and q.max() <= 127
    assert np.all(np.abs(q).reshape(8, -1).max(axis=1) == 127)


def test_dead_weight_channels_get_zeros_at_scale_one_not_a_denormal_bias_scale():
    """Pruned channels of real exports hold values like 1e-36: at their own scale the bias scale s_in x s_w is a
    denormal that OpenVINO flushes to zero (PaddleOCR's recogniser). They quantize to zeros at scale 1."""
    w = np.ones((4, 8), np.float32)
    w[1], w[2], w[3] = 1e-36, 0.0, 1e-14  # absolute, zero, and 1e-14 of the largest channel
    spec = weight_spec(w, 0)
    assert spec.scale[0] == np.float32(1 / 127)
    assert list(spec.scale[1:]) == [1.0, 1.0, 1.0]
    assert not spec.quantize(w)[1:].any()
    bias_scale = (np.float32(1e-4) * spec.scale).astype(np.float32)
    assert (bias_scale >= np.finfo(np.float32).tiny).all()

"""The TFLite backend's operator coverage table is generated from its emitter registry, and the README shows it."""

from __future__ import annotations

import pytest
from mpcompile_tflite import coverage
from mpcompile_tflite.ops import EMITTERS

from mpcompile.ir.types import Precision


def test_readme_table_is_the_registry():
    assert coverage.is_current(), "run: python -m mpcompile_tflite.coverage --write"


def test_table_rows_are_the_emitters_with_their_precisions():
    rows = dict(coverage.rows())
    assert set(rows) == set(EMITTERS) - coverage.INTERNAL
    assert rows["HardSigmoid"] == frozenset({Precision.INT8, Precision.INT16, Precision.FP16, Precision.FP32})
    assert rows["LSTM"] == rows["Equal"] == frozenset({Precision.FP16, Precision.FP32})
    counts = coverage.counts()
    assert counts["cells"] == sum(len(ps & {Precision.INT8, Precision.INT16, Precision.FP16, Precision.FP32})
                                  for ps in rows.values())


def test_command_line(capsys):
    assert coverage.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| ONNX op | int8 | int16 (16x8) | fp16 | fp32 |") and "| LSTM | – | – | ✓ | ✓ |" in out
    assert coverage.main(["--check"]) == 0
    with pytest.raises(SystemExit):
        coverage.main(["--write", "--check"])

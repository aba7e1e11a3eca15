"""``--localize`` on real failing cases of the zoo (slow): the first diverging tensor is named within
2 × log2(nodes) sub-model runs (issue 16's target), with a reproducer written.

The cases are the zoo's large OCR models, whose ONNX Runtime artifacts leave tolerance end to end
(they pass by the kernel rule: every step within tolerance from exact inputs, the plan amplifying
tie rounding); an entry that conforms end to end today has nothing to localize and is skipped.
"""

from __future__ import annotations

import math

import pytest

from models import zoo

pytestmark = pytest.mark.slow

CASES = ["ppocr_det", "ppocr_rec"]


@pytest.mark.parametrize("name", CASES)
def test_localize_names_the_first_divergence(name, tmp_path):
    from mpcompile.pipeline import calibrate, conform

    built = zoo.get(name).build()
    plan = calibrate(str(built.model_path), str(built.calib_path), eval_data=str(built.eval_path),
                     input_shapes=built.input_shapes, progress=False).plan
    report = conform(plan, ["onnxruntime"], str(built.eval_path), samples=8, localize=True,
                     reproducer_dir=tmp_path / "repro")
    backend = report.backends[0]
    if not backend.end_to_end_failures:
        pytest.skip(f"{name} conforms end to end on ONNX Runtime today: nothing to localize")
    assert backend.localization, backend.localization_lines
    for found in backend.localization:
        assert found["tensor"], found["note"]
        assert found["runs"] <= 2 * math.log2(found["plan_nodes"]), (found["runs"], found["plan_nodes"])
        assert found["max_lsb"] > found["tolerance_lsb"]
        assert found["reproducer"] and (tmp_path / "repro" / "onnxruntime" / "reproducer.plan.onnx").is_file()

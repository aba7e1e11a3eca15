"""Lower a legalized plan to a ``.tflite`` flatbuffer: layout, fusion, writing, serialization.

The plan arrives legalized (``legalize.py``, run by the pipeline). From there:

1. ``fuse.py``: exact-GELU patterns and ``Reciprocal(Sqrt(x))`` that the plan keeps in one float
   precision become TFLite's GELU and RSQRT operators, ``Not(Equal)`` NOT_EQUAL (no number of the
   plan changes).
2. ``layout.py``: NCHW → NHWC on the IR (weights OHWI / ``[1, H, W, C·M]``, axes remapped,
   transposes only where unavoidable).
3. ``writer.py`` + ``ops.py``: one TFLite operator (or a few) per node, every scale and
   zero-point taken from the plan's ``QuantSpec``s.
4. ``flatbuffer.py``: the only code that touches the flatbuffer schema.
"""

from __future__ import annotations

import json
from pathlib import Path

from mpcompile.backends.api import Artifact, Graph, serde
from mpcompile_tflite.flatbuffer import serialize
from mpcompile_tflite.fuse import fuse_gelu, fuse_not_equal, fuse_rsqrt
from mpcompile_tflite.layout import to_tflite_layout
from mpcompile_tflite.options import TFLiteOptions
from mpcompile_tflite.spatial1d import lift_1d
from mpcompile_tflite.writer import ModelWriter, WriterOptions


def write_flatbuffer(legal: Graph, out_dir: Path, stem: str, options: TFLiteOptions, litert_version: str) -> Artifact:
    fusable, gelus = fuse_gelu(legal)
    fusable, rsqrts = fuse_rsqrt(fusable)
    fusable, not_equals = fuse_not_equal(fusable)
    fusable, lifted = lift_1d(fusable)
    layout = to_tflite_layout(fusable, nhwc_inputs=options.nhwc_inputs, nhwc_outputs=options.nhwc_outputs)
    writer = ModelWriter(layout, WriterOptions(io=options.io, description=f"mpcompile: {legal.name}"))
    model = writer.write()
    path = Path(out_dir) / f"{stem}.tflite"
    serde.write_atomic(path, serialize(model))
    tensor_map = writer.tensor_map()
    metadata = {
        "format": "TFLite flatbuffer (schema v3)",
        "litert": litert_version,
        "options": options.model_dump(include={"io", "nhwc_inputs", "nhwc_outputs", "fallback"}),
        "ops": dict(sorted(writer.op_counts.items())),
        "fused": {k: v for k, v in (("Gelu", gelus), ("Rsqrt", rsqrts), ("NotEqual", not_equals)) if v},
        "lifted_1d": lifted,
        "inputs": writer.interface(model.inputs, layout.layouts, legal.inputs),
        "outputs": writer.interface(model.outputs, layout.output_layouts, legal.outputs),
        "tensor_map": tensor_map,
        "layouts": {k: v.to_dict() for k, v in layout.layouts.items() if k in tensor_map and not v.is_identity},
        "constants": writer.constant_map(),
    }
    json.dumps(metadata)  # the manifest stores it: fail here, not there
    return Artifact("tflite", path, [path], metadata=metadata)

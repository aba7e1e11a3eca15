"""The backend plugin contract.

A backend is one object, exposed through the ``mpcompile.backends`` entry-point group::

    [project.entry-points."mpcompile.backends"]
    mybackend = "my_package:backend"      # an instance of a Backend subclass

The pipeline drives every backend through the same steps, the same way for built-in and
third-party backends:

1. ``Options``: the backend's frozen options type (``backends.options.BackendOptions``);
   the pipeline validates what the user gave before any work starts.
2. ``capabilities``: what the target can run (ops × precisions, per-channel weights,
   symmetric-only activations, which integer types). Pure data, no heavy imports.
3. ``legalize(plan, options)``: adapt a copy of the plan to those capabilities. Every change
   is a ``Deviation`` naming the tensor or node, what changed and why. The default
   (``backends.legalize``) handles the common cases from ``capabilities`` alone.
4. ``lower(legal, out_dir, stem=..., options=...)``: write the artifact for the *legalized*
   plan (the pipeline legalizes; ``lower`` never does) and return an ``Artifact``.
5. ``runner(artifact, options)``: a ``Runner`` that executes it on numpy feeds. A runner that can
   time each layer overrides ``Runner.profile`` (``supports_profile = True``): microseconds per run
   for each plan node, its layers given to plan nodes by ``backends.profile.attribute``.

Heavy libraries (tflite, tensorrt) are imported inside ``check_available``/``lower``/
``runner``, never at module import, so that ``mpcompile --help`` works without them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mpcompile.backends.capabilities import Capabilities, Deviation
from mpcompile.backends.legalize import legalize_with_capabilities
from mpcompile.backends.options import BackendOptions, parse_options
from mpcompile.backends.profile import LayerProfile, ProfilingUnavailable
from mpcompile.ir.graph import Graph


@dataclasses.dataclass
class Artifact:
    """What ``lower`` produced: the main file, any side files, and facts for the manifest."""

    backend: str
    path: Path
    files: list[Path] = dataclasses.field(default_factory=list)
    deviations: list[Deviation] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "deviations": [d.to_dict() for d in self.deviations],
            "metadata": self.metadata,
        }


class Runner(abc.ABC):
    """Runs one artifact. ``run`` maps input names to arrays and returns output names to arrays."""

    #: True when ``run(..., intermediates=[...])`` can return named IR tensors too.
    supports_intermediates: bool = False

    #: True when ``profile`` times each layer (else it raises ``ProfilingUnavailable``).
    supports_profile: bool = False

    #: the one batch size the artifact runs at (a batch frozen when it was lowered: TFLite), or None for any
    max_batch: int | None = None

    @abc.abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray], intermediates: Iterable[str] = ()) -> dict[str, np.ndarray]:
        ...

    def profile(self, feeds: Mapping[str, np.ndarray], repeats: int = 50,
                plan_nodes: Collection[str] | None = None) -> LayerProfile:
        """Microseconds per run of each plan node on ``feeds``: the median over ``repeats`` runs after a warm-up.

        ``plan_nodes`` (the plan's node names) lets the attribution tell the plan's nodes from those the
        lowering inserted; without it every node of the artifact's source graph but a Q/DQ counts as one.
        The default has no profiler: callers catch ``ProfilingUnavailable`` and time whole plans instead."""
        raise ProfilingUnavailable(f"{type(self).__name__} has no per-layer profiler: time whole plans "
                                   "(`mpcompile bench` without --per-layer)")

    def close(self) -> None:
        """Release resources (sessions, device memory)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """Base class of every backend plugin (built-in or third-party)."""

    name: str = "backend"
    description: str = ""
    #: Shown when the backend's library is missing, e.g. ``pip install 'mpcompile[tflite]'``.
    install_hint: str = ""
    artifact_suffix: str = ""
    #: The backend's options type; the base takes no options.
    Options: type[BackendOptions] = BackendOptions

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        ...

    def options(self, values: Mapping[str, Any] | BackendOptions | None = None) -> BackendOptions:
        """``values`` validated as this backend's ``Options`` (``BackendOptionError`` names the bad key)."""
        return parse_options(self, values)

    def check_available(self) -> None:
        """Raise ``BackendUnavailableError`` (with the install hint) if the backend cannot run here."""

    def can_lower_without_runtime(self, options: BackendOptions) -> bool:
        """True if ``lower`` (and a CPU check of the result) works with these options even when
        ``check_available`` fails, e.g. TensorRT's ``onnx_only`` export for building on the device."""
        return False

    def version(self) -> str:
        """Version of the library that runs the artifacts (not of the plugin)."""
        return "unknown"

    def supported_ops(self) -> frozenset[str] | None:
        """Op types the backend can run in some precision; ``None`` means any standard ONNX op."""
        return None

    def legalize(self, plan: Graph, options: BackendOptions) -> tuple[Graph, list[Deviation]]:
        """A copy of ``plan`` this backend can run exactly, and every change made, with its reason."""
        return legalize_with_capabilities(plan, self.capabilities, backend_name=self.name)

    @abc.abstractmethod
    def lower(self, plan: Graph, out_dir: Path, *, stem: str, options: BackendOptions) -> Artifact:
        """Write the artifact of ``plan`` (already legalized) into ``out_dir`` (an existing folder)."""

    @abc.abstractmethod
    def runner(self, artifact: Artifact, options: BackendOptions) -> Runner:
        ...

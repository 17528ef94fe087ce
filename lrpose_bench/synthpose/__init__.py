"""SynthPose: the embedded, procedurally rendered keypoint data set (no download needed).

Why it exists: every command of the suite must work on a fresh machine, and the differences between
pose methods at low input resolution (64×48 / 128×96 crops, where heat-map arg-max quantization is a
large fraction of a joint's OKS tolerance) must show up on a CPU in minutes.  So the images are small
(192×192 by default) but the figures are not trivial: joints have to be *inferred* from limb geometry.

One module per job, each importing only the ones above it:

* :mod:`~lrpose_bench.synthpose.body` — the 3-D stick body with the 17 COCO joints (anthropometric
  segment lengths), posed and projected into the image; nothing random;
* :mod:`~lrpose_bench.synthpose.sampling` — every random draw: per-image seed streams, pose
  families, colours, proportions, view, stature and placement;
* :mod:`~lrpose_bench.synthpose.coco_writer` — COCO labels (visibility from the label map, boxes,
  areas) and the annotation documents; :data:`FORMAT_VERSION`;
* :mod:`~lrpose_bench.synthpose.render` — drawing figures, backgrounds and occluders into one image;
* :mod:`~lrpose_bench.synthpose.pool` — rendering to PNG files, in-process or in worker processes;
* :mod:`~lrpose_bench.synthpose.cache` — the folder layout, :func:`generate_synthpose` and the
  cache :func:`ensure_synthpose` that the suite calls.

Rendering constants (anthropometry, colour ranges) are module constants of those modules: they
define the data set (a change bumps :data:`FORMAT_VERSION`); everything a user may change is in
``SynthConfig`` (``data.synth``).  Names with a leading underscore are shared between the modules of
this package but are not its API.
"""

from __future__ import annotations

from lrpose_bench.synthpose.body import Figure, Proportions, View, assemble_figure
from lrpose_bench.synthpose.cache import (
    MARKER_NAME,
    SynthPosePaths,
    cache_key,
    ensure_synthpose,
    generate_synthpose,
    validate_synth_config,
)
from lrpose_bench.synthpose.coco_writer import FORMAT_VERSION
from lrpose_bench.synthpose.render import render_image
from lrpose_bench.synthpose.sampling import build_person, image_rng

__all__ = [
    "FORMAT_VERSION",
    "MARKER_NAME",
    "Figure",
    "Proportions",
    "SynthPosePaths",
    "View",
    "assemble_figure",
    "build_person",
    "cache_key",
    "ensure_synthpose",
    "generate_synthpose",
    "image_rng",
    "render_image",
    "validate_synth_config",
]

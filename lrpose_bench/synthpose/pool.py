"""SynthPose worker pool: render images to PNG files in-process or in worker processes.

Images are written as PNG: lossless, so the sub-pixel edges of small figures are not smeared by JPEG's
chroma subsampling and block artefacts (which would add a method-independent error floor), and byte-
identical for a given seed; degradations belong to ``lrpose_bench.data.degrade``, not to storage.
The output does not depend on the number of workers: each image has its own seed stream
(:func:`lrpose_bench.synthpose.sampling.image_rng`) and the parent collects the annotations by index.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from lrpose_bench.config import SynthConfig
from lrpose_bench.errors import DataError
from lrpose_bench.synthpose.coco_writer import _image_id, _keep
from lrpose_bench.synthpose.render import render_image
from lrpose_bench.synthpose.sampling import image_rng

# zlib level 1 with the RLE strategy: 2.8 ms/192² image, 64 KB (level 3: 5 ms, 72 KB), lossless either way
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


def _render_task(task: tuple[dict[str, Any], str, int, str]) -> tuple[str, int, list[dict[str, Any]]]:
    """Render one image to its file (worker side); return the annotations to the parent."""
    cfg_dict, split, index, folder = task
    cfg = SynthConfig(**cfg_dict)
    image, annotations = render_image(cfg, image_rng(cfg.seed, split, index))
    path = Path(folder) / f"{_image_id(split, index):012d}.png"
    if not cv2.imwrite(str(path), image, _PNG_PARAMS):
        raise DataError(f"cannot write image {path}: check that the folder is writable and has free space")
    return split, index, [a for a in annotations if _keep(a)]


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _default_workers(total: int) -> int:
    cpus = os.cpu_count() or 1
    return 0 if total < 128 or cpus < 2 else 2


def _run_tasks(
    tasks: list[tuple[dict[str, Any], str, int, str]], workers: int
) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
    """``(split, index, kept annotations)`` of every task, in the order they finish."""
    if workers <= 1:
        for task in tasks:
            yield _render_task(task)
        return
    # Never plain "fork": a parent that has already used OpenCV's or torch's thread pools forks
    # their locked mutexes into the children, which then hang (seen in the test suite:
    # cv2.setNumThreads in a forked worker). "forkserver" forks from a clean server process on
    # Linux; macOS and Windows use "spawn". Both import the caller's __main__: a script that calls
    # this directly needs an ``if __name__ == "__main__":`` guard (the CLI has one).
    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap_unordered(_render_task, tasks, chunksize=16)

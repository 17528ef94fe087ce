"""SynthPose sampling: every random draw of a figure and its placement, from per-image seed streams.

Joint angles come from a few pose families (standing, walking/running, sitting/squatting, free) with
plausible ranges; clothing colours are random, skin from a dark-to-light range, hair dark, brown,
blond or grey; proportions jitter the anthropometric constants of :mod:`lrpose_bench.synthpose.body`;
the view turns the body mostly toward the camera.  Stature (~40 px to most of the image height) and
position are drawn per image; a truncated figure is pushed partly out of the image on purpose.

Each image has its own stream (:func:`image_rng`), so the output does not depend on the order or
the process that renders it.  The order of the draws is part of the data set: reordering them
changes every image (a change bumps :data:`lrpose_bench.synthpose.coco_writer.FORMAT_VERSION`).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from lrpose_bench.config import SynthConfig
from lrpose_bench.synthpose.body import Figure, Proportions, View, _translate, assemble_figure

#: split order = spawn-key index: appending "tune" left the train and val streams as they were
_SPLITS = ("train", "val", "tune")
_MIN_STATURE = 72.0  # px (or 0.45 of the short side): most persons then have a segment area >= 32^2, COCO-like (COCO labels keypoints on few small persons)
_MAX_STATURE_FRACTION = 0.95  # of the image height, single person
_MAX_STATURE_FRACTION_MULTI = 0.8


# ---------------------------------------------------------------------------------- streams
def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image stream; train, val and tune are disjoint children of ``seed`` (like ``SeedSequence.spawn``)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_SPLITS.index(split), index)))


# ---------------------------------------------------------------------------------- sampling
def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _deg(rng: np.random.Generator, low: float, high: float) -> float:
    return math.radians(_u(rng, low, high))


def _sample_pose(rng: np.random.Generator) -> dict[str, Any]:
    """Joint angles (radians) from one of a few pose families, so poses are varied but plausible."""
    family = rng.choice(["stand", "walk", "sit", "free"], p=[0.45, 0.25, 0.12, 0.18])
    pose: dict[str, Any] = {"family": str(family)}
    arms = {}
    for side in ("l", "r"):
        if family == "free" or rng.random() < 0.3:  # an "active" arm: anywhere in its range
            arms[side] = (_deg(rng, 0, 150), _deg(rng, -40, 170), _deg(rng, 0, 150), _deg(rng, -60, 60))
        else:
            arms[side] = (_deg(rng, 4, 35), _deg(rng, -25, 40), _deg(rng, 0, 70), _deg(rng, -30, 40))
    legs = {}
    trunk_pitch = _deg(rng, -8, 15)
    if family == "walk":
        swing = _deg(rng, 8, 45)
        arm_swing = _deg(rng, 5, 40)
        front = "l" if rng.random() < 0.5 else "r"
        for side in ("l", "r"):
            sign = 1.0 if side == front else -1.0
            legs[side] = (_deg(rng, 0, 12), sign * swing, _deg(rng, 0, 25) if sign > 0 else _deg(rng, 5, 80))
            if not (arms[side][0] > math.radians(40)):  # arms swing opposite to the legs
                a, _, e, t = arms[side]
                arms[side] = (a, -sign * arm_swing, max(e, _deg(rng, 10, 80)), t)
    elif family == "sit":
        squat = rng.random() < 0.4
        for side in ("l", "r"):
            if squat:
                legs[side] = (_deg(rng, 5, 35), _deg(rng, 90, 125), _deg(rng, 110, 150))
            else:
                legs[side] = (_deg(rng, 0, 20), _deg(rng, 65, 100), _deg(rng, 60, 110))
        trunk_pitch = _deg(rng, 10, 40) if squat else _deg(rng, -10, 15)
    elif family == "free":
        for side in ("l", "r"):
            legs[side] = (_deg(rng, -10, 50), _deg(rng, -30, 110), _deg(rng, 0, 140))
        trunk_pitch = _deg(rng, -15, 45)
    else:  # stand
        for side in ("l", "r"):
            legs[side] = (_deg(rng, 0, 14), _deg(rng, -10, 20), _deg(rng, 0, 25))
    pose["arms"] = arms
    pose["legs"] = legs
    pose["trunk"] = (trunk_pitch, _deg(rng, -10, 10), _deg(rng, -20, 20))  # pitch, side lean, twist
    pose["head"] = (_deg(rng, -40, 40), _deg(rng, -20, 20), _deg(rng, -15, 15))  # yaw, pitch, roll
    return pose


def _hsv_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), int(255 * _u(rng, *sat)), int(255 * _u(rng, *val))]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _sample_colours(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random clothing colours; skin from a dark-to-light range; hair dark, brown, blond or grey."""
    t = _u(rng, 0.0, 1.0)
    skin = np.array([60, 85, 125]) * (1 - t) + np.array([175, 195, 235]) * t
    skin = skin + rng.normal(0, 8, 3)
    hair = [np.array([25, 25, 30]), np.array([30, 55, 90]), np.array([90, 170, 210]), np.array([150, 150, 155])][
        int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1]))
    ] + rng.normal(0, 10, 3)
    shirt = _hsv_colour(rng, (0.15, 0.95), (0.25, 0.95))
    trousers = _hsv_colour(rng, (0.1, 0.8), (0.15, 0.8))
    shoes = _hsv_colour(rng, (0.0, 0.6), (0.05, 0.5))
    badge = _hsv_colour(rng, (0.5, 1.0), (0.6, 1.0))
    if float(np.abs(badge - shirt).sum()) < 120:
        badge = 255.0 - shirt
    long_sleeves = rng.random() < 0.55
    long_trousers = rng.random() < 0.7
    return {
        "skin": np.clip(skin, 0, 255).astype(np.float32),
        "hair": np.clip(hair, 0, 255).astype(np.float32),
        "shirt": shirt,
        "sleeve": shirt,
        "forearm": shirt if long_sleeves else np.clip(skin, 0, 255).astype(np.float32),
        "trousers": trousers,
        "shank": trousers if long_trousers else np.clip(skin, 0, 255).astype(np.float32),
        "shoes": shoes,
        "badge": badge,
    }


def _sample_proportions(rng: np.random.Generator) -> Proportions:
    """Segment lengths (arm, leg, torso) within ±12 %, head, shoulder and hip width, and girth."""
    seg = {k: float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)) for k in ("arm", "leg", "torso")}
    head = float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.2))
    shoulder = float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.15))
    hip = float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.15))
    build = float(np.clip(rng.normal(1.0, 0.12), 0.75, 1.3))
    return Proportions(seg["arm"], seg["leg"], seg["torso"], head, shoulder, hip, build)


def _sample_view(rng: np.random.Generator) -> View:
    """Yaw (mostly toward the camera), camera elevation, image-plane aspect and rotation."""
    if rng.random() < 0.7:
        yaw = _deg(rng, -80, 80)
    else:
        yaw = _deg(rng, -180, 180)
    pitch = _deg(rng, -15, 15)
    aspect = _u(rng, 0.85, 1.15)
    if rng.random() < 0.85:
        roll = math.radians(float(np.clip(rng.normal(0.0, 12.0), -35, 35)))
    else:
        roll = _deg(rng, -100, 100)
    return View(yaw=yaw, pitch=pitch, aspect=aspect, roll=roll)


def build_person(rng: np.random.Generator, stature_px: float) -> Figure:
    """Sample one figure (pose, proportions, clothes, view) and project it around the origin."""
    pose = _sample_pose(rng)
    colours = _sample_colours(rng)
    shape = _sample_proportions(rng)
    view = _sample_view(rng)
    return assemble_figure(pose, colours, shape, view, stature_px)


# ------------------------------------------------------------------------------------ scene
def _stature_range(cfg: SynthConfig, persons: int) -> tuple[float, float]:
    """Smallest and largest stature (px) of the persons of an image with ``persons`` figures."""
    short = min(cfg.image_height, cfg.image_width)
    low = min(_MIN_STATURE, 0.45 * short)
    fraction = _MAX_STATURE_FRACTION if persons == 1 else _MAX_STATURE_FRACTION_MULTI
    high = max(low * 1.05, fraction * cfg.image_height)
    return low, high


def _place(rng: np.random.Generator, person: Figure, height: int, width: int, truncate: bool) -> None:
    """Translate the figure into the image: fully inside when it fits, else partly outside on purpose."""
    x0, y0, x1, y1 = person.extent
    size = np.array([x1 - x0, y1 - y0])
    low = np.array([-x0, -y0])  # offsets that keep the figure inside
    high = np.array([width - 1 - x1, height - 1 - y1])
    offset = np.empty(2)
    for axis in range(2):
        if high[axis] >= low[axis]:
            offset[axis] = _u(rng, low[axis], high[axis])
        else:
            offset[axis] = (low[axis] + high[axis]) / 2 + _u(rng, -0.25, 0.25) * (low[axis] - high[axis])
    if truncate:
        axis = int(rng.integers(0, 2))
        fraction = _u(rng, 0.15, 0.55)
        if rng.random() < 0.5:  # push out over the low edge
            offset[axis] = low[axis] - fraction * size[axis]
        else:
            offset[axis] = high[axis] + fraction * size[axis]
    _translate(person, offset)

"""SynthPose rendering: figures, backgrounds and occluders drawn into one image and its label map.

Limbs are tapered capsules, torso a convex hull, head ellipses (hair + skin + face details), all
drawn with OpenCV at 1/16-pixel precision (``shift=4``) in back-to-front order; shading comes from
concentric capsule layers offset toward a light direction and a mask-normalised Gaussian blur,
texture from a smooth multiplicative noise field, clothing colours are random.  Backgrounds are
gradients + textured clutter (including limb-like capsules); occluder objects and other persons
hide joints; pixel noise is added last.  Every drawn part also writes its id into an int32 label
map (person ``p``, part ``k``: ``p * 32 + k + 1``; occluders a large constant), from which
:mod:`lrpose_bench.synthpose.coco_writer` derives visibility, boxes and areas.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from lrpose_bench.config import SynthConfig
from lrpose_bench.synthpose.body import _PARTS_PER_PERSON, Figure, _Part
from lrpose_bench.synthpose.coco_writer import _annotate
from lrpose_bench.synthpose.sampling import _hsv_colour, _place, _stature_range, _u, build_person

_SHIFT = 4  # OpenCV fixed-point bits: coordinates at 1/16 pixel
_ONE = 1 << _SHIFT
_OCCLUDER_LABEL = 1 << 30


# --------------------------------------------------------------------------------- drawing
def _fx(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


def _capsule(canvas: np.ndarray, a: np.ndarray, b: np.ndarray, r1: float, r2: float, value: Any, line: int) -> None:
    """Filled tapered capsule: two discs joined by the quadrilateral of their side points (1/16 px).

    Plain-float arithmetic on purpose: this runs ~100 times per image and numpy's per-call overhead
    on 2-vectors dominated the generation time.
    """
    ax, ay, bx, by = float(a[0]), float(a[1]), float(b[0]), float(b[1])
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy)
    nx, ny = (-dy / length, dx / length) if length > 1e-6 else (1.0, 0.0)
    quad = np.array(
        [
            [ax + nx * r1, ay + ny * r1],
            [bx + nx * r2, by + ny * r2],
            [bx - nx * r2, by - ny * r2],
            [ax - nx * r1, ay - ny * r1],
        ]
    )
    cv2.fillConvexPoly(canvas, _fx(quad), value, line, _SHIFT)
    for cx, cy, radius in ((ax, ay, r1), (bx, by, r2)):
        centre = (int(round(cx * _ONE)), int(round(cy * _ONE)))
        cv2.circle(canvas, centre, max(1, int(round(radius * _ONE))), value, -1, line, _SHIFT)


def _ellipse(
    canvas: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle: float, value: Any, line: int
) -> None:
    c = _fx(centre)
    ax = (max(1, int(round(axes[0] * _ONE))), max(1, int(round(axes[1] * _ONE))))
    cv2.ellipse(canvas, (int(c[0]), int(c[1])), ax, angle, 0, 360, value, -1, line, _SHIFT)


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)


def _draw_part(
    part: _Part,
    colour_img: np.ndarray,
    valid: np.ndarray,
    alpha: np.ndarray,
    label: np.ndarray,
    label_value: int,
    origin: np.ndarray,
    light: np.ndarray,
) -> None:
    """Draw one part: shaded colour layers, its anti-aliased alpha, and its id into the label map."""
    col = part.colour
    layers = ((1.0, 0.0, 0.68), (0.72, 0.18, 1.0), (0.36, 0.42, 1.28))  # radius factor, offset, shade
    if part.kind == "capsule":
        a, b = part.points[0] - origin, part.points[1] - origin
        r1, r2 = part.radii
        for k, (rf, off, shade) in enumerate(layers):
            shift = light * off * (r1 + r2) / 2
            _capsule(colour_img, a + shift, b + shift, r1 * rf, r2 * rf, _bgr(col * shade), cv2.LINE_8)
            if k == 0:
                _capsule(valid, a, b, r1, r2, 255, cv2.LINE_8)
        _capsule(alpha, a, b, r1, r2, 255, cv2.LINE_AA)
        _capsule(label, part.points[0], part.points[1], r1, r2, label_value, cv2.LINE_8)
    elif part.kind == "poly":
        hull = _hull(part.points - origin)
        centre = hull.mean(axis=0)
        size = float(np.sqrt(cv2.contourArea(hull.astype(np.float32)) + 1.0))
        for rf, off, shade in layers:
            poly = centre + (hull - centre) * rf + light * off * size * 0.5
            cv2.fillConvexPoly(colour_img, _fx(poly), _bgr(col * shade), cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(valid, _fx(hull), 255, cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(alpha, _fx(hull), 255, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(label, _fx(hull + origin), label_value, cv2.LINE_8, _SHIFT)
        badge = part.extra.get("badge")
        if badge is not None:
            centre_b, radius, colour_b = badge
            _ellipse(colour_img, centre_b - origin, (radius, radius * 0.8), 0.0, _bgr(colour_b), cv2.LINE_AA)
    else:  # head
        e = part.extra
        centre = part.points[0] - origin
        hair_c = e["hair_centre"] - origin
        skin = part.colour
        shapes = []
        if e["facing"] >= 0.0:  # hair behind, face on top
            shapes.append((hair_c, e["hair_axes"], e["hair"]))
            shapes.append((centre, e["axes"], skin))
        else:  # back of the head: hair covers most of it
            shapes.append((centre, e["axes"], skin))
            shapes.append((hair_c, e["hair_axes"], e["hair"]))
        for c, axes, colour in shapes:
            for rf, off, shade in layers:
                shift = light * off * axes[0]
                _ellipse(
                    colour_img, c + shift, (axes[0] * rf, axes[1] * rf), e["angle"], _bgr(colour * shade), cv2.LINE_8
                )
            _ellipse(valid, c, axes, e["angle"], 255, cv2.LINE_8)
            _ellipse(alpha, c, axes, e["angle"], 255, cv2.LINE_AA)
            _ellipse(label, c + origin, axes, e["angle"], label_value, cv2.LINE_8)
        f = max(0.6, e["feature_px"])
        for ear in e["ears"]:
            _ellipse(colour_img, ear - origin, (f * 1.3, f * 1.8), e["angle"], _bgr(skin * 0.85), cv2.LINE_AA)
            _ellipse(valid, ear - origin, (f * 1.3, f * 1.8), e["angle"], 255, cv2.LINE_8)
            _ellipse(alpha, ear - origin, (f * 1.3, f * 1.8), e["angle"], 255, cv2.LINE_AA)
            _ellipse(label, ear, (f * 1.3, f * 1.8), e["angle"], label_value, cv2.LINE_8)
        for eye in e["eyes"]:
            _ellipse(colour_img, eye - origin, (f, f * 0.8), e["angle"], (30, 25, 25), cv2.LINE_AA)
        if e["nose"] is not None:
            _ellipse(colour_img, e["nose"] - origin, (f * 0.9, f * 0.9), 0.0, _bgr(skin * 0.72), cv2.LINE_AA)


def _bgr(colour: np.ndarray) -> tuple[float, float, float]:
    c = np.clip(colour, 0, 255)
    return (float(c[0]), float(c[1]), float(c[2]))


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, channels: int = 1) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a coarse Gaussian grid upsampled bicubically."""
    gh = max(2, int(math.ceil(height / cells)) + 1)
    gw = max(2, int(math.ceil(width / cells)) + 1)
    grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return field.reshape(height, width, channels)


def _draw_person(
    image: np.ndarray, label: np.ndarray, person: Figure, person_index: int, light: np.ndarray, rng: np.random.Generator
) -> None:
    """Composite one figure onto ``image`` (float32 BGR) and write its part ids into ``label``."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = person.extent
    bx0, by0 = max(0, int(math.floor(x0)) - 2), max(0, int(math.floor(y0)) - 2)
    bx1, by1 = min(width, int(math.ceil(x1)) + 3), min(height, int(math.ceil(y1)) + 3)
    if bx1 <= bx0 or by1 <= by0:
        return
    h, w = by1 - by0, bx1 - bx0
    origin = np.array([bx0, by0], dtype=np.float64)
    colour = np.zeros((h, w, 3), np.uint8)
    valid = np.zeros((h, w), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    for part in person.parts:
        _draw_part(part, colour, valid, alpha, label, person_index * _PARTS_PER_PERSON + part.index + 1, origin, light)
    # mask-normalised blur: soft shading inside the figure without bleeding the background in
    sigma = max(0.45, 0.008 * person.stature)
    m = valid.astype(np.float32) / 255.0
    num = cv2.GaussianBlur(colour.astype(np.float32) * m[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)[..., None]
    shaded = num / np.maximum(den, 1e-3)
    texture = 1.0 + _u(rng, 0.05, 0.16) * _smooth_noise(rng, h, w, max(2, int(person.stature / 14)))
    shaded = shaded * texture
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    region = image[by0:by1, bx0:bx1]
    region[...] = region * (1.0 - a) + shaded * a


def _draw_occluder(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, centre: np.ndarray, size: float
) -> None:
    """An object in front of a person (box, disc or polygon), textured, written into the label map."""
    height, width = image.shape[:2]
    alpha = np.zeros((height, width), np.uint8)
    kind = int(rng.integers(0, 3))
    centre = centre + rng.uniform(-0.3, 0.3, 2) * size
    if kind == 0:
        angle = _u(rng, 0, math.pi)
        half = np.array([size * _u(rng, 0.4, 1.0), size * _u(rng, 0.3, 0.8)])
        c, s = math.cos(angle), math.sin(angle)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        poly = corners @ np.array([[c, s], [-s, c]]) + centre
        cv2.fillConvexPoly(alpha, _fx(poly), 255, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(label, _fx(poly), _OCCLUDER_LABEL, cv2.LINE_8, _SHIFT)
    elif kind == 1:
        axes = (size * _u(rng, 0.4, 0.9), size * _u(rng, 0.3, 0.8))
        angle = _u(rng, 0, 180)
        _ellipse(alpha, centre, axes, angle, 255, cv2.LINE_AA)
        _ellipse(label, centre, axes, angle, _OCCLUDER_LABEL, cv2.LINE_8)
    else:
        count = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * math.pi, count))
        radii = size * rng.uniform(0.45, 0.95, count)
        poly = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
        hull = _hull(poly)
        cv2.fillConvexPoly(alpha, _fx(hull), 255, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(label, _fx(hull), _OCCLUDER_LABEL, cv2.LINE_8, _SHIFT)
    fill = _gradient(
        rng, height, width, _hsv_colour(rng, (0.0, 0.9), (0.2, 0.95)), _hsv_colour(rng, (0.0, 0.9), (0.2, 0.95))
    )
    fill *= 1.0 + 0.12 * _smooth_noise(rng, height, width, max(3, int(size / 3)))
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    image[...] = image * (1.0 - a) + fill * a


def _gradient(rng: np.random.Generator, height: int, width: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Linear colour ramp from ``c0`` to ``c1`` along a random direction (float32 BGR)."""
    angle = _u(rng, 0, 2 * math.pi)
    xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(math.cos(angle))
    ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(math.sin(angle))
    t = xs + ys
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0 = np.asarray(c0, np.float32)
    return c0 + (np.asarray(c1, np.float32) - c0) * t[..., None]


def _render_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient + smooth texture + random clutter (boxes, discs, lines, polygons, limb-like capsules)."""
    image = _gradient(
        rng, height, width, _hsv_colour(rng, (0.0, 0.7), (0.15, 0.95)), _hsv_colour(rng, (0.0, 0.7), (0.15, 0.95))
    )
    image += _u(rng, 5, 30) * _smooth_noise(rng, height, width, int(rng.integers(6, 40)), 3)
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    scale = min(height, width)
    for _ in range(int(rng.integers(3, 14))):
        colour = _bgr(_hsv_colour(rng, (0.0, 0.9), (0.1, 1.0)))
        kind = int(rng.integers(0, 5))
        centre = rng.uniform(-0.1, 1.1, 2) * np.array([width, height])
        size = scale * _u(rng, 0.04, 0.35)
        if kind == 0:
            w, h = size * _u(rng, 0.5, 2.0), size * _u(rng, 0.5, 2.0)
            box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (w, h), _u(rng, 0, 90)))
            cv2.fillConvexPoly(canvas, _fx(box), colour, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            _ellipse(
                canvas,
                centre,
                (size * _u(rng, 0.3, 1.0), size * _u(rng, 0.3, 1.0)),
                _u(rng, 0, 180),
                colour,
                cv2.LINE_AA,
            )
        elif kind == 2:
            end = centre + rng.normal(0, size, 2)
            thickness = int(rng.integers(1, max(2, int(size / 6))))
            cv2.line(
                canvas,
                tuple(int(v) for v in _fx(centre)),
                tuple(int(v) for v in _fx(end)),
                colour,
                thickness,
                cv2.LINE_AA,
                _SHIFT,
            )
        elif kind == 3:
            count = int(rng.integers(3, 7))
            poly = centre + rng.normal(0, size * 0.6, (count, 2))
            cv2.fillConvexPoly(canvas, _fx(_hull(poly)), colour, cv2.LINE_AA, _SHIFT)
        else:  # limb-like distractor
            end = centre + rng.normal(0, size, 2)
            r = size * _u(rng, 0.05, 0.18)
            _capsule(canvas, centre, end, r, r * _u(rng, 0.6, 1.0), colour, cv2.LINE_AA)
    image = canvas.astype(np.float32)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), _u(rng, 0.4, 1.5))
    return image


# ------------------------------------------------------------------------------ one image
def render_image(cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render one image; return it (uint8 BGR) and its annotations (without ids).

    Each annotation holds ``keypoints`` (51 floats), ``num_keypoints``, ``bbox``, ``area``.
    """
    height, width = cfg.image_height, cfg.image_width
    image = _render_background(rng, height, width)
    label = np.zeros((height, width), np.int32)
    count = 1
    if cfg.max_persons > 1 and rng.random() < cfg.multi_person_prob:
        count = int(rng.integers(2, cfg.max_persons + 1))
    low, high = _stature_range(cfg, count)
    persons = []
    for _ in range(count):
        stature = float(math.exp(_u(rng, math.log(low), math.log(high))))
        person = build_person(rng, stature)
        _place(rng, person, height, width, rng.random() < cfg.truncation_prob)
        persons.append(person)
    persons.sort(key=lambda p: p.stature)  # larger figures are nearer: drawn last, in front
    light = rng.normal(0, 1, 2)
    light = light / max(float(np.linalg.norm(light)), 1e-6)
    for index, person in enumerate(persons):
        _draw_person(image, label, person, index, light, rng)
    for person in persons:
        if rng.random() < cfg.occlusion_prob:
            inside = [j for j in person.joints if 0 <= j[0] <= width - 1 and 0 <= j[1] <= height - 1]
            if inside:
                target = inside[int(rng.integers(0, len(inside)))]
                _draw_occluder(image, label, rng, target, person.stature * _u(rng, 0.1, 0.22))
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (0, 0), _u(rng, 0.3, 0.8))
    image += np.float32(_u(rng, 1.0, 7.0)) * rng.standard_normal(image.shape, dtype=np.float32)
    out = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return out, [_annotate(person, index, label) for index, person in enumerate(persons)]

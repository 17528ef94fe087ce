"""SynthPose: the embedded, procedurally rendered keypoint data set (no download needed).

Why it exists: every command of the suite must work on a fresh machine, and the differences between
pose methods at low input resolution (64×48 / 128×96 crops, where heat-map arg-max quantization is a
large fraction of a joint's OKS tolerance) must show up on a CPU in minutes.  So the images are small
(192×192 by default) but the figures are not trivial: joints have to be *inferred* from limb geometry.

What a figure is
    A 3-D stick body (pelvis-centred frame: x = the person's left, y = down, z = forward, unit =
    stature) with the 17 COCO joints.  Segment lengths follow the anthropometric ratios of Drillis &
    Contini (1966), as tabulated by Winter, *Biomechanics and Motor Control of Human Movement*
    (upper arm 0.186 H, forearm 0.146 H, thigh 0.245 H, shank 0.246 H, shoulder height 0.818 H, hip
    0.530 H), each jittered per person.  Joint angles are drawn from plausible ranges (a few pose
    families: standing, walking/running, sitting/squatting, free), then the body is turned (yaw, camera
    pitch), projected orthographically, scaled (~40 px to most of the image height), stretched
    (aspect) and rotated in the image plane.  Because the body is 3-D, the face (eyes, nose) sits on
    the side the figure faces, far limbs are drawn behind the torso, and a chest badge on the *left*
    side plus a slightly lighter left side make left and right distinguishable, so flip pairs matter.

Rendering
    Limbs are tapered capsules, torso a convex hull, head ellipses (hair + skin + face details), all
    drawn with OpenCV at 1/16-pixel precision (``shift=4``) in back-to-front order; shading comes from
    concentric capsule layers offset toward a light direction and a mask-normalised Gaussian blur,
    texture from a smooth multiplicative noise field, clothing colours are random.  Backgrounds are
    gradients + textured clutter (including limb-like capsules); occluder objects and other persons
    hide joints; pixel noise is added last.

Labels (COCO keypoint format, pixel centres at integer coordinates: pixel (i, j) covers
[i-0.5, i+0.5]; OpenCV's ``shift`` drawing uses the same convention, so a joint at (x, y) is exactly
where the renderer put it)
    * v=2 — inside the image and the pixel under the joint shows one of the joint's own body parts
      (e.g. the elbow shows the upper arm or forearm) and, for face points, the point faces the camera;
    * v=1 — inside the image but covered (occluder, another person, another part of the same person,
      or the back of the head);
    * v=0 with x=y=0 — outside the image (truncation), COCO's convention.
    ``bbox`` is tight around the person's visible rendered pixels as a pixel-coverage box
    ``[xmin-0.5, ymin-0.5, xmax-xmin+1, ymax-ymin+1]`` (its centre is the mask's centre in the suite's
    convention), ``area`` the visible pixel count (COCO's segment area; it drives the APM/APL split).

Images are written as PNG: lossless, so the sub-pixel edges of small figures are not smeared by JPEG's
chroma subsampling and block artefacts (which would add a method-independent error floor), and byte-
identical for a given seed; degradations belong to ``lrpose_bench.data.degrade``, not to storage.

Rendering constants (anthropometry, colour ranges) are module constants below: they define the data
set (a change bumps :data:`FORMAT_VERSION`); everything a user may change is in ``SynthConfig``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lrpose_bench.config import SynthConfig, check_rules
from lrpose_bench.errors import DataError
from lrpose_bench.keypoints import COCO_CATEGORY, NUM_JOINTS

#: bump when the rendering or the format changes (it is part of the cache key)
FORMAT_VERSION: int = 2

#: written last into a finished folder; its presence means "complete"
MARKER_NAME = "SYNTHPOSE_COMPLETE.json"

_SHIFT = 4  # OpenCV fixed-point bits: coordinates at 1/16 pixel
_ONE = 1 << _SHIFT
_SPLITS = ("train", "val")
_VAL_ID_OFFSET = 1_000_000  # val image ids are distinct from train ids (easier debugging)
_OCCLUDER_LABEL = 1 << 30
# zlib level 1 with the RLE strategy: 2.8 ms/192² image, 64 KB (level 3: 5 ms, 72 KB), lossless either way
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]

# ------------------------------------------------------------------------- body model constants
# Body frame: origin at the pelvis centre, x → person's left, y → down, z → forward; unit = stature.
# Drillis & Contini segment ratios (Winter, Biomechanics, Fig. 4.1): top of head 1.0 H → y=-0.47,
# shoulder 0.818 H → y=-0.288, hip 0.530 H → y=0, knee 0.285 H, ankle 0.039 H.
_HIP_HALF_WIDTH = 0.075
_SHOULDER_HALF_WIDTH = 0.11
_SHOULDER_Y = -0.288
_NECK_BASE_Y = -0.31
_NECK_TOP_Y = -0.345
_UPPER_ARM = 0.186
_FOREARM = 0.146
_HAND = 0.07
_THIGH = 0.245
_SHANK = 0.246
_FOOT_FRONT = 0.11
_FOOT_BACK = 0.03
# head frame: origin at the top of the neck; the head centre sits 0.06 H above it
_HEAD_CENTRE = (0.0, -0.06, 0.005)
_HEAD_RADII = (0.05, 0.065, 0.055)  # half width, half height, half depth
_EYE = (0.032, 0.0, 0.045)
_NOSE = (0.0, 0.012, 0.062)
_EAR = (0.052, 0.004, -0.008)
# limb radii (proximal, distal) in stature units
_RADII = {
    "neck": (0.03, 0.03),
    "upper_arm": (0.034, 0.027),
    "forearm": (0.026, 0.02),
    "hand": (0.02, 0.017),
    "thigh": (0.058, 0.042),
    "shank": (0.04, 0.027),
    "foot": (0.024, 0.02),
}
# part indices (also the order of the label codes)
_PARTS = (
    "torso_upper",
    "torso_lower",
    "neck",
    "head",
    "l_upper_arm",
    "r_upper_arm",
    "l_forearm",
    "r_forearm",
    "l_hand",
    "r_hand",
    "l_thigh",
    "r_thigh",
    "l_shank",
    "r_shank",
    "l_foot",
    "r_foot",
)
_P = {name: index for index, name in enumerate(_PARTS)}
_PARTS_PER_PERSON = 32
#: body parts whose pixels count as "the joint is visible" (COCO joint order)
_JOINT_PARTS: tuple[tuple[int, ...], ...] = (
    (_P["head"],),
    (_P["head"],),
    (_P["head"],),
    (_P["head"],),
    (_P["head"],),
    (_P["torso_upper"], _P["l_upper_arm"]),
    (_P["torso_upper"], _P["r_upper_arm"]),
    (_P["l_upper_arm"], _P["l_forearm"]),
    (_P["r_upper_arm"], _P["r_forearm"]),
    (_P["l_forearm"], _P["l_hand"]),
    (_P["r_forearm"], _P["r_hand"]),
    (_P["torso_lower"], _P["torso_upper"], _P["l_thigh"]),
    (_P["torso_lower"], _P["torso_upper"], _P["r_thigh"]),
    (_P["l_thigh"], _P["l_shank"]),
    (_P["r_thigh"], _P["r_shank"]),
    (_P["l_shank"], _P["l_foot"]),
    (_P["r_shank"], _P["r_foot"]),
)
# minimum facing (camera-z of the outward surface direction) for face points to count as visible
_FACE_VISIBLE_Z = {"eye": 0.2, "nose": -0.1, "ear": -0.3}
_MIN_BOX_SIDE = 4.0  # px; smaller visible boxes are not annotated
_MIN_AREA = 24.0  # px²
_MIN_STATURE = 72.0  # px (or 0.45 of the short side): most persons then have a segment area >= 32^2, COCO-like (COCO labels keypoints on few small persons)
_MAX_STATURE_FRACTION = 0.95  # of the image height, single person
_MAX_STATURE_FRACTION_MULTI = 0.8


# ------------------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class SynthPosePaths:
    """Where a generated SynthPose folder keeps its parts."""

    root: Path
    train_annotations: Path  # root/annotations/person_keypoints_train.json
    val_annotations: Path  # root/annotations/person_keypoints_val.json
    train_images: Path  # root/train/
    val_images: Path  # root/val/

    @classmethod
    def under(cls, root: Path | str) -> SynthPosePaths:
        root = Path(root)
        return cls(
            root=root,
            train_annotations=root / "annotations" / "person_keypoints_train.json",
            val_annotations=root / "annotations" / "person_keypoints_val.json",
            train_images=root / "train",
            val_images=root / "val",
        )

    def annotations(self, split: str) -> Path:
        return self.train_annotations if split == "train" else self.val_annotations

    def images(self, split: str) -> Path:
        return self.train_images if split == "train" else self.val_images

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    def is_complete(self) -> bool:
        """True when the completion marker (written last) is present."""
        return self.marker.is_file()


# -------------------------------------------------------------------------------- geometry
def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _limb_dir(abduction: float, flexion: float, side: float) -> np.ndarray:
    """Direction of a limb hanging down (0,1,0), abducted outward, then flexed forward (radians).

    flexion 90° points forward (+z), 180° up; abduction 90° points sideways (outward = ``side``·x).
    """
    ca = math.cos(abduction)
    return np.array([side * math.sin(abduction), ca * math.cos(flexion), ca * math.sin(flexion)])


def _bend(upper: np.ndarray, toward: np.ndarray, angle: float, twist: float) -> np.ndarray:
    """Distal segment direction: ``upper`` bent by ``angle`` toward ``toward`` (⊥ part), twisted about ``upper``."""
    perp = toward - float(toward @ upper) * upper
    norm = float(np.linalg.norm(perp))
    if norm < 1e-3:  # degenerate: any perpendicular
        perp = np.cross(upper, np.array([1.0, 0.0, 0.0]))
        norm = float(np.linalg.norm(perp))
    perp = perp / norm
    perp = perp * math.cos(twist) + np.cross(upper, perp) * math.sin(twist)
    return math.cos(angle) * upper + math.sin(angle) * perp


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


@dataclass
class _Part:
    """One drawable body part in image coordinates (pixels)."""

    index: int
    kind: str  # "capsule" | "poly" | "head"
    points: np.ndarray  # (N, 2)
    radii: tuple[float, ...]
    colour: np.ndarray
    depth: float
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class Figure:
    joints: np.ndarray  # (17, 2) image coordinates
    face_visible: np.ndarray  # (17,) bool: False for face points turned away from the camera
    parts: list[_Part]
    stature: float  # px
    extent: np.ndarray  # (4,) xmin, ymin, xmax, ymax of the drawn figure
    joints3d: np.ndarray  # (17, 3) body frame (pelvis origin, x left, y down, z forward), stature units
    view: dict[str, float]  # yaw, roll (radians), aspect: how the body was turned into the image


def build_person(rng: np.random.Generator, stature_px: float) -> Figure:
    """Sample one figure (pose, proportions, clothes, view) and project it around the origin."""
    pose = _sample_pose(rng)
    colours = _sample_colours(rng)
    seg = {k: float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12)) for k in ("arm", "leg", "torso")}
    head_scale = float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.2))
    sw = _SHOULDER_HALF_WIDTH * float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.15))
    hw = _HIP_HALF_WIDTH * float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.15))
    build = float(np.clip(rng.normal(1.0, 0.12), 0.75, 1.3))

    trunk_pitch, side_lean, twist = pose["trunk"]
    r_trunk = _rot_y(twist) @ _rot_z(side_lean) @ _rot_x(-trunk_pitch)
    head_yaw, head_pitch, head_roll = pose["head"]
    r_head = r_trunk @ _rot_y(head_yaw) @ _rot_x(-head_pitch) @ _rot_z(head_roll)

    ft = seg["torso"]
    pts: dict[str, np.ndarray] = {}
    pts["l_hip"] = np.array([hw, 0.0, 0.0])
    pts["r_hip"] = np.array([-hw, 0.0, 0.0])
    pts["l_shoulder"] = r_trunk @ np.array([sw, _SHOULDER_Y * ft, 0.0])
    pts["r_shoulder"] = r_trunk @ np.array([-sw, _SHOULDER_Y * ft, 0.0])
    neck_base = r_trunk @ np.array([0.0, _NECK_BASE_Y * ft, 0.0])
    neck_top = r_trunk @ np.array([0.0, _NECK_TOP_Y * ft, 0.0])
    head_c = neck_top + r_head @ (np.array(_HEAD_CENTRE) * head_scale)
    for name, offset in (("nose", _NOSE), ("left_eye", _EYE), ("left_ear", _EAR)):
        pts[name] = head_c + r_head @ (np.array(offset) * head_scale)
        if name != "nose":
            mirrored = np.array(offset) * np.array([-1.0, 1.0, 1.0])
            pts[name.replace("left", "right")] = head_c + r_head @ (mirrored * head_scale)

    for side, sign in (("l", 1.0), ("r", -1.0)):
        abd, flex, elbow, tw = pose["arms"][side]
        upper = r_trunk @ _limb_dir(abd, flex, sign)
        toward = r_trunk @ _limb_dir(abd, flex + math.pi / 2, sign)
        fore = _bend(upper, toward, elbow, sign * tw)
        shoulder = pts[f"{side}_shoulder"]
        pts[f"{side}_elbow"] = shoulder + upper * _UPPER_ARM * seg["arm"]
        pts[f"{side}_wrist"] = pts[f"{side}_elbow"] + fore * _FOREARM * seg["arm"]
        pts[f"{side}_hand_end"] = pts[f"{side}_wrist"] + fore * _HAND * seg["arm"]
        abd, flex, knee = pose["legs"][side]
        thigh = _limb_dir(abd, flex, sign)
        toward = _limb_dir(abd, flex - math.pi / 2, sign)
        shank = _bend(thigh, toward, knee, 0.0)
        pts[f"{side}_knee"] = pts[f"{side}_hip"] + thigh * _THIGH * seg["leg"]
        pts[f"{side}_ankle"] = pts[f"{side}_knee"] + shank * _SHANK * seg["leg"]
        foot = np.array([sign * 0.25, 0.3, 1.0])  # forward, toes slightly out and down
        foot = foot / np.linalg.norm(foot)
        pts[f"{side}_heel"] = pts[f"{side}_ankle"] - foot * _FOOT_BACK
        pts[f"{side}_toe"] = pts[f"{side}_ankle"] + foot * _FOOT_FRONT * seg["leg"]

    # torso shells: chest (trunk frame) and pelvis (pelvis frame), with some depth so yaw narrows them
    chest_local = []
    waist_y = -0.14 * ft
    for x, y, depth in ((sw + 0.025, _SHOULDER_Y * ft - 0.01, 0.05), (sw * 0.78 * build**0.5, waist_y, 0.06)):
        for sx in (1.0, -1.0):
            for sz in (1.0, -1.0):
                chest_local.append([sx * x * build**0.3, y, sz * depth * build])
    chest = [r_trunk @ np.array(p) for p in chest_local]
    waist = chest[4:]
    pelvis = list(waist)
    for sx in (1.0, -1.0):
        for sz in (1.0, -1.0):
            pelvis.append(np.array([sx * (hw + 0.045) * build**0.3, 0.04, sz * 0.06 * build]))

    # view: yaw (mostly toward the camera), camera elevation; then image-plane scale/aspect/rotation
    if rng.random() < 0.7:
        yaw = _deg(rng, -80, 80)
    else:
        yaw = _deg(rng, -180, 180)
    r_view = _rot_x(_deg(rng, -15, 15)) @ _rot_y(yaw)
    aspect = _u(rng, 0.85, 1.15)
    if rng.random() < 0.85:
        roll = math.radians(float(np.clip(rng.normal(0.0, 12.0), -35, 35)))
    else:
        roll = _deg(rng, -100, 100)
    c, s = math.cos(roll), math.sin(roll)
    plane = np.array([[c, -s], [s, c]]) @ np.diag([aspect, 1.0]) * stature_px

    def cam(p: np.ndarray) -> np.ndarray:
        return r_view @ p

    def img(p: np.ndarray) -> np.ndarray:
        return plane @ cam(p)[:2]

    names = (
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "l_shoulder",
        "r_shoulder",
        "l_elbow",
        "r_elbow",
        "l_wrist",
        "r_wrist",
        "l_hip",
        "r_hip",
        "l_knee",
        "r_knee",
        "l_ankle",
        "r_ankle",
    )
    joints = np.stack([img(pts[n]) for n in names])
    joints3d = np.stack([pts[n] for n in names])

    # face points turned away from the camera are labelled but not visible
    r_head_cam = r_view @ r_head
    face_visible = np.ones(NUM_JOINTS, dtype=bool)
    mirror = np.array([-1.0, 1.0, 1.0])
    face_dirs = [
        ("nose", np.array(_NOSE), 0),
        ("eye", np.array(_EYE), 1),
        ("eye", np.array(_EYE) * mirror, 2),
        ("ear", np.array(_EAR), 3),
        ("ear", np.array(_EAR) * mirror, 4),
    ]
    for kind, offset, index in face_dirs:
        direction = offset / np.linalg.norm(offset)  # outward surface direction from the head centre
        face_visible[index] = float((r_head_cam @ direction)[2]) > _FACE_VISIBLE_Z[kind]

    # parts with depth (camera z: larger is nearer)
    parts: list[_Part] = []
    light_side = {"l": 1.06, "r": 0.94}  # the left side is slightly lighter: left/right are distinguishable

    def capsule(name: str, a: np.ndarray, b: np.ndarray, radius_key: str, colour: np.ndarray, bias: float) -> None:
        r1, r2 = _RADII[radius_key]
        scale = stature_px * build
        shade = light_side.get(name[0], 1.0) if name[1] == "_" else 1.0
        parts.append(
            _Part(
                _P[name],
                "capsule",
                np.stack([img(a), img(b)]),
                (r1 * scale, r2 * scale),
                np.clip(colour * shade, 0, 255),
                float(cam(a)[2] + cam(b)[2]) / 2 + bias,
            )
        )

    for side in ("l", "r"):
        capsule(
            f"{side}_upper_arm", pts[f"{side}_shoulder"], pts[f"{side}_elbow"], "upper_arm", colours["sleeve"], 0.012
        )
        capsule(f"{side}_forearm", pts[f"{side}_elbow"], pts[f"{side}_wrist"], "forearm", colours["forearm"], 0.014)
        capsule(f"{side}_hand", pts[f"{side}_wrist"], pts[f"{side}_hand_end"], "hand", colours["skin"], 0.016)
        capsule(f"{side}_thigh", pts[f"{side}_hip"], pts[f"{side}_knee"], "thigh", colours["trousers"], 0.008)
        capsule(f"{side}_shank", pts[f"{side}_knee"], pts[f"{side}_ankle"], "shank", colours["shank"], 0.01)
        capsule(f"{side}_foot", pts[f"{side}_heel"], pts[f"{side}_toe"], "foot", colours["shoes"], 0.012)
    capsule("neck", neck_base, neck_top + r_head @ np.array([0, -0.02, 0]), "neck", colours["skin"], -0.01)

    chest_2d = np.stack([img(p) for p in chest])
    pelvis_2d = np.stack([img(p) for p in pelvis])
    torso_normal = r_view @ r_trunk @ np.array([0.0, 0.0, 1.0])
    badge = None
    if torso_normal[2] > 0.2:  # badge on the left chest, seen from the front only
        centre = r_trunk @ np.array([0.5 * sw, (_SHOULDER_Y + 0.07) * ft, 0.055 * build])
        badge = (img(centre), 0.022 * stature_px, colours["badge"])
    parts.append(
        _Part(
            _P["torso_upper"],
            "poly",
            chest_2d,
            (),
            colours["shirt"],
            float(np.mean([cam(p)[2] for p in chest])),
            {"badge": badge},
        )
    )
    parts.append(
        _Part(
            _P["torso_lower"],
            "poly",
            pelvis_2d,
            (),
            colours["trousers"],
            float(np.mean([cam(p)[2] for p in pelvis])) - 0.001,
        )
    )

    # head: skin ellipse, hair cap toward the back/top, eyes/nose/ears where they face the camera
    up = r_head_cam @ np.array([0.0, -1.0, 0.0])
    up2 = plane @ up[:2]
    up_len = float(np.linalg.norm(up2)) / stature_px
    angle = math.degrees(math.atan2(up2[0], -up2[1])) if up_len > 1e-6 else 0.0
    rx, ry, rz = (v * head_scale * stature_px for v in _HEAD_RADII)
    ry_eff = ry * up_len + rz * (1.0 - up_len)
    hair_c = head_c + r_head @ (np.array([0.0, -0.014, -0.022]) * head_scale)
    facing = float((r_head_cam @ np.array([0.0, 0.0, 1.0]))[2])
    head_extra = {
        "axes": (rx * aspect**0.5, ry_eff),
        "angle": angle,
        "hair_centre": img(hair_c),
        "hair_axes": (rx * 0.98 * aspect**0.5, ry_eff * 0.92),
        "hair": colours["hair"],
        "facing": facing,
        "eyes": [joints[i] for i in (1, 2) if face_visible[i]],
        "nose": joints[0] if face_visible[0] else None,
        "ears": [joints[i] for i in (3, 4) if face_visible[i]],
        "feature_px": 0.009 * head_scale * stature_px,
    }
    parts.append(
        _Part(_P["head"], "head", img(head_c)[None], (), colours["skin"], float(cam(head_c)[2]) + 0.02, head_extra)
    )
    parts.sort(key=lambda part: part.depth)

    all_pts = [joints]
    for part in parts:
        pad = max(part.radii) if part.radii else (max(head_extra["axes"]) * 1.3 if part.kind == "head" else 0.0)
        all_pts.append(part.points - pad)
        all_pts.append(part.points + pad)
    stacked = np.concatenate(all_pts)
    extent = np.concatenate([stacked.min(axis=0), stacked.max(axis=0)])
    view = {"yaw": yaw, "roll": roll, "aspect": aspect}
    return Figure(joints, face_visible, parts, stature_px, extent, joints3d, view)


def _translate(person: Figure, offset: np.ndarray) -> None:
    person.joints = person.joints + offset
    person.extent = person.extent + np.concatenate([offset, offset])
    for part in person.parts:
        part.points = part.points + offset
        if part.kind == "head":
            extra = part.extra
            extra["hair_centre"] = extra["hair_centre"] + offset
            extra["eyes"] = [e + offset for e in extra["eyes"]]
            extra["ears"] = [e + offset for e in extra["ears"]]
            if extra["nose"] is not None:
                extra["nose"] = extra["nose"] + offset
        badge = part.extra.get("badge")
        if badge is not None:
            part.extra["badge"] = (badge[0] + offset, badge[1], badge[2])


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
def _stature_range(cfg: SynthConfig, persons: int) -> tuple[float, float]:
    short = min(cfg.image_height, cfg.image_width)
    low = min(_MIN_STATURE, 0.45 * short)
    fraction = _MAX_STATURE_FRACTION if persons == 1 else _MAX_STATURE_FRACTION_MULTI
    high = max(low * 1.05, fraction * cfg.image_height)
    return low, high


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


def _annotate(person: Figure, index: int, label: np.ndarray) -> dict[str, Any]:
    """COCO annotation for one figure from its joints and the final label map (visible pixels)."""
    height, width = label.shape
    base = index * _PARTS_PER_PERSON + 1
    keypoints: list[float] = []
    for j, (x, y) in enumerate(person.joints):
        if not (0.0 <= x <= width - 1 and 0.0 <= y <= height - 1):
            keypoints += [0.0, 0.0, 0]
            continue
        col, row = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        value = int(label[row, col]) - base
        own = value in _JOINT_PARTS[j]
        visible = 2 if own and person.face_visible[j] else 1
        keypoints += [round(float(x), 3), round(float(y), 3), visible]
    mask = (label >= base) & (label < base + _PARTS_PER_PERSON)
    area = int(mask.sum())
    if area:
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        bbox = [
            float(cols[0]) - 0.5,
            float(rows[0]) - 0.5,
            float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1),
        ]
    else:
        bbox = [0.0, 0.0, 0.0, 0.0]
    return {
        "keypoints": keypoints,
        "num_keypoints": int(sum(1 for v in keypoints[2::3] if v > 0)),
        "bbox": bbox,
        "area": float(area),
    }


def _keep(annotation: dict[str, Any]) -> bool:
    _, _, w, h = annotation["bbox"]
    return annotation["num_keypoints"] >= 1 and min(w, h) >= _MIN_BOX_SIDE and annotation["area"] >= _MIN_AREA


# ------------------------------------------------------------------------------- generation
def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Per-image stream; train and val are disjoint children of ``seed`` (like ``SeedSequence.spawn``)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(_SPLITS.index(split), index)))


def _image_id(split: str, index: int) -> int:
    return index + 1 + (_VAL_ID_OFFSET if split == "val" else 0)


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


def validate_synth_config(cfg: SynthConfig) -> None:
    """Reject settings that cannot make a data set, naming the key (``data.synth.<field>``); the
    ranges live in the schema (:class:`lrpose_bench.config.SynthConfig`)."""
    check_rules(cfg, "data.synth")


def _default_workers(total: int) -> int:
    cpus = os.cpu_count() or 1
    return 0 if total < 128 or cpus < 2 else 2


def generate_synthpose(
    out_dir: Path, cfg: SynthConfig, progress: bool = True, *, workers: int | None = None
) -> SynthPosePaths:
    """Write the data set into ``out_dir`` (images + COCO JSON); the completion marker is written last.

    ``workers``: processes for rendering (``None``: 2 when there are at least 2 CPUs and enough
    images, else in-process). The output does not depend on it: each image has its own seed stream.
    """
    validate_synth_config(cfg)
    paths = SynthPosePaths.under(out_dir)
    try:
        for folder in (paths.root / "annotations", paths.train_images, paths.val_images):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the SynthPose folder {paths.root}: {error.strerror}; choose another data.cache_dir"
        ) from None
    if paths.marker.exists():
        paths.marker.unlink()
    cfg_dict = dataclasses.asdict(cfg)
    tasks = [
        (cfg_dict, split, index, str(paths.images(split)))
        for split, n in (("train", cfg.num_train_images), ("val", cfg.num_val_images))
        for index in range(n)
    ]
    results: dict[str, list[list[dict[str, Any]]]] = {
        "train": [[] for _ in range(cfg.num_train_images)],
        "val": [[] for _ in range(cfg.num_val_images)],
    }
    n_workers = _default_workers(len(tasks)) if workers is None else max(0, int(workers))

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="SynthPose", unit="img", disable=not progress)
    try:
        for split, index, annotations in _run_tasks(tasks, n_workers):
            results[split][index] = annotations
            bar.update(1)
    finally:
        bar.close()

    for split in _SPLITS:
        doc = _coco_document(cfg, split, results[split])
        text = json.dumps(doc, separators=(",", ":"))
        paths.annotations(split).write_text(text)
    marker = {"format_version": FORMAT_VERSION, "config": cfg_dict, "counts": {s: len(results[s]) for s in _SPLITS}}
    paths.marker.write_text(json.dumps(marker, indent=1, sort_keys=True))
    return paths


def _run_tasks(
    tasks: list[tuple[dict[str, Any], str, int, str]], workers: int
) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
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


def _coco_document(cfg: SynthConfig, split: str, per_image: list[list[dict[str, Any]]]) -> dict[str, Any]:
    images = []
    annotations = []
    ann_id = _image_id(split, 0) * 100  # unique across splits too
    for index, anns in enumerate(per_image):
        image_id = _image_id(split, index)
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.png", "height": cfg.image_height, "width": cfg.image_width}
        )
        for ann in anns:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": ann["keypoints"],
                    "num_keypoints": ann["num_keypoints"],
                    "bbox": ann["bbox"],
                    "area": ann["area"],
                }
            )
            ann_id += 1
    return {
        "info": {
            "description": f"SynthPose {split} (lrpose-bench procedural data set)",
            "version": str(FORMAT_VERSION),
            "seed": cfg.seed,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [COCO_CATEGORY],
    }


# ------------------------------------------------------------------------------------ cache
def cache_key(cfg: SynthConfig) -> str:
    """Folder name for ``cfg``: a hash of all its fields and :data:`FORMAT_VERSION`."""
    text = json.dumps({"format_version": FORMAT_VERSION, "config": dataclasses.asdict(cfg)}, sort_keys=True)
    return f"synthpose-v{FORMAT_VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def ensure_synthpose(cache_dir: Path | str, cfg: SynthConfig, progress: bool = True) -> SynthPosePaths:
    """Cached generation under ``cache_dir`` (``~`` expanded), safe against interruption and races.

    A complete folder (marker present) is reused. Otherwise the data set is generated into a
    temporary folder next to the target and renamed into place atomically, so no interrupted run
    leaves a folder that looks complete; a stale incomplete target is moved aside first. If the rename
    loses a race against another process that finished first, that process's folder is used.
    """
    validate_synth_config(cfg)
    base = Path(cache_dir).expanduser()
    target = SynthPosePaths.under(base / cache_key(cfg))
    if target.is_complete():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.root.name}.tmp-", dir=base))
    except OSError as error:
        raise DataError(
            f"cannot write to the cache folder {base} ({error.strerror}); set data.cache_dir to a writable folder"
        ) from None
    try:
        generate_synthpose(tmp, cfg, progress=progress)
        if target.root.exists() and not target.is_complete():
            _discard(target.root, base)  # stale, incomplete (e.g. written by hand or an old version)
        try:
            os.rename(tmp, target.root)
        except OSError:
            if target.is_complete():  # another process won the race: use its folder
                return target
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _discard(folder: Path, base: Path) -> None:
    """Move ``folder`` aside atomically, then delete it (a concurrent reader never sees half of it)."""
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=base))
    try:
        os.rename(folder, trash / "x")
    except OSError:
        pass  # someone else moved or replaced it
    shutil.rmtree(trash, ignore_errors=True)

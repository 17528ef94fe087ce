"""The SynthPose body model: a 3-D stick body with the 17 COCO joints, posed and projected into an image.

A figure is a 3-D stick body (pelvis-centred frame: x = the person's left, y = down, z = forward,
unit = stature).  Segment lengths follow the anthropometric ratios of Drillis & Contini (1966), as
tabulated by Winter, *Biomechanics and Motor Control of Human Movement* (upper arm 0.186 H, forearm
0.146 H, thigh 0.245 H, shank 0.246 H, shoulder height 0.818 H, hip 0.530 H), each scaled by the
person's :class:`Proportions`.  Given joint angles (:mod:`lrpose_bench.synthpose.sampling` draws them),
:func:`assemble_figure` turns the body (yaw, camera pitch), projects it orthographically, scales it,
stretches it (aspect) and rotates it in the image plane.  Because the body is 3-D, the face (eyes,
nose) sits on the side the figure faces, far limbs are drawn behind the torso, and a chest badge on
the *left* side plus a slightly lighter left side make left and right distinguishable, so flip pairs
matter.

Nothing here is random: the same pose, colours, proportions and view give the same figure.  The
constants below define the data set (a change bumps
:data:`lrpose_bench.synthpose.coco_writer.FORMAT_VERSION`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrpose_bench.keypoints import NUM_JOINTS

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


# -------------------------------------------------------------------------------- figures
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
    """One posed, projected person: its joints, its drawable parts (back to front) and its view."""

    joints: np.ndarray  # (17, 2) image coordinates
    face_visible: np.ndarray  # (17,) bool: False for face points turned away from the camera
    parts: list[_Part]
    stature: float  # px
    extent: np.ndarray  # (4,) xmin, ymin, xmax, ymax of the drawn figure
    joints3d: np.ndarray  # (17, 3) body frame (pelvis origin, x left, y down, z forward), stature units
    view: dict[str, float]  # yaw, roll (radians), aspect: how the body was turned into the image


@dataclass(frozen=True)
class Proportions:
    """One person's build: factors (about 1) on the anthropometric constants above."""

    arm: float  # upper arm, forearm and hand lengths
    leg: float  # thigh, shank and foot lengths
    torso: float  # trunk height: shoulders, neck, waist
    head: float  # head size
    shoulder: float  # shoulder half width
    hip: float  # hip half width
    build: float  # limb girth and torso depth


@dataclass(frozen=True)
class View:
    """How the body is turned into the image (radians) and stretched (``aspect``: x scale)."""

    yaw: float  # about the body's vertical axis; 0 faces the camera
    pitch: float  # camera elevation
    aspect: float
    roll: float  # image-plane rotation


def assemble_figure(
    pose: dict[str, Any], colours: dict[str, np.ndarray], shape: Proportions, view: View, stature_px: float
) -> Figure:
    """Build the figure of ``pose`` (joint angles), dressed in ``colours``, and project it around the origin."""
    seg = {"arm": shape.arm, "leg": shape.leg, "torso": shape.torso}
    head_scale = shape.head
    sw = _SHOULDER_HALF_WIDTH * shape.shoulder
    hw = _HIP_HALF_WIDTH * shape.hip
    build = shape.build

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

    # view: yaw and camera elevation turn the body; then image-plane scale/aspect/rotation
    yaw, aspect, roll = view.yaw, view.aspect, view.roll
    r_view = _rot_x(view.pitch) @ _rot_y(yaw)
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
    return Figure(
        joints, face_visible, parts, stature_px, extent, joints3d, {"yaw": yaw, "roll": roll, "aspect": aspect}
    )


def _translate(person: Figure, offset: np.ndarray) -> None:
    """Move the figure by ``offset`` (px, x and y), in place."""
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

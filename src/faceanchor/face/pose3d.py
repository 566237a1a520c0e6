"""Turn a face's five keypoints in yaw with a 3D mean-face model (pure numpy).

The five InsightFace keypoints (eyes, nose tip, mouth corners) of an average adult face, in
millimetres, are :data:`MEAN_FACE_MM`: ``x`` to the image's right, ``y`` down, ``z`` toward the
camera, eye centres 63 mm apart, the nose tip 36 mm below the eye line and 25 mm in front of
the eyes, the mouth corners 52 mm apart and 73 mm below the eyes (proportions of the ArcFace
alignment template, depths from anthropometric profiles).

:func:`fit_face` fits that model to 2D keypoints by a scaled-orthographic (weak-perspective)
projection ``p = s · R[:2] · X + t`` — a least-squares 2×3 affine map, made the nearest
scaled rotation by SVD — and then *lifts* each keypoint: the model point is moved parallel to
the image plane until it projects exactly onto the observed keypoint, so the fitted 3D points
are the person's own (their eye distance, their mouth width) with the model's depths.

:func:`rotate_kps` turns those points about the face's own vertical axis through the face
centre (the mean of the five points) and projects them again: yaw 0 returns the input
keypoints; positive yaw turns the face toward the image's right (the nose moves right and the
right-hand eye, now the far one, closes in on it), negative toward the left.
:func:`posed_kps` does the same on a canvas with roll and the reference's own yaw removed,
as the ID photo's views need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The 3D mean face (mm), keypoints in InsightFace order: left eye, right eye, nose, mouth left, mouth right.
MEAN_FACE_MM = np.array(
    [
        [-31.5, 0.0, 0.0],
        [31.5, 0.0, 0.0],
        [0.0, 36.0, 25.0],
        [-26.0, 73.0, 5.0],
        [26.0, 73.0, 5.0],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class FaceFit:
    """A weak-perspective fit of the mean face to five 2D keypoints."""

    scale: float  # pixels per millimetre
    rotation: np.ndarray  # (3, 3) model frame → camera frame
    translation: np.ndarray  # (2,) pixels
    points: np.ndarray  # (5, 3) the lifted (person-specific) model points, model frame, mm
    residual_px: float  # RMS distance of the plain mean face's projection to the keypoints

    @property
    def centre(self) -> np.ndarray:
        return self.points.mean(axis=0)

    def project(self, points: np.ndarray) -> np.ndarray:
        """Image coordinates of model-frame points."""
        return self.scale * (np.asarray(points, np.float64) @ self.rotation[:2].T) + self.translation

    @property
    def angles_deg(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) of the face in degrees; yaw > 0 turned toward the image's right."""
        R = self.rotation
        yaw = math.degrees(math.asin(float(np.clip(R[0, 2], -1.0, 1.0))))
        pitch = math.degrees(math.atan2(-R[1, 2], R[2, 2]))
        roll = math.degrees(math.atan2(-R[0, 1], R[0, 0]))
        return yaw, pitch, roll


def _check(kps: np.ndarray) -> np.ndarray:
    k = np.asarray(kps, dtype=np.float64)
    if k.shape != (5, 2) or not np.isfinite(k).all():
        raise ValueError(f"need 5 finite (x, y) keypoints, got shape {k.shape}")
    if np.linalg.norm(k[1] - k[0]) < 1e-6:
        raise ValueError("the two eye keypoints coincide; cannot fit a face")
    return k


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    # x' = x cos + z sin: a point in front of the face (z > 0) moves to +x for positive yaw
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def fit_face(kps: np.ndarray, model: np.ndarray = MEAN_FACE_MM) -> FaceFit:
    """Fit ``model`` to ``kps`` (5, 2) with a scaled-orthographic projection and lift the points."""
    k = _check(kps)
    X = np.asarray(model, np.float64)
    Xc = X - X.mean(axis=0)
    kc = k - k.mean(axis=0)
    # least-squares affine 2x3: kc ≈ Xc @ M.T
    M, *_ = np.linalg.lstsq(Xc, kc, rcond=None)
    M = M.T  # (2, 3)
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    scale = float(S.mean())
    R2 = U @ Vt  # nearest 2x3 with orthonormal rows
    r3 = np.cross(R2[0], R2[1])
    R = np.vstack([R2, r3])
    if np.linalg.det(R) < 0:  # keep a proper rotation
        R[2] = -R[2]
    t = k.mean(axis=0) - scale * (X.mean(axis=0) @ R[:2].T)
    proj = scale * (X @ R[:2].T) + t
    resid = k - proj
    # lift: move each model point parallel to the image plane (camera x/y axes in the model frame)
    lifted = X + (resid / scale) @ R[:2]
    rms = float(np.sqrt((resid**2).sum(axis=1).mean()))
    return FaceFit(scale=scale, rotation=R, translation=t, points=lifted, residual_px=rms)


def rotate_kps(kps: np.ndarray, yaw_deg: float, model: np.ndarray = MEAN_FACE_MM) -> np.ndarray:
    """The keypoints of the same face turned by ``yaw_deg`` about its vertical axis (5, 2)."""
    k = _check(kps)
    if yaw_deg == 0:
        return k.astype(np.float32)
    fit = fit_face(k, model)
    c = fit.centre
    turned = (fit.points - c) @ _rot_y(yaw_deg).T + c
    return fit.project(turned).astype(np.float32)


def posed_kps(
    kps: np.ndarray,
    yaw_deg: float,
    canvas: tuple[int, int],
    *,
    eye_distance: float = 0.22,
    centre: tuple[float, float] = (0.5, 0.46),
    model: np.ndarray = MEAN_FACE_MM,
) -> np.ndarray:
    """The face of ``kps`` seen upright at exactly ``yaw_deg`` on a ``(width, height)`` canvas.

    The fit's own yaw, pitch and roll are removed (the person's lifted geometry is kept), the
    face is turned by ``yaw_deg``, scaled so the frontal eye distance is ``eye_distance`` of
    the canvas width, and centred at ``centre`` (fractions of the canvas) — an ID-photo framing.
    """
    fit = fit_face(_check(kps), model)
    c = fit.centre
    upright = fit.points - c  # model frame: already upright and frontal
    turned = upright @ _rot_y(yaw_deg).T
    w, h = canvas
    frontal_eyes = float(np.linalg.norm(upright[1, :2] - upright[0, :2]))
    s = eye_distance * w / max(frontal_eyes, 1e-6)
    pts = s * turned[:, :2] + np.array([centre[0] * w, centre[1] * h])
    return pts.astype(np.float32)

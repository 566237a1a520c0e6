"""How usable a face is as an identity reference: size, blur, yaw, score, warnings."""

from __future__ import annotations

import math

import numpy as np

from faceanchor.face.align import norm_crop
from faceanchor.types import Face, QualityReport

MIN_FACE_PX = 64  # shorter side of the face box
MIN_BLUR = 60.0  # Laplacian variance on the 112 px aligned grey crop
MAX_YAW_DEG = 45.0
MIN_DET_SCORE = 0.5


def estimate_yaw(kps: np.ndarray) -> float:
    """Signed yaw in degrees from the five keypoints; 0 is frontal.

    Undo the roll (the eye line), take the nose's horizontal offset from the face's midline
    (through the eye and mouth midpoints), divide by half the eye distance, and read the angle
    as ``atan`` of that ratio (the nose tip sits about half an eye distance in front of the eye
    plane). Positive when the nose points to the image's right.
    """
    k = np.asarray(kps, dtype=np.float64).reshape(5, 2)
    le, re, nose, ml, mr = k
    eye_vec = re - le
    roll = math.atan2(eye_vec[1], eye_vec[0])
    c, s = math.cos(-roll), math.sin(-roll)
    rot = np.array([[c, -s], [s, c]])
    p = (k - k.mean(axis=0)) @ rot.T
    le, re, nose, ml, mr = p
    half_eye = max(abs(re[0] - le[0]) / 2.0, 1e-6)
    mid_x = ((le[0] + re[0]) / 2.0 + (ml[0] + mr[0]) / 2.0) / 2.0
    ratio = (nose[0] - mid_x) / half_eye
    return float(math.degrees(math.atan(ratio)))


def laplacian_variance(gray: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def assess_quality(
    image: np.ndarray,
    face: Face,
    *,
    min_size: int = MIN_FACE_PX,
    min_blur: float = MIN_BLUR,
    max_yaw: float = MAX_YAW_DEG,
    min_score: float = MIN_DET_SCORE,
) -> QualityReport:
    """Quality of ``face`` in the RGB array ``image``, with a warning for every weak point."""
    import cv2

    x1, y1, x2, y2 = face.bbox
    size = float(min(x2 - x1, y2 - y1))
    crop = norm_crop(np.asarray(image), face.kps, 112)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    # Score only the face inside the template (skip the black border around partial faces).
    blur = laplacian_variance(gray[16:104, 16:96])
    yaw = estimate_yaw(face.kps)
    warnings = []
    if size < min_size:
        warnings.append(f"face is small ({size:.0f} px; {min_size}+ px recommended)")
    if blur < min_blur:
        warnings.append(f"face looks blurred (sharpness {blur:.0f}; {min_blur:.0f}+ recommended)")
    if abs(yaw) > max_yaw:
        warnings.append(f"face is in profile (yaw {yaw:+.0f} degrees; frontal works best)")
    if face.det_score < min_score:
        warnings.append(f"low detection score {face.det_score:.2f}")
    return QualityReport(size_px=size, blur=blur, yaw_deg=yaw, det_score=float(face.det_score), warnings=tuple(warnings))

"""Body-pose control image: mediapipe's pose landmarker (bundled in the mediapipe 0.10.21 wheel,
no download), mapped to the 18 OpenPose (COCO) keypoints and drawn as an OpenPose skeleton —
the input the OpenPose ControlNets were trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceanchor.errors import NoFaceError

#: OpenPose body-18 keypoint names, in order.
OPENPOSE_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)  # fmt: skip

#: mediapipe BlazePose landmark index for each OpenPose point (the neck is the shoulders' midpoint).
_FROM_MEDIAPIPE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)

#: Limbs as OpenPose draws them (0-based pairs) and the 18 standard OpenPose colours (RGB).
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0), (0, 255, 85),
    (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255), (170, 0, 255),
    (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def detect_pose(image: Any, min_visibility: float = 0.5) -> np.ndarray:
    """OpenPose-18 keypoints ``(18, 3)``: pixel x, y and a score (0 where the point is not seen).

    Raises :class:`NoFaceError` when no person (or fewer than two visible keypoints) is found.
    """
    import mediapipe as mp

    from faceanchor.controls.canny import to_rgb_array

    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False) as pose:
        result = pose.process(rgb)
    if result.pose_landmarks is None:
        raise NoFaceError("no person found in the pose image; use a photo that shows a head and shoulders")
    lm = result.pose_landmarks.landmark
    mp_pts = np.array([[p.x * w, p.y * h, p.visibility] for p in lm], dtype=np.float32)
    out = np.zeros((18, 3), dtype=np.float32)
    for i, j in enumerate(_FROM_MEDIAPIPE):
        if j is None:
            a, b = mp_pts[12], mp_pts[11]
            out[i] = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, min(a[2], b[2])]
        else:
            out[i] = mp_pts[j]
    inside = (out[:, 0] >= 0) & (out[:, 0] < w) & (out[:, 1] >= 0) & (out[:, 1] < h)
    out[~inside | (out[:, 2] < min_visibility), 2] = 0.0
    if int((out[:, 2] > 0).sum()) < 2:
        raise NoFaceError("no person found in the pose image (fewer than two body keypoints visible)")
    return out


def draw_pose(keypoints: np.ndarray, size: tuple[int, int]) -> "Image.Image":
    """An OpenPose-style skeleton on black: limbs as ellipses at 60 % colour, joints as dots.

    ``size`` is ``(width, height)``; line width scales with the image (4 px at 512).
    """
    import math

    import cv2
    from PIL import Image

    w, h = int(size[0]), int(size[1])
    kp = np.asarray(keypoints, dtype=np.float32).reshape(18, 3)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    stick = max(2, round(4 * min(w, h) / 512))
    radius = max(2, round(4 * min(w, h) / 512))
    for idx, (a, b) in enumerate(LIMBS):
        if kp[a, 2] <= 0 or kp[b, 2] <= 0:
            continue
        (xa, ya), (xb, yb) = kp[a, :2], kp[b, :2]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        poly = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in COLORS[idx]])
    for i in range(18):
        if kp[i, 2] > 0:
            cv2.circle(canvas, (int(kp[i, 0]), int(kp[i, 1])), radius, COLORS[i], thickness=-1)
    return Image.fromarray(canvas, "RGB")


def pose_image(image: Any, min_visibility: float = 0.5) -> "Image.Image":
    """The OpenPose skeleton of the person in ``image``, same size as ``image``."""
    from faceanchor.controls.canny import to_rgb_array

    rgb = to_rgb_array(image)
    return draw_pose(detect_pose(rgb, min_visibility), (rgb.shape[1], rgb.shape[0]))

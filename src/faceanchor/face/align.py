"""Face alignment to the ArcFace five-point template, at any crop size.

``estimate_norm`` follows InsightFace's ``face_align``: the 112 px ArcFace template (float32)
scaled by ``size / 112`` (sizes that are multiples of 128 but not 112 use ``size / 128`` and
shift x by 8 px × ratio, as InsightFace does), and a least-squares similarity transform
(Umeyama, the method of scikit-image's ``SimilarityTransform.estimate``) from the keypoints to
it. Like scikit-image, the estimate is computed in the dtype of the points given, and
InsightFace gives it float32 keypoints and a float32 template: so does this module, which is
what makes the matrix, and so the aligned crop, the same as InsightFace's to the bit
(``tests/face/test_insightface_oracle.py`` checks it against InsightFace itself).
``norm_crop(image, kps, 224)`` is the CLIP crop IP-Adapter-FaceID-Plus uses.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The ArcFace 112×112 template in InsightFace order (left eye, right eye, nose, mouth left/right).
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3×3 least-squares similarity transform (rotation, uniform scale, translation) src → dst.

    Arithmetic in the points' own dtype, as scikit-image's ``_umeyama`` (float32 points give
    InsightFace's float32-computed matrix; float64 points a float64-exact one).
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    a = dst_c.T @ src_c / n
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(a) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1, dtype=np.float64)
    u, s, vt = np.linalg.svd(a)
    tol = s.max() * max(a.shape) * np.finfo(float).eps
    rank = int(np.count_nonzero(s > tol))
    if rank == 0:
        return np.nan * t
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:dim, :dim] = u @ vt
        else:
            s_ = d[dim - 1]
            d[dim - 1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ vt
            d[dim - 1] = s_
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = 1.0 / src_c.var(axis=0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
    t[:dim, :dim] *= scale
    return t


def template(image_size: int = 112) -> np.ndarray:
    """The ArcFace template for a square crop of ``image_size`` pixels."""
    if image_size % 112 != 0 and image_size % 128 == 0:
        ratio = image_size / 128.0
        diff_x = 8.0 * ratio
    else:
        ratio = image_size / 112.0
        diff_x = 0.0
    dst = ARCFACE_DST * ratio
    dst[:, 0] += diff_x
    return dst


def estimate_norm(kps: np.ndarray, image_size: int = 112) -> np.ndarray:
    """2×3 affine matrix mapping image coordinates to the aligned crop.

    The keypoints are taken as float32, as InsightFace's detector gives them (``Face.kps``).
    """
    kps = np.asarray(kps, dtype=np.float32).reshape(5, 2)
    return umeyama(kps, template(image_size))[:2, :]


def norm_crop(image: np.ndarray | Image.Image, kps: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The aligned ``image_size``² crop (same channel order as the input array), black outside."""
    import cv2

    arr = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    m = estimate_norm(kps, image_size)
    return cv2.warpAffine(arr, m, (image_size, image_size), borderValue=0.0)


def aligned_crop(image: np.ndarray | Image.Image, kps: np.ndarray, size: int = 112) -> Image.Image:
    """:func:`norm_crop` as an RGB PIL image (``size=224`` is the CLIP face crop)."""
    return Image.fromarray(norm_crop(image, kps, size)).convert("RGB")


def clip_face_crop(image: np.ndarray | Image.Image, kps: np.ndarray) -> Image.Image:
    """The 224 px crop IP-Adapter-FaceID-Plus feeds to CLIP (``norm_crop(image, kps, 224)``)."""
    return aligned_crop(image, kps, 224)

"""The project's error types.

Every error a user can cause or fix carries one readable sentence. The CLI prints that
sentence and exits 2; the API maps ``http_status`` and ``type`` into ``{"error": ...}``.
"""

from __future__ import annotations


class FaceAnchorError(Exception):
    """Base of every error faceanchor raises on purpose."""

    http_status: int = 400
    type: str = "invalid_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())


class InvalidInputError(FaceAnchorError):
    """A parameter is out of range or malformed."""

    http_status = 400
    type = "invalid_request"


class ImageInputError(FaceAnchorError):
    """An image could not be read: unknown format, corrupt, truncated."""

    http_status = 415
    type = "unsupported_image"


class ImageTooLargeError(ImageInputError):
    """An image is over the byte or pixel limit (decompression bombs end here)."""

    http_status = 413
    type = "image_too_large"


class NoFaceError(FaceAnchorError):
    """No usable face was found in an image."""

    http_status = 422
    type = "no_face"


class FaceSelectionError(FaceAnchorError):
    """A face index or a minimum score excludes every face."""

    http_status = 422
    type = "face_selection"


class EmbeddingMismatchError(FaceAnchorError):
    """An embedding of the wrong space or size was given to an adapter."""

    http_status = 422
    type = "embedding_mismatch"


class ModelNotFoundError(FaceAnchorError):
    """A model's files are absent; the message says which files and where to put them."""

    http_status = 503
    type = "model_not_found"


class EngineCapabilityError(FaceAnchorError):
    """The server's engine cannot do what was asked (e.g. a generation-only ``--engine`` plug-in asked for an ID photo)."""

    http_status = 501
    type = "not_implemented"


class CheckpointError(FaceAnchorError):
    """A checkpoint has the wrong layout or shapes."""

    http_status = 422
    type = "bad_checkpoint"


class Cancelled(FaceAnchorError):
    """Work was cancelled between steps."""

    http_status = 409
    type = "cancelled"


class DifferentPeopleError(FaceAnchorError):
    """Several references of one identity are not the same person (faceanchor.face.same_person)."""

    http_status = 422
    type = "different_people"


class SafetyRefusedError(FaceAnchorError):
    """The operator's safety filter refused an output (faceanchor.trust.safety, policy refuse)."""

    http_status = 422
    type = "safety_refused"

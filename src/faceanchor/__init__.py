"""faceanchor: identity-preserving image generation from one face photo.

Nothing is built at import time: create settings and models in an entry point and pass them
down (see ``faceanchor.config.load_settings``).
"""

__version__ = "0.1.0"

"""Trust: an invisible watermark, content credentials (C2PA) and an optional safety filter on
every output (:mod:`faceanchor.trust.finalise` is the one place outputs pass), read back by
:mod:`faceanchor.trust.verify`."""

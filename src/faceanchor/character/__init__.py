"""Character operations on a loaded engine: the 4-in-1 ID photo, region edits, the face-detail pass.

These take the engine as an object and never touch the store (the service's
:mod:`faceanchor.service.characters` keeps characters and their history).
"""

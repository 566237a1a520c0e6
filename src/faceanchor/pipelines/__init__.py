"""Diffusion pipelines, one file per task (InstantID SDXL, FaceID SD1.5/SDXL): numbered steps,
progress and cancel callbacks. Pipelines take embedding tensors; the engine joins face -> adapter.
"""

"""Diffusion pipelines, one file per task (InstantID SDXL, its img2img/inpainting, FaceID SD1.5/SDXL),
in numbered steps. One per-step hook for all of them: diffusers' ``callback_on_step_end``
(:mod:`.callbacks`); prompts plain or weighted/long (:mod:`.prompts`). Pipelines take embedding
tensors; the engine joins face -> adapter.
"""

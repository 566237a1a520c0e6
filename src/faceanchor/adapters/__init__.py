"""Identity adapters: projections, decoupled cross-attention, official checkpoint readers.

This package takes embedding tensors and knows nothing of faces (it never imports
:mod:`faceanchor.face`). Modules import torch lazily where a light user could import them;
the submodules themselves need torch.
"""

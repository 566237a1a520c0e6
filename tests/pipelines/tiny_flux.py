"""Tiny seeded FLUX parts shared by the InfiniteYou tests (built once per process)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def parts():
    from faceanchor.adapters.infiniteyou import random_projection, tiny_projection_config
    from faceanchor.models import flux

    comps = flux.build_components("tiny", seed=0)
    net = flux.build_infusenet("tiny", seed=0)
    proj = random_projection(tiny_projection_config(output_dim=net.config.joint_attention_dim), seed=9)
    return comps, net, proj

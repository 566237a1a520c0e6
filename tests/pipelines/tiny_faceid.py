"""Tiny, seeded SD1.5 / SDXL / CLIP-vision components for FaceID tests (no downloads).

Cross-attention width is 64 so the FaceID-Plus perceiver (heads = width // 64) has one head.
Tests put this folder on ``sys.path`` and ``import tiny_faceid`` (pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CROSS = 64
ID_DIM = 512


def tiny_tokenizer(directory: Path, max_length: int = 16):
    from transformers import CLIPTokenizer

    chars = list("abcdefghijklmnopqrstuvwxyz,.!?0123456789")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length)


def _text_encoder(hidden: int, with_projection: bool = False, vocab: int = 100):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab,
        max_position_embeddings=16, projection_dim=hidden, hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 32], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4, norm_num_groups=16,
    ).eval()


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )


def build_sd15(tmp: Path, seed: int = 0):
    """A tiny StableDiffusionPipeline (the VAE downsamples by 2: 64x64 images → 32x32 latents)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS, attention_head_dim=8, norm_num_groups=16,
    ).eval()
    vae = _vae()
    text = _text_encoder(CROSS)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tiny_tokenizer(tmp / "tok"), unet=unet, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sdxl(tmp: Path, seed: int = 0):
    """A tiny StableDiffusionXLPipeline (two text encoders of 32 → cross-attention 64)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=CROSS, norm_num_groups=16,
    ).eval()
    vae = _vae()
    te1 = _text_encoder(32)
    te2 = _text_encoder(32, with_projection=True)
    tok = tiny_tokenizer(tmp / "tok")
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok, unet=unet,
        scheduler=_scheduler(), force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_clip_vision(seed: int = 0, image_size: int = 32, hidden: int = 48):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=hidden, image_size=image_size, patch_size=8, num_channels=3, num_hidden_layers=3,
        num_attention_heads=4, intermediate_size=64, projection_dim=32,
    )
    return CLIPVisionModelWithProjection(cfg).eval()


def face_crop(seed: int = 0, size: int = 40):
    """A deterministic RGB "aligned face crop" (any content works for tiny encoders)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def embedding(seed: int = 0, n: int = 1, dim: int = ID_DIM) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    e = torch.randn(n, dim, generator=g)
    return e / e.norm(dim=-1, keepdim=True)

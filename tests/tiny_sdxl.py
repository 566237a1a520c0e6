"""Tiny seeded SDXL components built in code (no downloads), shared by adapter/pipeline tests.

Shapes follow diffusers' ``tests/pipelines/controlnet/test_controlnet_sdxl.py``
``get_dummy_components``: a two-block UNet with ``cross_attention_dim=64`` and
``addition_embed_type="text_time"``, a matching ControlNet, a two-block VAE (scale factor 2),
two 32-wide CLIP text encoders (concatenated to 64) and a CLIP BPE tokenizer written from a
tiny vocabulary. Import with ``from tiny_sdxl import ...`` (the conftests put ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CROSS_DIM = 64
EMBED_DIM = 128  # mirrors dlib's 128-D encoder

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORDS = ["a", "photo", "of", "person", "man", "woman", "portrait", "film", "blurry", "ugly", "red", "hat"]


def write_tokenizer(directory: Path) -> Path:
    """A valid CLIP BPE vocabulary (letters + a few merged words) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for ch in _LETTERS + ",.!?'":
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    for word in _WORDS:
        # merge letter by letter left to right: ((p h) o) ... with </w> on the last letter
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        acc = pieces[0]
        for nxt in pieces[1:]:
            rule = f"{acc} {nxt}"
            if rule not in merges:
                merges.append(rule)
            acc = acc + nxt
            vocab.setdefault(acc, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


def tiny_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    write_tokenizer(directory)
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=77)


def _text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000, hidden_act="gelu",
        projection_dim=32,
    )


def tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=CROSS_DIM,
    ).eval()


def tiny_controlnet(seed: int = 1):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel(
        block_out_channels=(32, 64), layers_per_block=2, in_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        conditioning_embedding_out_channels=(16, 32), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=CROSS_DIM,
    ).eval()
    # ControlNet zero-initialises its output convolutions; random ones make residuals non-zero,
    # as a trained IdentityNet's are.
    with torch.no_grad():
        for conv in list(net.controlnet_down_blocks) + [net.controlnet_mid_block]:
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.1)
    return net


def tiny_components(tokenizer_dir: Path, seed: int = 0) -> dict:
    """UNet, IdentityNet-like ControlNet, VAE, text encoders, tokenizers, Euler scheduler."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = tiny_unet(seed)
    controlnet = tiny_controlnet(seed + 1)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    ).eval()
    torch.manual_seed(seed + 3)
    text_encoder = CLIPTextModel(_text_config()).eval()
    torch.manual_seed(seed + 4)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config()).eval()
    tok = tiny_tokenizer(Path(tokenizer_dir))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear", timestep_spacing="leading"
    )
    return {
        "unet": unet, "controlnet": controlnet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
        "tokenizer": tok, "tokenizer_2": tok, "scheduler": scheduler,
    }


def tiny_resampler_config(embedding_dim: int = EMBED_DIM, num_queries: int = 16):
    from faceanchor.adapters.resampler import ResamplerConfig

    return ResamplerConfig(dim=32, depth=2, dim_head=8, heads=4, num_queries=num_queries, embedding_dim=embedding_dim, output_dim=CROSS_DIM, ff_mult=4)


def random_official_checkpoint(unet, seed: int = 5, embedding_dim: int = EMBED_DIM) -> dict:
    """A seeded state dict in the official ``ip-adapter.bin`` layout for ``unet`` with the tiny
    Resampler sizes, written by :mod:`official_layout` from the official scripts' naming (not by
    faceanchor's adapter code)."""
    from official_layout import instantid_checkpoint

    cfg = tiny_resampler_config(embedding_dim)
    return instantid_checkpoint(
        unet, embedding_dim=embedding_dim, dim=cfg.dim, depth=cfg.depth, dim_head=cfg.dim_head, heads=cfg.heads,
        num_queries=cfg.num_queries, ff_mult=cfg.ff_mult, seed=seed,
    )


def tiny_instantid_pipeline(tokenizer_dir: Path, size: int = 64):
    """A tiny ``InstantIDSDXLPipeline`` with a random official-layout adapter (scale 0.8), plus a
    noise keypoint image (``size`` px) and an embedding drawn from ``RandomState(0)``.

    Returns ``(components, pipe, kps_image, embedding)``.
    """
    import numpy as np
    import PIL.Image

    from faceanchor.pipelines.instantid_sdxl import InstantIDSDXLPipeline

    comps = tiny_components(tokenizer_dir)
    pipe = InstantIDSDXLPipeline(**comps)
    pipe.load_instantid_adapter(random_official_checkpoint(comps["unet"]), scale=0.8, dim_head=8)
    rs = np.random.RandomState(0)
    kps = PIL.Image.fromarray((rs.rand(size, size, 3) * 255).astype(np.uint8))
    emb = torch.from_numpy(rs.randn(EMBED_DIM).astype(np.float32)) * 3
    return comps, pipe, kps, emb

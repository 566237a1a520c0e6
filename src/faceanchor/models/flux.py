"""``dummy`` / ``tiny`` FLUX: the FLUX.1 transformer, InfuseNet, VAE, CLIP + T5 text encoders, their
tokenizers (built in memory) and the flow-matching scheduler, with seeded random weights.

Full size is FLUX.1-dev's published ``config.json`` files (``transformer/``: 19 double + 38
single blocks, 24 heads × 128, joint width 4096, pooled 768, guidance embedding, RoPE axes
16/56/56, 64 input channels = 16 latent channels × 2×2 patches; ``vae/``: 16 latent channels,
scaling 0.3611, shift 0.1159, no quant convs; ``text_encoder/``: CLIP ViT-L/14 text;
``text_encoder_2/``: T5 v1.1 XXL encoder, 4096 wide, 24 layers, gated GELU; ``scheduler/``:
FlowMatchEulerDiscrete with dynamic shifting 0.5 → 1.15 over 256 → 4096 tokens). schnell differs
only in ``guidance_embeds=False``. InfuseNet is a ``FluxControlNetModel`` with the transformer's
widths and, as InfiniteYou's paper describes, fewer blocks (assumed 5 double + 10 single, as the
FLUX ControlNets commonly released; read the real ``InfuseNetModel/config.json`` for the truth)
and no ``input_hint_block`` (the control image goes through the VAE).

FLUX.1-dev is about 12 B parameters (transformer 11.9 B, T5 4.8 B): its ``dummy`` build is for GPU
benchmarks only; :mod:`faceanchor.pipelines.loading` refuses it in one line where memory lacks.

Tiny keeps every structural trait (double and single blocks, guidance embedding, RoPE, 2×2
packing, VAE shift, T5's gated feed-forward) at widths of 32 so the whole path runs in seconds.

**Tokenizers are not CLIP's or T5's**: both are the in-memory byte-level BPE of
:func:`faceanchor.models.dummy.build_tokenizer` (ids below 600), the T5 one padded with ``!`` and
no length cap of its own (FLUX pads T5 to ``max_sequence_length``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Literal

from faceanchor.models.dummy import _build, build_tokenizer

Size = Literal["full", "tiny"]

_OFFSETS = {"transformer": 20, "vae": 21, "text_encoder": 22, "text_encoder_2": 23, "infusenet": 24}

#: The tiny T5 sequence length (FLUX.1-dev pads T5 to 512; the tiny path to this).
TINY_MAX_SEQUENCE_LENGTH = 32


def _check(size: str) -> None:
    from faceanchor.errors import InvalidInputError

    if size not in ("full", "tiny"):
        raise InvalidInputError(f"unknown dummy size '{size}'; use full or tiny")


def transformer_config(size: Size = "full", guidance: bool = True) -> dict[str, Any]:
    """FluxTransformer2DModel config (full = FLUX.1-dev's ``transformer/config.json``; schnell: ``guidance=False``)."""
    _check(size)
    if size == "full":
        return dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=guidance, axes_dims_rope=(16, 56, 56))  # fmt: skip
    return dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance, axes_dims_rope=(4, 6, 6))  # fmt: skip


def infusenet_config(size: Size = "full") -> dict[str, Any]:
    """FluxControlNetModel config of InfuseNet: the transformer's widths, fewer blocks, guidance embedding."""
    t = transformer_config(size)
    keys = ("patch_size", "in_channels", "attention_head_dim", "num_attention_heads", "joint_attention_dim", "pooled_projection_dim",
            "guidance_embeds", "axes_dims_rope")  # fmt: skip
    cfg = {k: t[k] for k in keys}
    cfg.update(num_layers=5, num_single_layers=10) if size == "full" else cfg.update(num_layers=1, num_single_layers=1)
    return cfg


def vae_config(size: Size = "full") -> dict[str, Any]:
    """AutoencoderKL config (full = FLUX.1's ``vae/config.json``)."""
    _check(size)
    common = dict(in_channels=3, out_channels=3, act_fn="silu", norm_num_groups=32, use_quant_conv=False, use_post_quant_conv=False,
                  scaling_factor=0.3611, shift_factor=0.1159, force_upcast=True)  # fmt: skip
    if size == "full":
        return dict(common, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                    block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, sample_size=1024)  # fmt: skip
    return dict(common, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, sample_size=64)  # fmt: skip


def clip_config(size: Size = "full") -> dict[str, Any]:
    """CLIPTextConfig kwargs (full = CLIP ViT-L/14 text, FLUX's ``text_encoder``)."""
    _check(size)
    common = dict(max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    if size == "full":
        return dict(common, vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)
    return dict(common, vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)


def t5_config(size: Size = "full") -> dict[str, Any]:
    """T5Config kwargs (full = T5 v1.1 XXL, FLUX's ``text_encoder_2``)."""
    _check(size)
    common = dict(feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, relative_attention_num_buckets=32,
                  relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0, pad_token_id=0)  # fmt: skip
    if size == "full":
        return dict(common, vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
    return dict(common, vocab_size=1000, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)


def scheduler_config() -> dict[str, Any]:
    """FLUX.1-dev's ``scheduler/scheduler_config.json``."""
    return dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096)  # fmt: skip


def build_transformer(size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu", guidance: bool = True):
    from diffusers import FluxTransformer2DModel

    cfg = transformer_config(size, guidance)
    return _build(lambda: FluxTransformer2DModel(**cfg), seed + _OFFSETS["transformer"], dtype, device)


def build_infusenet(size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu"):
    """A seeded InfuseNet-shaped FluxControlNetModel (its zero-initialised output blocks random too, so
    its residuals are non-zero and the conditioning scale matters)."""
    from diffusers import FluxControlNetModel

    cfg = infusenet_config(size)
    with quiet_flux_deprecation():
        return _build(lambda: FluxControlNetModel(**cfg), seed + _OFFSETS["infusenet"], dtype, device)


@contextlib.contextmanager
def quiet_flux_deprecation() -> Iterator[None]:
    """diffusers 0.42's ``FluxControlNetModel`` builds the deprecated ``embeddings.FluxPosEmbed`` itself
    and warns (FutureWarning) on every construction; nothing a user can act on, so it is silenced here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*FluxPosEmbed.*", category=FutureWarning)
        yield


def build_vae(size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu"):
    from diffusers import AutoencoderKL

    cfg = vae_config(size)
    return _build(lambda: AutoencoderKL(**cfg), seed + _OFFSETS["vae"], dtype, device)


def build_text_encoders(size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu") -> list:
    """[CLIPTextModel, T5EncoderModel]."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip = _build(lambda: CLIPTextModel(CLIPTextConfig(**clip_config(size))), seed + _OFFSETS["text_encoder"], dtype, device)
    t5 = _build(lambda: T5EncoderModel(T5Config(**t5_config(size))), seed + _OFFSETS["text_encoder_2"], dtype, device)
    return [clip, t5]


def build_tokenizers() -> list:
    """[CLIP-style tokenizer (77), T5-slot tokenizer (padded with ``!``, up to 512)] built in memory."""
    t5 = build_tokenizer(pad_token="!")
    t5.model_max_length = 512
    return [build_tokenizer(), t5]


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(scheduler_config())


def build_components(size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu", guidance: bool = True) -> dict[str, Any]:
    """What ``diffusers.FluxPipeline`` takes: ``transformer``, ``vae``, ``text_encoder``, ``tokenizer``,
    ``text_encoder_2``, ``tokenizer_2``, ``scheduler``."""
    _check(size)
    enc = build_text_encoders(size, seed, dtype, device)
    tok = build_tokenizers()
    return {
        "transformer": build_transformer(size, seed, dtype, device, guidance),
        "vae": build_vae(size, seed, dtype, device),
        "text_encoder": enc[0], "tokenizer": tok[0], "text_encoder_2": enc[1], "tokenizer_2": tok[1],
        "scheduler": build_scheduler(),
    }


def _quiet(factory):
    with quiet_flux_deprecation():
        return factory()


def native_size(size: Size = "full") -> int:
    """The side the tiny path renders at by default (64 px); FLUX.1-dev's native 1024."""
    return 1024 if size == "full" else 64


def parameter_count(component: str, size: Size = "full") -> int:
    """Parameters of ``transformer``, ``infusenet``, ``vae``, ``text_encoder`` or ``text_encoder_2``, on the meta device."""
    import torch
    from diffusers import AutoencoderKL, FluxControlNetModel, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from faceanchor.errors import InvalidInputError

    factories = {
        "transformer": lambda: FluxTransformer2DModel(**transformer_config(size)),
        "infusenet": lambda: _quiet(lambda: FluxControlNetModel(**infusenet_config(size))),
        "vae": lambda: AutoencoderKL(**vae_config(size)),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**clip_config(size))),
        "text_encoder_2": lambda: T5EncoderModel(T5Config(**t5_config(size))),
    }
    if component not in factories:
        raise InvalidInputError(f"unknown FLUX component '{component}'; use one of {', '.join(factories)}")
    with torch.device("meta"):
        m = factories[component]()
    return sum(p.numel() for p in m.parameters())

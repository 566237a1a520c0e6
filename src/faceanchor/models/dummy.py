"""``dummy`` weights: real architectures with seeded random weights and no download.

Like ``vllm --load-format dummy``: :func:`build_components` builds the SDXL or SD1.5 UNet,
VAE, text encoders, tokenizers and scheduler (plus an IdentityNet-shaped ControlNet and the
CLIP ViT-H image encoder of FaceID-Plus on request) either at their **full** published size
(configs written here, equal to the official ``config.json`` files) for integration runs and
speed benchmarks, or at a **tiny** size with the same structure so tests run the whole path in
seconds.

How weights are made (fast, low memory): the module is constructed under
``torch.device("meta")`` (thread-local: other threads constructing modules meanwhile are not
affected), its few buffers (CLIP ``position_ids``) are re-created real, then every parameter is
allocated one by one directly on the target device in the target dtype and filled from a
seeded generator — Linear/Conv weights uniform with standard deviation
``1/sqrt(fan_in)``, embeddings with 0.02, norm weights 1 and every bias 0 — so activations keep a sane scale and fp16 runs
do not overflow. Each component draws from its own seed (``seed + offset``), so asking for a
ControlNet does not change the UNet. The same seed gives the same weights on the same device
type (CPU and CUDA generators differ); the global torch RNG is never used.

:func:`seeded_init` is the other way to get seeded weights: modules constructed inside it keep
their own default initialisation but draw it from a local generator (used for the random
identity adapters).

Memory at full size (parameters only): SDXL UNet 2.57 B params (5.1 GB fp16 / 10.3 GB fp32),
IdentityNet 1.25 B (2.5 / 5.0 GB), text encoders 123 M + 695 M (1.6 / 3.3 GB), VAE 84 M
(0.17 / 0.33 GB): about 9.4 GB in fp16 for SDXL + IdentityNet. Building the full SDXL UNet takes
about a minute on a 2-core CPU (bf16, 6 GB peak RSS), seconds on a GPU. SD1.5: UNet 860 M, text
encoder 123 M, VAE 84 M (2.1 GB fp16). CLIP ViT-H vision 632 M (1.3 GB fp16).

**Tokenizers are not CLIP's**: the dummy tokenizer is a CLIP-style byte-level BPE over the 256
byte symbols (plus word-final forms and a few merges), built in memory. It tokenizes any text
to ids below 600 with CLIP's special tokens, padding and 77-token length, but the ids do not
match CLIP's vocabulary.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import TYPE_CHECKING, Any, Iterator, Literal

if TYPE_CHECKING:
    import torch

Family = Literal["sdxl", "sd15"]
Size = Literal["full", "tiny"]

# Seed offsets per component, so components are independent of each other.
_OFFSETS = {"unet": 0, "vae": 1, "text_encoder": 2, "text_encoder_2": 3, "controlnet": 4, "image_encoder": 5}


def _check(family: str, size: str) -> None:
    from faceanchor.errors import InvalidInputError

    if family not in ("sdxl", "sd15"):
        raise InvalidInputError(f"unknown base family '{family}'; use sdxl or sd15")
    if size not in ("full", "tiny"):
        raise InvalidInputError(f"unknown dummy size '{size}'; use full or tiny")


# ----------------------------------------------------------------------------- configs


def unet_config(family: Family, size: Size = "full") -> dict[str, Any]:
    """UNet2DConditionModel config: full = the official SDXL base / SD1.5 ``unet/config.json``."""
    _check(family, size)
    if family == "sdxl" and size == "full":
        return dict(
            sample_size=128,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            norm_num_groups=32,
            act_fn="silu",
            flip_sin_to_cos=True,
            freq_shift=0,
            upcast_attention=False,
        )
    if family == "sdxl":  # tiny, the structure of SDXL (text_time, linear projection, two text encoders)
        return dict(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2),
            attention_head_dim=(2, 4),
            cross_attention_dim=64,  # = tiny text_encoder (32) + text_encoder_2 (32)
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,  # 6 * 8 + text_encoder_2 projection 32
            norm_num_groups=32,
            act_fn="silu",
            flip_sin_to_cos=True,
            freq_shift=0,
        )
    if size == "full":  # SD1.5
        return dict(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            attention_head_dim=8,
            cross_attention_dim=768,
            norm_num_groups=32,
            act_fn="silu",
            flip_sin_to_cos=True,
            freq_shift=0,
        )
    return dict(  # tiny SD1.5
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=2,
        attention_head_dim=2,
        cross_attention_dim=64,  # = tiny text_encoder (64); FaceID-Plus's perceiver needs >= 64
        norm_num_groups=32,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
    )


_CONTROLNET_KEYS = (
    "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "block_out_channels", "layers_per_block",
    "act_fn", "norm_num_groups", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
    "use_linear_projection", "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
    "upcast_attention",
)  # fmt: skip


def controlnet_config(family: Family, size: Size = "full") -> dict[str, Any]:
    """ControlNetModel config derived from the UNet's (as ``ControlNetModel.from_unet`` does).

    For SDXL this is InstantID's IdentityNet shape: its cross-attention takes the 16 identity
    tokens of width 2048 (the UNet's cross-attention width). The conditioning embedding is
    (16, 32, 96, 256) at full size, (16, 32) at tiny size (tiny VAE downsamples by 2).
    """
    u = unet_config(family, size)
    cfg = {k: u[k] for k in _CONTROLNET_KEYS if k in u}
    cfg["conditioning_embedding_out_channels"] = (16, 32, 96, 256) if size == "full" else (16, 32)
    cfg["conditioning_channels"] = 3
    return cfg


def vae_config(family: Family, size: Size = "full") -> dict[str, Any]:
    """AutoencoderKL config (full = the official SDXL / SD1.5 VAE)."""
    _check(family, size)
    if size == "full":
        return dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            act_fn="silu",
            sample_size=1024 if family == "sdxl" else 512,
            scaling_factor=0.13025 if family == "sdxl" else 0.18215,
            force_upcast=family == "sdxl",
        )
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        act_fn="silu",
        sample_size=64,
        scaling_factor=0.13025 if family == "sdxl" else 0.18215,
        force_upcast=False,
    )


def text_encoder_configs(family: Family, size: Size = "full") -> list[dict[str, Any]]:
    """CLIPTextConfig kwargs: [ViT-L/14 text] for SD1.5, [ViT-L/14 text, OpenCLIP bigG text] for SDXL."""
    _check(family, size)
    common = dict(max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1, layer_norm_eps=1e-5)
    if size == "full":
        vit_l = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu", **common)  # fmt: skip
        big_g = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                     num_attention_heads=20, projection_dim=1280, hidden_act="gelu", **common)  # fmt: skip
    else:
        width = 32 if family == "sdxl" else 64
        vit_l = dict(vocab_size=1000, hidden_size=width, intermediate_size=37, num_hidden_layers=5,
                     num_attention_heads=4, projection_dim=width, hidden_act="quick_gelu", **common)  # fmt: skip
        big_g = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=5,
                     num_attention_heads=4, projection_dim=32, hidden_act="gelu", **common)  # fmt: skip
    return [vit_l, big_g] if family == "sdxl" else [vit_l]


def image_encoder_config(size: Size = "full") -> dict[str, Any]:
    """CLIPVisionConfig kwargs of CLIP ViT-H/14 (laion2B) as FaceID-Plus uses it; tiny keeps 224 px / patch 14."""
    _check("sd15", size)
    if size == "full":
        return dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)  # fmt: skip
    return dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                image_size=224, patch_size=14, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)  # fmt: skip


def scheduler_config(family: Family) -> dict[str, Any]:
    """The base repos' scheduler configs: EulerDiscrete for SDXL, PNDM for SD1.5."""
    _check(family, "full")
    common = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  steps_offset=1, prediction_type="epsilon")  # fmt: skip
    if family == "sdxl":
        return dict(common, _class_name="EulerDiscreteScheduler", interpolation_type="linear", timestep_spacing="leading",
                    use_karras_sigmas=False)  # fmt: skip
    return dict(common, _class_name="PNDMScheduler", skip_prk_steps=True, set_alpha_to_one=False)


# ----------------------------------------------------------------------------- weights


def _on_meta(factory) -> Any:
    """``factory()`` with every tensor it creates on the ``meta`` device, buffers then restored.

    ``torch.device("meta")`` is a TorchFunctionMode, active in this thread only: modules other
    threads construct meanwhile are ordinary (unlike patching ``nn.Module.register_parameter``
    or ``accelerate.init_empty_weights``, which are process-wide). Parameters stay on meta for
    :func:`materialize`; buffers are re-created real by :func:`_restore_buffers`.
    """
    import torch

    with torch.device("meta"), torch.no_grad():
        module = factory()
    _restore_buffers(module)
    return module


def _restore_buffers(module: "torch.nn.Module") -> None:
    """Give every buffer left on ``meta`` its real value, as a normal construction on CPU would.

    The only buffers of these architectures are transformers' (CLIP text and vision
    ``position_ids``). They are re-created by the owning model's own ``_init_weights`` (which
    transformers 5 also uses to restore non-persistent buffers after a meta-device load), run
    while every parameter is still on meta so it initialises nothing else and draws no random
    numbers. If that leaves a buffer unwritten (transformers 4), the owning submodule is rebuilt
    on CPU from the model's config and its buffers are copied. A buffer neither way restores
    raises rather than staying garbage.
    """
    import torch

    pending = [(name, mod) for name, mod in module.named_modules() if any(b is not None and b.is_meta for b in mod._buffers.values())]
    if not pending:
        return
    models = [(name, mod) for name, mod in module.named_modules() if hasattr(mod, "_init_weights") and hasattr(mod, "config")]
    for path, mod in pending:
        owner = max((m for m in models if path == m[0] or path.startswith(m[0] + ".") or not m[0]), key=lambda m: len(m[0]), default=None)
        names = [n for n, b in mod._buffers.items() if b is not None and b.is_meta]
        for n in names:
            b = mod._buffers[n]
            fresh = torch.empty_strided(b.shape, b.stride(), dtype=b.dtype, device="cpu")
            mod._buffers[n] = fresh.fill_(_sentinel(b.dtype))
        if owner is not None:
            with torch.no_grad():
                owner[1]._init_weights(mod)
        unwritten = [n for n in names if _unwritten(mod._buffers[n])]
        if unwritten and owner is not None:
            _copy_buffers_from_rebuild(mod, owner[1].config, unwritten)
            unwritten = [n for n in unwritten if _unwritten(mod._buffers[n])]
        if unwritten:
            where = f"{path}." if path else ""
            raise RuntimeError(
                f"cannot re-create buffer(s) {', '.join(where + n for n in unwritten)} of {type(mod).__name__} built on the "
                "meta device; teach faceanchor.models.dummy._restore_buffers how"
            )


def _sentinel(dtype: "torch.dtype") -> float | int:
    """A value no restored buffer consists of only: NaN for floats, the minimum for integers."""
    import torch

    if dtype.is_floating_point or dtype.is_complex:
        return float("nan")
    if dtype == torch.bool:
        raise RuntimeError("boolean buffers cannot be checked for restoration")
    return torch.iinfo(dtype).min


def _unwritten(t: "torch.Tensor") -> bool:
    """Whether ``t`` still holds only :func:`_sentinel` (NaN compares unequal to itself)."""
    import torch

    if t.numel() == 0:
        return False
    if t.is_floating_point() or t.is_complex():
        return bool(torch.isnan(t).all())
    return bool((t == _sentinel(t.dtype)).all())


def _copy_buffers_from_rebuild(mod: "torch.nn.Module", config: Any, names: list[str]) -> None:
    """Rebuild ``type(mod)(config)`` on CPU (drawing from a local generator) and copy ``names``."""
    import torch

    try:
        with seeded_init(0), torch.no_grad():
            ref = type(mod)(config)
    except Exception:  # not constructible from the model's config: the caller raises
        return
    for n in names:
        b = getattr(ref, "_buffers", {}).get(n)
        if b is not None and b.shape == mod._buffers[n].shape and b.dtype == mod._buffers[n].dtype:
            mod._buffers[n].copy_(b)


@contextlib.contextmanager
def seeded_init(seed: "int | torch.Generator") -> Iterator["torch.Generator"]:
    """Modules constructed inside draw their own default initialisation from a local generator.

    Every random draw torch makes in this thread (``randn``, ``Tensor.uniform_``,
    ``nn.init.kaiming_uniform_``, ...) without an explicit ``generator`` uses the CPU generator
    seeded with ``seed`` (or the generator given) instead of the global one, so the same seed
    gives the same weights and the global RNG, and every other thread, is left alone. A
    TorchFunctionMode, like ``torch.device(...)``: thread-local. The distributions are the
    modules' own, and the values are those ``torch.manual_seed(seed)`` + construction on CPU
    would give.
    """
    import torch

    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    with _local_generator_mode()(gen):
        yield gen


# Random torch functions and Tensor methods that take ``generator=``; Python functions (torch.nn.init.*)
# are recognised by their signature.
_RANDOM_FUNCTIONS = ("rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson", "binomial",
                     "rand_like", "randn_like", "randint_like")  # fmt: skip
_RANDOM_METHODS = ("uniform_", "normal_", "random_", "bernoulli_", "bernoulli", "exponential_", "geometric_",
                   "log_normal_", "cauchy_", "multinomial")  # fmt: skip


@functools.lru_cache(maxsize=1)
def _local_generator_mode() -> type:
    import inspect

    import torch
    from torch.overrides import TorchFunctionMode

    builtins = {getattr(torch, n) for n in _RANDOM_FUNCTIONS if hasattr(torch, n)}
    builtins |= {getattr(torch.Tensor, n) for n in _RANDOM_METHODS if hasattr(torch.Tensor, n)}
    takes_generator: dict[Any, bool] = {}

    def random(func: Any) -> bool:
        if func in builtins:
            return True
        if func not in takes_generator:
            try:
                takes_generator[func] = "generator" in inspect.signature(func).parameters
            except (TypeError, ValueError):
                takes_generator[func] = False
        return takes_generator[func]

    class LocalGenerator(TorchFunctionMode):
        def __init__(self, generator: torch.Generator):
            super().__init__()
            self.generator = generator

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if kwargs.get("generator") is None and random(func):
                kwargs["generator"] = self.generator
            return func(*args, **kwargs)

    return LocalGenerator


def materialize(module: "torch.nn.Module", seed: int, dtype: "torch.dtype | None" = None, device: str | None = "cpu") -> "torch.nn.Module":
    """Allocate every meta parameter of ``module`` on ``device`` in ``dtype`` and fill it, seeded.

    Linear/Conv weights: standard deviation 1/sqrt(fan_in); embeddings and other parameters:
    0.02 (both drawn uniform with that deviation, faster than normal on CPU); norm weights 1;
    biases 0. Parameters are visited in ``named_modules`` order, each
    drawn from one generator seeded with ``seed``.
    """
    import torch
    from torch import nn

    dev = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    norms = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.InstanceNorm2d)
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None:
        norms = norms + (rms,)
    seen: dict[int, Any] = {}  # a parameter shared by several modules (T5's tied embedding) stays shared
    with torch.no_grad():
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is None:
                    continue
                if id(p) in seen:
                    mod._parameters[name] = seen[id(p)]
                    continue
                t = torch.empty(p.shape, dtype=torch.float32, device=dev)
                if name == "bias" or name.endswith("_bias"):
                    t.zero_()
                elif isinstance(mod, norms) or type(mod).__name__.endswith(("LayerNorm", "RMSNorm", "GroupNorm")):
                    t.fill_(1.0)
                elif isinstance(mod, nn.Embedding) or p.dim() < 2:
                    _uniform(t, 0.02, gen)
                else:
                    _uniform(t, 1.0 / math.sqrt(max(1, p[0].numel())), gen)
                mod._parameters[name] = seen[id(p)] = nn.Parameter(t if dtype == torch.float32 else t.to(dtype), requires_grad=False)
        module.to(device=dev)
        for mod in module.modules():  # float buffers follow the dtype; integer ones (position ids) stay
            for bname, b in list(mod._buffers.items()):
                if b is not None and b.is_floating_point():
                    mod._buffers[bname] = b.to(dtype)
    module.eval()
    return module


def _uniform(t: "torch.Tensor", std: float, gen: "torch.Generator") -> None:
    """Fill with U(-a, a) of standard deviation ``std`` (twice as fast as normal_ on CPU)."""
    a = math.sqrt(3.0) * std
    t.uniform_(-a, a, generator=gen)


def _build(factory, seed: int, dtype, device) -> Any:
    return materialize(_on_meta(factory), seed, dtype, device)


def build_unet(family: Family, size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu"):
    """A seeded UNet2DConditionModel of ``family`` at ``size``."""
    from diffusers import UNet2DConditionModel

    cfg = unet_config(family, size)
    return _build(lambda: UNet2DConditionModel(**cfg), seed + _OFFSETS["unet"], dtype, device)


def build_controlnet(family: Family, size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu"):
    """A seeded ControlNetModel shaped like the family's UNet (IdentityNet for SDXL).

    Unlike a fresh ``from_unet`` copy its zero-convolutions are random too, so its residuals
    are non-zero and its conditioning scale visibly matters in dummy runs.
    """
    from diffusers import ControlNetModel

    cfg = controlnet_config(family, size)
    return _build(lambda: ControlNetModel(**cfg), seed + _OFFSETS["controlnet"], dtype, device)


def build_vae(family: Family, size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu"):
    from diffusers import AutoencoderKL

    cfg = vae_config(family, size)
    return _build(lambda: AutoencoderKL(**cfg), seed + _OFFSETS["vae"], dtype, device)


def build_text_encoders(family: Family, size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu") -> list:
    """[CLIPTextModel] for SD1.5; [CLIPTextModel, CLIPTextModelWithProjection] for SDXL."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfgs = text_encoder_configs(family, size)
    out = [_build(lambda: CLIPTextModel(CLIPTextConfig(**cfgs[0])), seed + _OFFSETS["text_encoder"], dtype, device)]
    if family == "sdxl":
        out.append(
            _build(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**cfgs[1])), seed + _OFFSETS["text_encoder_2"], dtype, device)
        )
    return out


def build_image_encoder(size: Size = "tiny", seed: int = 0, dtype=None, device: str = "cpu"):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor) shaped like CLIP ViT-H/14 (or tiny)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = image_encoder_config(size)
    model = _build(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)), seed + _OFFSETS["image_encoder"], dtype, device)
    processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return model, processor


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable unicode map (the standard construction)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, (chr(c) for c in chars)))


# A few merges so common words become fewer tokens (any list works; these are not CLIP's).
_MERGES = ("t h", "th e</w>", "a n", "an d</w>", "i n", "e r", "o n", "r e", "a r", "e n", "o f</w>")


def build_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIP-style byte-level BPE tokenizer built in memory (NOT CLIP's vocabulary).

    Vocabulary: the 256 byte symbols, their word-final ``</w>`` forms, :data:`_MERGES`, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (the highest id, as in CLIP, so CLIP text models
    that pool at ``argmax(input_ids)`` find the end token). Max length 77.
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    for m in _MERGES:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in _MERGES], pad_token=pad_token, model_max_length=77)


def build_tokenizers(family: Family) -> list:
    """[tokenizer] for SD1.5; [tokenizer, tokenizer_2] for SDXL (tokenizer_2 pads with ``!`` as SDXL's does)."""
    _check(family, "tiny")
    return [build_tokenizer()] + ([build_tokenizer(pad_token="!")] if family == "sdxl" else [])


def build_scheduler(family: Family):
    """The base repo's default scheduler (EulerDiscrete for SDXL, PNDM for SD1.5)."""
    import diffusers

    cfg = scheduler_config(family)
    cls = getattr(diffusers, cfg["_class_name"])
    return cls.from_config({k: v for k, v in cfg.items() if k != "_class_name"})


def build_components(
    family: Family = "sdxl",
    size: Size = "tiny",
    seed: int = 0,
    dtype=None,
    device: str = "cpu",
    controlnet: bool = False,
    image_encoder: bool = False,
) -> dict[str, Any]:
    """Everything a diffusers pipeline of ``family`` needs, with seeded random weights.

    Keys: ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` and, for SDXL,
    ``text_encoder_2``, ``tokenizer_2``; ``controlnet`` (IdentityNet-shaped) when asked;
    ``image_encoder`` + ``feature_extractor`` (CLIP ViT-H-shaped) when asked. ``dtype``
    defaults to float32; ``device`` is where weights are allocated (directly, no CPU copy).
    """
    _check(family, size)
    out: dict[str, Any] = {
        "unet": build_unet(family, size, seed, dtype, device),
        "vae": build_vae(family, size, seed, dtype, device),
        "scheduler": build_scheduler(family),
    }
    encoders = build_text_encoders(family, size, seed, dtype, device)
    tokenizers = build_tokenizers(family)
    out["text_encoder"], out["tokenizer"] = encoders[0], tokenizers[0]
    if family == "sdxl":
        out["text_encoder_2"], out["tokenizer_2"] = encoders[1], tokenizers[1]
    if controlnet:
        out["controlnet"] = build_controlnet(family, size, seed, dtype, device)
    if image_encoder:
        out["image_encoder"], out["feature_extractor"] = build_image_encoder(size, seed, dtype, device)
    return out


def cross_attention_dim(family: Family, size: Size = "full") -> int:
    """The UNet's cross-attention width (the identity tokens' width): 2048 SDXL, 768 SD1.5 at full size."""
    return int(unet_config(family, size)["cross_attention_dim"])


def native_size(family: Family, size: Size = "full") -> int:
    """The image side the UNet was built for: its latent ``sample_size`` times the VAE's downsampling
    (1024 full SDXL, 512 full SD1.5, 64 tiny)."""
    return int(unet_config(family, size)["sample_size"]) * 2 ** (len(vae_config(family, size)["block_out_channels"]) - 1)


@functools.lru_cache(maxsize=None)
def parameter_count(component: str, family: Family = "sdxl", size: Size = "full") -> int:
    """Parameters of a component built on the meta device (no memory allocated).

    ``component``: unet, controlnet, vae, text_encoder, text_encoder_2, image_encoder.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

    from faceanchor.errors import InvalidInputError

    factories = {
        "unet": lambda: UNet2DConditionModel(**unet_config(family, size)),
        "controlnet": lambda: ControlNetModel(**controlnet_config(family, size)),
        "vae": lambda: AutoencoderKL(**vae_config(family, size)),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**text_encoder_configs(family, size)[0])),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(CLIPTextConfig(**text_encoder_configs(family, size)[-1])),
        "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**image_encoder_config(size))),
    }
    if component not in factories:
        raise InvalidInputError(f"unknown component '{component}'; use one of {', '.join(factories)}")
    import torch

    with torch.device("meta"):
        m = factories[component]()
    return sum(p.numel() for p in m.parameters())

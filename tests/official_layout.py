"""Checkpoints in the official IP-Adapter-FaceID and InstantID layouts, written independently.

Nothing here imports ``faceanchor``: every key and shape below is spelled out from the official
scripts, so a test that loads these files through faceanchor's loaders checks them against the
official naming, not against faceanchor's own ``save()``.

Where each name comes from (tencent-ailab/IP-Adapter @62e4af9, instantX-research/InstantID @2145b67):

* **Processor index ``<i>``.** Every official loader does
  ``ip_layers = torch.nn.ModuleList(unet.attn_processors.values()); ip_layers.load_state_dict(sd["ip_adapter"])``
  (``ip_adapter_faceid.py`` / ``ip_adapter_faceid_separate.py`` ``load_ip_adapter``, InstantID
  ``pipeline_stable_diffusion_xl_instantid.py`` ``set_ip_adapter``), so ``<i>`` is the position of
  the processor in ``unet.attn_processors`` with self-attention processors counted.
* **Which processor gets what** (``set_ip_adapter`` of each script): a name ending in
  ``attn1.processor`` is self-attention (``cross_attention_dim = None``), everything else is
  cross-attention with ``cross_attention_dim = unet.config.cross_attention_dim``; the width is
  ``hidden_size`` from ``block_out_channels`` (mid: last; ``up_blocks.<b>``: reversed[b];
  ``down_blocks.<b>``: [b]), see :func:`official_hidden_size`.

  - FaceID / Plus / PlusV2 (``ip_adapter_faceid.py``, trained by ``tutorial_train_faceid.py``):
    self-attention -> ``LoRAAttnProcessor(hidden, None, rank)``: ``to_q_lora``, ``to_k_lora``,
    ``to_v_lora``, ``to_out_lora``, each a diffusers ``LoRALinearLayer`` (``down.weight`` is
    ``(rank, in)``, ``up.weight`` is ``(out, rank)``; k/v take ``cross_attention_dim or hidden``);
    cross-attention -> ``LoRAIPAttnProcessor``: the same four LoRAs (k/v ``in`` = cross width)
    plus ``to_k_ip.weight`` / ``to_v_ip.weight`` ``(hidden, cross)`` (``nn.Linear(..., bias=False)``).
  - Portrait (``ip_adapter_faceid_separate.py``): self-attention -> ``AttnProcessor()`` (no
    weights, but it still takes its index); cross-attention -> ``IPAttnProcessor``: only
    ``to_k_ip.weight`` / ``to_v_ip.weight``.
  - InstantID: self-attention -> ``AttnProcessor()``; cross-attention -> ``IPAttnProcessor``:
    ``to_k_ip.weight`` / ``to_v_ip.weight``. SDXL keys are therefore ``1, 3, 5, ...``.

* **``image_proj``.** FaceID and Portrait: ``MLPProjModel`` (``proj`` = Sequential(Linear(D, 2D),
  GELU, Linear(2D, tokens*C)) -> ``proj.0.*``, ``proj.2.*``; ``norm`` = LayerNorm(C)), 4 tokens,
  Portrait 16. Plus / PlusV2: ``ProjPlusModel`` = the same ``proj``/``norm`` plus
  ``perceiver_resampler`` = ``FacePerceiverResampler(dim=C, depth=4, dim_head=64, heads=C // 64,
  embedding_dim=clip_hidden, output_dim=C, ff_mult=4)``. InstantID: ``ip_adapter/resampler.py``
  ``Resampler(dim=1280, depth=4, dim_head=64, heads=20, num_queries=16, embedding_dim=512,
  output_dim=cross, ff_mult=4)`` (``set_image_proj_model``). Both perceivers: ``proj_in``,
  ``proj_out``, ``norm_out``, ``layers.<j>.0`` = PerceiverAttention (``norm1``, ``norm2``,
  ``to_q`` ``(heads*dim_head, dim)``, ``to_kv`` ``(2*heads*dim_head, dim)``, ``to_out``
  ``(dim, heads*dim_head)``, no biases), ``layers.<j>.1`` = FeedForward Sequential(LayerNorm ->
  ``0.*``, Linear no bias -> ``1.weight``, GELU, Linear no bias -> ``3.weight``); the Resampler
  adds ``latents`` ``(1, num_queries, dim)``.

* **Files.** ``.bin``: ``torch.save({"image_proj": {...}, "ip_adapter": {...}})`` (what the
  official scripts' README conversion writes and what every loader reads). ``.safetensors``:
  the same tensors flattened as ``image_proj.<key>`` / ``ip_adapter.<key>`` (what
  ``ip_adapter_faceid.py`` ``load_ip_adapter`` unpacks; the InstantID pipeline reads ``.bin``
  only).

Tensors are seeded random values; the order of the keys follows the official modules'
registration order, so a seed always gives the same tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

Shapes = dict[str, tuple[int, ...]]
Checkpoint = dict[str, dict[str, torch.Tensor]]

#: Projection and processor kinds of each FaceID method in the official scripts.
FACEID_METHODS: dict[str, dict[str, Any]] = {
    "faceid": {"projection": "mlp", "num_tokens": 4, "lora": True},
    "faceid-plus": {"projection": "plus", "num_tokens": 4, "lora": True},
    "faceid-plusv2": {"projection": "plus", "num_tokens": 4, "lora": True},
    "faceid-portrait": {"projection": "mlp", "num_tokens": 16, "lora": False},
}


# ---------------------------------------------------------------------------- UNet side

def is_self_attention(name: str) -> bool:
    """The official test: ``cross_attention_dim = None if name.endswith("attn1.processor")``."""
    return name.endswith("attn1.processor")


def official_hidden_size(config: Any, name: str) -> int:
    """``hidden_size`` as every official ``set_ip_adapter`` computes it from the processor name."""
    channels = list(config.block_out_channels)
    if name.startswith("mid_block"):
        return int(channels[-1])
    if name.startswith("up_blocks"):
        return int(list(reversed(channels))[int(name[len("up_blocks.")])])
    if name.startswith("down_blocks"):
        return int(channels[int(name[len("down_blocks.")])])
    raise ValueError(f"the official scripts have no hidden_size rule for processor {name!r}")


def processor_names(unet: Any) -> list[str]:
    """``unet.attn_processors`` keys, in the order ``ModuleList(...values())`` numbers them."""
    return list(unet.attn_processors.keys())


def _lora(prefix: str, in_features: int, out_features: int, rank: int) -> Shapes:
    # diffusers LoRALinearLayer: down = Linear(in, rank, bias=False), up = Linear(rank, out, bias=False)
    return {f"{prefix}.down.weight": (rank, in_features), f"{prefix}.up.weight": (out_features, rank)}


def faceid_ip_adapter_shapes(unet: Any, *, lora: bool, rank: int = 128) -> Shapes:
    """``ip_adapter`` keys of ``ip_adapter_faceid.py`` (``lora=True``) or ``_separate.py`` (Portrait)."""
    cross = int(unet.config.cross_attention_dim)
    out: Shapes = {}
    for i, name in enumerate(processor_names(unet)):
        hidden = official_hidden_size(unet.config, name)
        kv_in = hidden if is_self_attention(name) else cross  # `cross_attention_dim or hidden_size`
        if lora:
            out.update(_lora(f"{i}.to_q_lora", hidden, hidden, rank))
            out.update(_lora(f"{i}.to_k_lora", kv_in, hidden, rank))
            out.update(_lora(f"{i}.to_v_lora", kv_in, hidden, rank))
            out.update(_lora(f"{i}.to_out_lora", hidden, hidden, rank))
        if not is_self_attention(name):
            out[f"{i}.to_k_ip.weight"] = (hidden, cross)
            out[f"{i}.to_v_ip.weight"] = (hidden, cross)
    return out


def instantid_ip_adapter_shapes(unet: Any) -> Shapes:
    """``ip_adapter`` keys of InstantID's ``set_ip_adapter``: IP weights on cross-attention only."""
    cross = int(unet.config.cross_attention_dim)
    out: Shapes = {}
    for i, name in enumerate(processor_names(unet)):
        if is_self_attention(name):
            continue
        hidden = official_hidden_size(unet.config, name)
        out[f"{i}.to_k_ip.weight"] = (hidden, cross)
        out[f"{i}.to_v_ip.weight"] = (hidden, cross)
    return out


# ---------------------------------------------------------------------------- projections

def mlp_proj_shapes(cross_attention_dim: int, id_embeddings_dim: int, num_tokens: int) -> Shapes:
    """``MLPProjModel``: ``proj`` Sequential(Linear, GELU, Linear) then ``norm`` LayerNorm."""
    d, c = id_embeddings_dim, cross_attention_dim
    return {
        "proj.0.weight": (2 * d, d),
        "proj.0.bias": (2 * d,),
        "proj.2.weight": (c * num_tokens, 2 * d),
        "proj.2.bias": (c * num_tokens,),
        "norm.weight": (c,),
        "norm.bias": (c,),
    }


def _perceiver_layers(prefix: str, dim: int, depth: int, dim_head: int, heads: int, ff_mult: int) -> Shapes:
    inner, ff = dim_head * heads, int(dim * ff_mult)
    out: Shapes = {}
    for j in range(depth):
        a, f = f"{prefix}layers.{j}.0.", f"{prefix}layers.{j}.1."
        out.update({
            a + "norm1.weight": (dim,), a + "norm1.bias": (dim,), a + "norm2.weight": (dim,), a + "norm2.bias": (dim,),
            a + "to_q.weight": (inner, dim), a + "to_kv.weight": (2 * inner, dim), a + "to_out.weight": (dim, inner),
            f + "0.weight": (dim,), f + "0.bias": (dim,), f + "1.weight": (ff, dim), f + "3.weight": (dim, ff),
        })
    return out


def proj_plus_shapes(cross_attention_dim: int, id_embeddings_dim: int, clip_embeddings_dim: int, num_tokens: int = 4) -> Shapes:
    """``ProjPlusModel``: the MLP's keys, then ``perceiver_resampler.*`` (FacePerceiverResampler)."""
    c = cross_attention_dim
    out = mlp_proj_shapes(c, id_embeddings_dim, num_tokens)
    p = "perceiver_resampler."
    out.update({
        p + "proj_in.weight": (c, clip_embeddings_dim), p + "proj_in.bias": (c,),
        p + "proj_out.weight": (c, c), p + "proj_out.bias": (c,),
        p + "norm_out.weight": (c,), p + "norm_out.bias": (c,),
    })
    out.update(_perceiver_layers(p, c, depth=4, dim_head=64, heads=c // 64, ff_mult=4))
    return out


def resampler_shapes(
    *, dim: int = 1280, depth: int = 4, dim_head: int = 64, heads: int = 20, num_queries: int = 16,
    embedding_dim: int = 512, output_dim: int = 2048, ff_mult: int = 4,
) -> Shapes:
    """InstantID's ``ip_adapter/resampler.py`` ``Resampler`` (defaults: ``set_image_proj_model``)."""
    out: Shapes = {
        "latents": (1, num_queries, dim),
        "proj_in.weight": (dim, embedding_dim), "proj_in.bias": (dim,),
        "proj_out.weight": (output_dim, dim), "proj_out.bias": (output_dim,),
        "norm_out.weight": (output_dim,), "norm_out.bias": (output_dim,),
    }
    out.update(_perceiver_layers("", dim, depth, dim_head, heads, ff_mult))
    return out


# ---------------------------------------------------------------------------- values

def _is_norm(key: str) -> bool:
    return "norm" in key


def seeded(shapes: Shapes, g: torch.Generator, std: float, norms: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """One ``randn * std`` tensor per key, in order, from ``g``.

    ``norms="identity"``: 1-D tensors whose key names a norm (``norm``, ``norm_out``,
    ``norm1``/``norm2``) are LayerNorm identity (weight 1, bias 0) and draw nothing;
    ``norms="jitter"``: every key draws, and weights whose key names a norm become ``1 + 0.1 x``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if norms == "identity" and _is_norm(key) and len(shape) == 1:
            out[key] = (torch.ones if key.endswith("weight") else torch.zeros)(shape).to(dtype)
            continue
        t = torch.randn(shape, generator=g) * std
        if norms == "jitter" and _is_norm(key) and key.endswith("weight"):
            t = 1.0 + t * 0.1
        out[key] = t.to(dtype)
    return out


def faceid_checkpoint(
    unet: Any, method: str, *, id_dim: int = 512, clip_dim: int | None = None, rank: int = 128,
    seed: int = 0, std: float = 0.05, dtype: torch.dtype = torch.float32,
) -> Checkpoint:
    """An official-layout FaceID checkpoint for ``unet`` (``clip_dim``: the CLIP encoder's hidden size, Plus only)."""
    kind = FACEID_METHODS[method]
    cross = int(unet.config.cross_attention_dim)
    if kind["projection"] == "plus":
        if clip_dim is None:
            raise ValueError(f"{method} needs clip_dim (the CLIP vision hidden size)")
        proj = proj_plus_shapes(cross, id_dim, clip_dim, kind["num_tokens"])
    else:
        proj = mlp_proj_shapes(cross, id_dim, kind["num_tokens"])
    g = torch.Generator().manual_seed(seed)
    image_proj = seeded(proj, g, std, "identity", dtype)
    ip = seeded(faceid_ip_adapter_shapes(unet, lora=kind["lora"], rank=rank), g, std, "identity", dtype)
    return {"image_proj": image_proj, "ip_adapter": ip}


def instantid_checkpoint(
    unet: Any, *, embedding_dim: int = 512, dim: int = 1280, depth: int = 4, dim_head: int = 64, heads: int = 20,
    num_queries: int = 16, ff_mult: int = 4, seed: int = 5, std: float = 0.2, dtype: torch.dtype = torch.float32,
) -> Checkpoint:
    """An official-layout InstantID ``ip-adapter.bin`` for ``unet`` (defaults: the released Resampler)."""
    g = torch.Generator().manual_seed(seed)
    proj = resampler_shapes(
        dim=dim, depth=depth, dim_head=dim_head, heads=heads, num_queries=num_queries, embedding_dim=embedding_dim,
        output_dim=int(unet.config.cross_attention_dim), ff_mult=ff_mult,
    )
    image_proj = seeded(proj, g, std, "jitter", dtype)
    ip = seeded(instantid_ip_adapter_shapes(unet), g, std, "jitter", dtype)
    return {"image_proj": image_proj, "ip_adapter": ip}


# ---------------------------------------------------------------------------- files

def write_bin(ckpt: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path) -> Path:
    """``torch.save({"image_proj": ..., "ip_adapter": ...}, path)``, as the official conversion."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({s: dict(v) for s, v in ckpt.items()}, str(p))
    return p


def flatten(ckpt: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{"image_proj.<k>": ..., "ip_adapter.<k>": ...}``, the prefixes ``load_ip_adapter`` strips."""
    return {f"{s}.{k}": v.contiguous() for s, sec in ckpt.items() for k, v in sec.items()}


def write_safetensors(ckpt: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path) -> Path:
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(flatten(ckpt), str(p))
    return p


def write(ckpt: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path) -> Path:
    """By suffix: ``.safetensors`` flattened, anything else ``torch.save`` nested."""
    return write_safetensors(ckpt, path) if str(path).endswith(".safetensors") else write_bin(ckpt, path)


# ---------------------------------------------------------------------------- InfiniteYou (bytedance/InfiniteYou)

def infiniteyou_projection_checkpoint(
    *, embedding_dim: int = 512, dim: int = 1280, depth: int = 4, dim_head: int = 64, heads: int = 20,
    num_queries: int = 8, output_dim: int = 4096, ff_mult: int = 4, seed: int = 7, std: float = 0.2,
    dtype: torch.dtype = torch.float32,
) -> dict[str, dict[str, torch.Tensor]]:
    """``image_proj_model.bin`` as ``pipeline_infu_flux.py`` reads it: ``torch.load(...)["image_proj"]``
    loaded into ``pipelines/resampler.py`` ``Resampler(dim=1280, depth=4, dim_head=64, heads=20,
    num_queries=8, embedding_dim=512, output_dim=4096, ff_mult=4)`` (the open_flamingo perceiver: the
    same key names as InstantID's, 8 queries). Only the ``image_proj`` section."""
    g = torch.Generator().manual_seed(seed)
    shapes = resampler_shapes(dim=dim, depth=depth, dim_head=dim_head, heads=heads, num_queries=num_queries,
                              embedding_dim=embedding_dim, output_dim=output_dim, ff_mult=ff_mult)
    return {"image_proj": seeded(shapes, g, std, "jitter", dtype)}


def official_perceiver_forward(sd: Mapping[str, torch.Tensor], x: torch.Tensor, *, heads: int, dim_head: int) -> torch.Tensor:
    """The official ``Resampler.forward`` written out with functional ops on the state dict (an
    independent reference: latents repeat, ``proj_in``, per layer attention over ``cat(x, latents)``
    with q and k both scaled by ``dim_head ** -0.25`` and softmax in float32, then FeedForward,
    both residual; ``proj_out`` then ``norm_out``)."""
    import math

    import torch.nn.functional as F

    def ln(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.layer_norm(t, (t.shape[-1],), sd[p + ".weight"], sd[p + ".bias"])

    lat = sd["latents"].repeat(x.shape[0], 1, 1)
    x = F.linear(x, sd["proj_in.weight"], sd["proj_in.bias"])
    j = 0
    while f"layers.{j}.0.to_q.weight" in sd:
        a, f = f"layers.{j}.0.", f"layers.{j}.1."
        xn, ln_lat = ln(x, a + "norm1"), ln(lat, a + "norm2")
        b, n, _ = ln_lat.shape
        q = F.linear(ln_lat, sd[a + "to_q.weight"])
        k, v = F.linear(torch.cat((xn, ln_lat), dim=-2), sd[a + "to_kv.weight"]).chunk(2, dim=-1)
        sh = lambda t: t.view(b, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = sh(q), sh(k), sh(v)
        s = 1 / math.sqrt(math.sqrt(dim_head))
        w = torch.softmax(((q * s) @ (k * s).transpose(-2, -1)).float(), dim=-1).type(q.dtype)
        lat = F.linear((w @ v).permute(0, 2, 1, 3).reshape(b, n, -1), sd[a + "to_out.weight"]) + lat
        h = F.linear(F.gelu(F.linear(ln(lat, f + "0"), sd[f + "1.weight"])), sd[f + "3.weight"])
        lat = h + lat
        j += 1
    return ln(F.linear(lat, sd["proj_out.weight"], sd["proj_out.bias"]), "norm_out")


# ---------------------------------------------------------------------------- facexlib ArcFace (xinntao/facexlib)

def facexlib_arcface_shapes(stages=((64, 3), (128, 4), (256, 14), (512, 3)), stem: int = 64, emb: int = 512, reduction: int = 16) -> Shapes:
    """``facexlib/recognition/arcface_arch.py`` ``Backbone(num_layers=50, mode='ir_se')``'s state dict
    (``recognition_arcface_ir_se50.pth``): ``input_layer`` = Sequential(Conv2d(3, 64, 3, bias=False),
    BatchNorm2d, PReLU); ``body.<i>`` = ``bottleneck_IR_SE``: ``shortcut_layer`` = MaxPool2d (no
    weights) when in == depth else Sequential(Conv2d 1x1, BatchNorm2d); ``res_layer`` =
    Sequential(BatchNorm2d(in), Conv2d(in, depth, 3), PReLU(depth), Conv2d(depth, depth, 3, stride),
    BatchNorm2d(depth), SEModule(fc1, fc2: 1x1 convs, no bias)); ``output_layer`` =
    Sequential(BatchNorm2d(512), Dropout, Flatten, Linear(512*7*7, 512), BatchNorm1d(512))."""
    def bn(p: str, c: int) -> Shapes:
        return {p + ".weight": (c,), p + ".bias": (c,), p + ".running_mean": (c,), p + ".running_var": (c,), p + ".num_batches_tracked": ()}

    out: Shapes = {"input_layer.0.weight": (stem, 3, 3, 3), **bn("input_layer.1", stem), "input_layer.2.weight": (stem,)}
    i, cin = 0, stem
    for depth, n in stages:
        for _ in range(n):
            p = f"body.{i}."
            if cin != depth:
                out[p + "shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                out.update(bn(p + "shortcut_layer.1", depth))
            out.update(bn(p + "res_layer.0", cin))
            out[p + "res_layer.1.weight"] = (depth, cin, 3, 3)
            out[p + "res_layer.2.weight"] = (depth,)
            out[p + "res_layer.3.weight"] = (depth, depth, 3, 3)
            out.update(bn(p + "res_layer.4", depth))
            out[p + "res_layer.5.fc1.weight"] = (depth // reduction, depth, 1, 1)
            out[p + "res_layer.5.fc2.weight"] = (depth, depth // reduction, 1, 1)
            i, cin = i + 1, depth
    out.update(bn("output_layer.0", cin))
    out["output_layer.3.weight"], out["output_layer.3.bias"] = (emb, cin * 49), (emb,)
    out.update(bn("output_layer.4", emb))
    return out


def facexlib_arcface_checkpoint(seed: int = 3, **kw: Any) -> dict[str, torch.Tensor]:
    """Seeded random weights in that layout (BN running stats positive, PReLU slopes 0.25 ± noise)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for k, shape in facexlib_arcface_shapes(**kw).items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            out[k] = 1.0 + 0.1 * torch.rand(shape, generator=g)
        elif k.endswith("running_mean") or k.endswith(".bias"):
            out[k] = 0.05 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # BN weight, PReLU slope
            out[k] = (0.25 if ".2.weight" in k and "res_layer" in k or k == "input_layer.2.weight" else 1.0) + 0.05 * torch.randn(shape, generator=g)
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            out[k] = torch.randn(shape, generator=g) / fan_in**0.5
    return out

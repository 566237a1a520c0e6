"""The IP-Adapter-FaceID family as one adapter object: build, load, install, set scales, unload.

Variants (tencent-ailab/IP-Adapter ``ip_adapter_faceid.py`` / ``ip_adapter_faceid_separate.py``):

========================  ===========  ======  =====  ========  ==========
method                    projection   tokens  LoRA   CLIP      references
========================  ===========  ======  =====  ========  ==========
``faceid``                MLP          4       yes    no        1
``faceid-plus``           MLP+perceiver 4      yes    yes       1
``faceid-plusv2``         ... +shortcut 4      yes    yes       1
``faceid-portrait``       MLP          16/ref  no     no        1-5
========================  ===========  ======  =====  ========  ==========

Installing replaces every processor of ``unet.attn_processors`` as the reference does (LoRA
methods: ``attn1`` → :class:`LoRAAttnProcessor`, others → :class:`LoRAIPAttnProcessor`;
Portrait: ``attn1`` keeps the base processor, others → :class:`IPAttnProcessor`). The
original processor objects are kept and :meth:`FaceIDAdapter.unload` puts them back, so the
base UNet's weights are never written and one loaded base serves every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from faceanchor.adapters.faceid_attention import IPAttnProcessor, LoRAAttnProcessor, LoRAIPAttnProcessor
from faceanchor.adapters.faceid_checkpoint import (
    check_sections,
    describe_checkpoint,
    load_exact,
    read_faceid_checkpoint,
    write_faceid_checkpoint,
)
from faceanchor.adapters.faceid_projection import MLPProjModel, ProjPlusModel
from faceanchor.errors import CheckpointError, EmbeddingMismatchError, InvalidInputError

#: The embedding space the official FaceID weights were trained on (normalised embedding).
FACEID_EMBEDDING_SPACE = "buffalo_l"
MAX_PORTRAIT_REFERENCES = 5
DEFAULT_LORA_RANK = 128


@dataclass(frozen=True)
class FaceIDVariant:
    """Static facts about one method of the family."""

    method: str
    tokens_per_embedding: int
    lora: bool
    clip: bool
    shortcut: bool
    max_references: int


VARIANTS: dict[str, FaceIDVariant] = {
    "faceid": FaceIDVariant("faceid", 4, lora=True, clip=False, shortcut=False, max_references=1),
    "faceid-plus": FaceIDVariant("faceid-plus", 4, lora=True, clip=True, shortcut=False, max_references=1),
    "faceid-plusv2": FaceIDVariant("faceid-plusv2", 4, lora=True, clip=True, shortcut=True, max_references=1),
    "faceid-portrait": FaceIDVariant(
        "faceid-portrait", 16, lora=False, clip=False, shortcut=False, max_references=MAX_PORTRAIT_REFERENCES
    ),
}


_OURS = (LoRAAttnProcessor, LoRAIPAttnProcessor, IPAttnProcessor)


def get_variant(method: str) -> FaceIDVariant:
    try:
        return VARIANTS[method]
    except KeyError:
        raise InvalidInputError(f"unknown FaceID method {method!r}; choose one of {', '.join(VARIANTS)}") from None


def _attention_module(unet: nn.Module, processor_name: str) -> nn.Module:
    return unet.get_submodule(processor_name.rsplit(".processor", 1)[0])


def check_embedding_space(space: str | None, required: str | None) -> None:
    """Refuse an embedding from another face encoder than the adapter was trained with."""
    if required is not None and space is not None and space != required:
        raise EmbeddingMismatchError(
            f"these FaceID weights need '{required}' face embeddings (InsightFace buffalo_l, normalised) but got "
            f"'{space}'; install the buffalo_l face pack or use dummy weights"
        )


class FaceIDAdapter:
    """Projection + attention processors of one FaceID method, bound to one UNet.

    Build with :meth:`build` (random weights, for dummy/tiny use) then :meth:`load_checkpoint`
    (or use :meth:`from_checkpoint`). :meth:`install` / :meth:`unload` swap the processors in
    and out; :meth:`project` turns face embeddings (and CLIP features) into conditional and
    unconditional identity tokens.
    """

    def __init__(
        self,
        variant: FaceIDVariant,
        unet: nn.Module,
        image_proj: nn.Module,
        processors: dict[str, nn.Module],
        id_dim: int,
        clip_dim: int | None,
        lora_rank: int | None,
        required_space: str | None = None,
    ):
        self.variant = variant
        self.unet = unet
        self.image_proj = image_proj
        self.processors = processors
        self.id_dim = id_dim
        self.clip_dim = clip_dim
        self.lora_rank = lora_rank
        self.required_space = required_space
        self._saved: dict[str, object] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        unet: nn.Module,
        method: str,
        *,
        id_dim: int = 512,
        clip_dim: int | None = None,
        lora_rank: int = DEFAULT_LORA_RANK,
        required_space: str | None = None,
        seed: int = 0,
    ) -> "FaceIDAdapter":
        """Create the modules for ``unet`` with freshly initialised (random) weights.

        Each module keeps its own default init (LoRA ``up`` zero, as training starts), drawn from
        a local generator seeded with ``seed``: the global torch RNG is not touched. Projection
        first, then the processors in ``unet.attn_processors`` order.
        """
        from faceanchor.models.dummy import seeded_init

        variant = get_variant(method)
        cross = int(unet.config.cross_attention_dim)
        param = next(unet.parameters())
        device, dtype = param.device, param.dtype
        if variant.clip:
            if clip_dim is None:
                raise InvalidInputError(f"{method} needs the CLIP image encoder's hidden size (clip_dim)")
            if cross < 64:
                raise InvalidInputError(f"{method} needs a cross-attention width of at least 64 (perceiver heads of 64), got {cross}")
        base = unet.attn_processors
        if any(isinstance(p, _OURS) for p in base.values()):
            raise InvalidInputError("a FaceID adapter is installed on this UNet; unload it before building another")

        with seeded_init(seed):
            if variant.clip:
                proj: nn.Module = ProjPlusModel(cross, id_dim, clip_dim, variant.tokens_per_embedding)
            else:
                proj = MLPProjModel(cross, id_dim, variant.tokens_per_embedding)
            processors: dict[str, nn.Module] = {}
            for name, current in base.items():
                attn = _attention_module(unet, name)
                hidden = int(attn.to_q.out_features)
                self_attn = name.endswith("attn1.processor")
                kv_in = None if self_attn else int(unet.config.cross_attention_dim)
                if variant.lora:
                    if self_attn:
                        p: nn.Module = LoRAAttnProcessor(hidden, None, rank=lora_rank)
                    else:
                        p = LoRAIPAttnProcessor(hidden, kv_in, rank=lora_rank, num_tokens=variant.tokens_per_embedding)
                elif self_attn:
                    p = current  # the reference uses a plain AttnProcessor here: same math, no weights
                else:
                    p = IPAttnProcessor(hidden, kv_in, num_tokens=variant.tokens_per_embedding)
                processors[name] = p
        proj = proj.to(device=device, dtype=dtype).eval()
        for name, p in processors.items():
            if isinstance(p, nn.Module) and p is not base[name]:
                processors[name] = p.to(device=device, dtype=dtype).eval()
        return cls(
            variant, unet, proj, processors, id_dim, clip_dim if variant.clip else None,
            lora_rank if variant.lora else None, required_space,
        )

    @classmethod
    def from_checkpoint(
        cls,
        unet: nn.Module,
        method: str,
        checkpoint: str | Path | Mapping[str, Mapping[str, torch.Tensor]],
        *,
        clip_dim: int | None = None,
        required_space: str | None = FACEID_EMBEDDING_SPACE,
    ) -> "FaceIDAdapter":
        """Build for ``unet`` with the checkpoint's dimensions and load it, every tensor accounted for."""
        state = read_faceid_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
        source = Path(checkpoint).name if isinstance(checkpoint, (str, Path)) else "checkpoint"
        layout = describe_checkpoint(state, source)
        variant = get_variant(method)
        if method not in layout.likely_methods:
            raise CheckpointError(
                f"{source} looks like a {' / '.join(layout.likely_methods)} checkpoint "
                f"({layout.projection} projection, {layout.num_tokens} tokens, LoRA {'yes' if layout.has_lora else 'no'}), "
                f"not {method}"
            )
        cross = int(unet.config.cross_attention_dim)
        if layout.cross_attention_dim != cross:
            raise CheckpointError(
                f"{source} makes {layout.cross_attention_dim}-wide tokens but this UNet's cross-attention is {cross} wide; "
                "use the checkpoint made for this base (SD1.5: 768, SDXL: 2048)"
            )
        if variant.clip and clip_dim is not None and layout.clip_dim != clip_dim:
            raise CheckpointError(
                f"{source} expects {layout.clip_dim}-wide CLIP features but the image encoder gives {clip_dim}; "
                "use the CLIP image encoder the checkpoint was trained with (ViT-H/14: 1280)"
            )
        adapter = cls.build(
            unet, method, id_dim=layout.id_dim, clip_dim=layout.clip_dim,
            lora_rank=layout.lora_rank or DEFAULT_LORA_RANK, required_space=required_space,
        )
        adapter.load_state(state, source)
        return adapter

    # ------------------------------------------------------------------ weights

    def _ip_layers(self) -> nn.ModuleList:
        """The reference's ``ModuleList(unet.attn_processors.values())`` over our processors."""
        mods = []
        for p in self.processors.values():
            mods.append(p if isinstance(p, nn.Module) else nn.Module())
        return nn.ModuleList(mods)

    @torch.no_grad()
    def randomize(self, seed: int = 0, std: float = 0.02) -> None:
        """Fill every adapter weight (LoRA ``up`` included, which training starts at zero) with
        seeded noise, LayerNorms left at identity: dummy weights that exercise every path."""
        g = torch.Generator().manual_seed(seed)
        for module in (self.image_proj, self._ip_layers()):
            for name, p in module.named_parameters():
                if "norm" in name and p.ndim == 1:
                    continue
                p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))

    def load_state(self, state: Mapping[str, Mapping[str, torch.Tensor]], source: str = "checkpoint") -> None:
        check_sections(state, source)
        load_exact(self.image_proj, state["image_proj"], f"{source}['image_proj'] ({self.variant.method} projection)")
        load_exact(self._ip_layers(), state["ip_adapter"], f"{source}['ip_adapter'] ({self.variant.method} attention processors)")

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """This adapter's weights in the official layout."""
        return {"image_proj": self.image_proj.state_dict(), "ip_adapter": self._ip_layers().state_dict()}

    def save(self, path: str | Path) -> Path:
        s = self.state()
        return write_faceid_checkpoint(path, s["image_proj"], s["ip_adapter"])

    # ------------------------------------------------------------------ lifecycle

    @property
    def installed(self) -> bool:
        return self._saved is not None

    def install(self) -> None:
        """Swap our processors into the UNet, remembering the ones that were there."""
        if self._saved is not None:
            return
        current = self.unet.attn_processors
        if any(isinstance(p, _OURS) for p in current.values()):
            raise InvalidInputError("another FaceID adapter is installed on this UNet; unload it first")
        if set(current) != set(self.processors):
            raise InvalidInputError("this adapter was built for a different UNet (attention layers differ)")
        self._saved = dict(current)
        self.unet.set_attn_processor(dict(self.processors))

    def unload(self) -> None:
        """Put back the exact processor objects that were there before :meth:`install`."""
        if self._saved is None:
            return
        self.unet.set_attn_processor(dict(self._saved))
        self._saved = None

    def set_scale(self, scale: float) -> None:
        for p in self.processors.values():
            if isinstance(p, (LoRAIPAttnProcessor, IPAttnProcessor)):
                p.scale = float(scale)

    def set_lora_scale(self, lora_scale: float) -> None:
        for p in self.processors.values():
            if isinstance(p, LoRAAttnProcessor):
                p.lora_scale = float(lora_scale)

    def set_num_tokens(self, num_tokens: int) -> None:
        """How many trailing encoder tokens are identity tokens (Portrait: 16 × references)."""
        for p in self.processors.values():
            if isinstance(p, (LoRAIPAttnProcessor, IPAttnProcessor)):
                p.num_tokens = int(num_tokens)

    # ------------------------------------------------------------------ projection

    def check_embeddings(self, face_embeds: torch.Tensor, space: str | None = None) -> torch.Tensor:
        """Validate and shape embeddings to ``(references, D)``."""
        check_embedding_space(space, self.required_space)
        e = torch.as_tensor(face_embeds)
        if e.ndim == 1:
            e = e[None]
        if e.ndim == 3 and e.shape[0] == 1:
            e = e[0]
        if e.ndim != 2 or e.shape[-1] != self.id_dim:
            raise EmbeddingMismatchError(
                f"{self.variant.method} expects face embeddings of size {self.id_dim} but got shape {tuple(e.shape)}; "
                "use the face encoder the adapter was trained with"
            )
        n = e.shape[0]
        if n < 1:
            raise InvalidInputError("no face embedding was given")
        if n > self.variant.max_references:
            if self.variant.max_references == 1:
                raise InvalidInputError(
                    f"{self.variant.method} takes one face embedding but got {n}; average them first or use faceid-portrait"
                )
            raise InvalidInputError(
                f"{self.variant.method} takes at most {self.variant.max_references} reference faces, got {n}"
            )
        return e

    @torch.no_grad()
    def project(
        self,
        face_embeds: torch.Tensor,
        clip_embeds: torch.Tensor | None = None,
        uncond_clip_embeds: torch.Tensor | None = None,
        s_scale: float = 1.0,
        space: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cond, uncond)`` identity tokens of shape ``(1, tokens, C)``.

        Uncond uses an all-zeros embedding, and for Plus the CLIP features of an all-zeros pixel
        tensor (``uncond_clip_embeds``), exactly as the reference. Portrait concatenates the
        16 tokens of each reference along the token axis.
        """
        e = self.check_embeddings(face_embeds, space)
        param = next(self.image_proj.parameters())
        e = e.to(device=param.device, dtype=param.dtype)
        zeros = torch.zeros_like(e)
        if self.variant.clip:
            if clip_embeds is None or uncond_clip_embeds is None:
                raise InvalidInputError(f"{self.variant.method} needs the aligned face crop for its CLIP image features")
            if clip_embeds.shape[-1] != self.clip_dim:
                raise EmbeddingMismatchError(
                    f"{self.variant.method} expects CLIP features of width {self.clip_dim}, got {clip_embeds.shape[-1]}"
                )
            c = clip_embeds.to(device=param.device, dtype=param.dtype)
            u = uncond_clip_embeds.to(device=param.device, dtype=param.dtype)
            cond = self.image_proj(e, c, shortcut=self.variant.shortcut, scale=s_scale)
            uncond = self.image_proj(zeros, u, shortcut=self.variant.shortcut, scale=s_scale)
        else:
            cond = self.image_proj(e)
            uncond = self.image_proj(zeros)
        width = cond.shape[-1]
        return cond.reshape(1, -1, width), uncond.reshape(1, -1, width)

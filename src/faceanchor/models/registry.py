"""What each method needs: model ids mapped to hub repos, files, revisions and checksums.

The registry is plain data (frozen dataclasses) built by :func:`default_registry`; nothing is
looked up or downloaded here (see :mod:`faceanchor.models.resolve`).

Choices, documented:

- **SDXL base**: ``stabilityai/stable-diffusion-xl-base-1.0``, the model the InstantID README's
  usage snippet loads. The InstantID gradio demo uses the fine-tune ``wangqixun/YamerMIX_v8``;
  pass it (or any SDXL hub id, diffusers folder or single ``.safetensors``) as ``model_name``.
- **SD1.5 base**: ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (the maintained mirror of
  runwayml's SD1.5). The IP-Adapter-FaceID README uses ``SG161222/Realistic_Vision_V4.0_noVAE``
  with the ``stabilityai/sd-vae-ft-mse`` VAE for its examples; pass that as ``model_name``
  for photo-real results.
- **Depth ControlNet**: ``diffusers/controlnet-depth-sdxl-1.0-small``, as the official InstantID
  multi-ControlNet demo uses; pose ``thibaud/controlnet-openpose-sdxl-1.0``; canny
  ``diffusers/controlnet-canny-sdxl-1.0``.
- **Depth estimator**: ``Intel/dpt-hybrid-midas`` (the demo's), or any transformers
  depth-estimation model the user provides.
- **FaceID LoRA**: the FaceID ``.bin`` checkpoints carry their LoRA inside the ``ip_adapter``
  state (as the reference ``IPAdapterFaceID`` loads it); the separate ``*_lora.safetensors``
  files are listed as optional (for other tools).
- **Face packs**: InsightFace ``antelopev2`` (InstantID) and ``buffalo_l`` (FaceID) are not on
  the Hugging Face hub under an official id; they are looked for in
  ``<insightface_root>/models/<pack>`` and ``<home>/models/insightface/<pack>``. ``buffalo_l``
  can be pulled from InsightFace's GitHub release. ``dlib`` ships inside the
  ``face_recognition_models`` package.

Checksums: a sha256 is recorded only where it was confirmed from the publisher; other files
show their computed digest in ``faceanchor models verify`` without a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

from faceanchor.errors import InvalidInputError

Kind = Literal[
    "base",  # a whole diffusers pipeline folder
    "controlnet",  # a diffusers ControlNetModel folder
    "adapter",  # an identity adapter checkpoint (ip-adapter.bin and the FaceID family)
    "lora",
    "image_encoder",  # CLIP vision model (transformers)
    "depth_estimator",  # transformers depth-estimation model
    "face_pack",  # InsightFace ONNX pack or the dlib models
]
Source = Literal["hub", "insightface", "package"]


@dataclass(frozen=True)
class ModelFile:
    """One file of a model, by its path inside the repository.

    ``alternatives`` are other names that serve the same purpose; together with ``path`` they
    are tried **safetensors first** (see :meth:`candidates`). ``required=False`` files are
    listed and pulled but their absence does not make the model missing.
    """

    path: str
    sha256: str | None = None
    alternatives: tuple[str, ...] = ()
    required: bool = True

    def candidates(self) -> tuple[str, ...]:
        """Names to look for, in order: ``.safetensors`` spellings before ``.bin`` ones."""
        names: list[str] = []
        for name in (self.path, *self.alternatives):
            for n in (_safetensors_sibling(name), name):
                if n is not None and n not in names:
                    names.append(n)
        return tuple(sorted(names, key=lambda n: 0 if n.endswith(".safetensors") else 1))


def _safetensors_sibling(name: str) -> str | None:
    """``x.bin`` → ``x.safetensors``; transformers' ``pytorch_model.bin`` → ``model.safetensors``."""
    if not name.endswith(".bin"):
        return None
    head, _, base = name.rpartition("/")
    prefix = f"{head}/" if head else ""
    if base == "pytorch_model.bin":
        return f"{prefix}model.safetensors"
    return f"{prefix}{base[: -len('.bin')]}.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """One model the project knows: where it comes from and what it is for.

    ``subfolder`` is the folder inside the repository that a loader should open
    (``ControlNetModel`` for IdentityNet); ``space`` is the face-embedding space an adapter was
    trained on; ``family`` the base-model family (``sdxl``/``sd15``) it belongs to.
    """

    name: str
    kind: Kind
    description: str
    repo_id: str | None = None
    files: tuple[ModelFile, ...] = ()
    revision: str = "main"
    subfolder: str | None = None
    family: str | None = None
    space: str | None = None
    source: Source = "hub"
    url: str | None = None  # a direct archive download (face packs)
    optional: bool = False  # needed only for some requests (LCM, extra ControlNets, depth)

    @property
    def required_files(self) -> tuple[ModelFile, ...]:
        return tuple(f for f in self.files if f.required)


# ----------------------------------------------------------------------------- entries

_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def _lora(name: str, description: str, repo_id: str, file: str, family: str) -> "ModelSpec":
    """A LoRA needed only for some requests (few-step schedulers)."""
    return ModelSpec(name=name, kind="lora", description=description, repo_id=repo_id, files=(ModelFile(file),),
                     family=family, optional=True)


def _diffusers_weights(folder: str) -> ModelFile:
    return ModelFile(f"{folder}/diffusion_pytorch_model.safetensors", alternatives=(f"{folder}/diffusion_pytorch_model.bin",))


def _transformers_weights(folder: str) -> ModelFile:
    return ModelFile(f"{folder}/model.safetensors", alternatives=(f"{folder}/pytorch_model.bin",))


def _base_files(family: str) -> tuple[ModelFile, ...]:
    files = [ModelFile("model_index.json"), ModelFile("scheduler/scheduler_config.json")]
    encoders = ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",)
    tokenizers = ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",)
    for te in encoders:
        files += [ModelFile(f"{te}/config.json"), _transformers_weights(te)]
    for tok in tokenizers:
        files += [ModelFile(f"{tok}/{n}") for n in _TOKENIZER_FILES]
    for comp in ("unet", "vae"):
        files += [ModelFile(f"{comp}/config.json"), _diffusers_weights(comp)]
    return tuple(files)


#: Configuration-only files of a base model: what ``from_single_file`` needs offline.
def base_config_files(family: str) -> tuple[str, ...]:
    return tuple(f.path for f in _base_files(family) if f.path.endswith((".json", ".txt")))


def _faceid(name: str, file: str, family: str, lora: str | None, desc: str) -> ModelSpec:
    files = [ModelFile(file)]
    if lora:
        files.append(ModelFile(lora, required=False))
    return ModelSpec(
        name=name,
        kind="adapter",
        description=desc,
        repo_id="h94/IP-Adapter-FaceID",
        files=tuple(files),
        family=family,
        space="buffalo_l",
    )


def _entries() -> list[ModelSpec]:
    out = [
        # ---------------------------------------------------------------- InstantID
        ModelSpec(
            name="instantid-identitynet",
            kind="controlnet",
            description="InstantID IdentityNet (ControlNet on the face keypoint image, SDXL)",
            repo_id="InstantX/InstantID",
            files=(ModelFile("ControlNetModel/config.json"), _diffusers_weights("ControlNetModel")),
            subfolder="ControlNetModel",
            family="sdxl",
            space="antelopev2",
        ),
        ModelSpec(
            name="instantid-adapter",
            kind="adapter",
            description="InstantID face adapter: Resampler image_proj + ip_adapter to_k_ip/to_v_ip",
            repo_id="InstantX/InstantID",
            files=(ModelFile("ip-adapter.bin"),),
            family="sdxl",
            space="antelopev2",
        ),
        # ---------------------------------------------------------------- bases
        ModelSpec(
            name="sdxl-base",
            kind="base",
            description="Stable Diffusion XL 1.0 base (diffusers layout)",
            repo_id="stabilityai/stable-diffusion-xl-base-1.0",
            files=_base_files("sdxl"),
            family="sdxl",
        ),
        ModelSpec(
            name="sd15-base",
            kind="base",
            description="Stable Diffusion 1.5 (diffusers layout)",
            repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
            files=_base_files("sd15"),
            family="sd15",
        ),
        _lora("lcm-lora-sdxl", "LCM-LoRA for SDXL (scheduler=lcm)", "latent-consistency/lcm-lora-sdxl", "pytorch_lora_weights.safetensors", "sdxl"),
        _lora("lcm-lora-sd15", "LCM-LoRA for SD1.5 (scheduler=lcm)", "latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors", "sd15"),
        _lora("sdxl-lightning-4step-lora", "SDXL-Lightning 4-step LoRA (scheduler=lightning)", "ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors", "sdxl"),
        _lora("hyper-sdxl-8step-cfg-lora", "Hyper-SD 8-step CFG LoRA for SDXL (scheduler=hyper)", "ByteDance/Hyper-SD", "Hyper-SDXL-8steps-CFG-lora.safetensors", "sdxl"),
        _lora("hyper-sd15-8step-cfg-lora", "Hyper-SD 8-step CFG LoRA for SD1.5 (scheduler=hyper)", "ByteDance/Hyper-SD", "Hyper-SD15-8steps-CFG-lora.safetensors", "sd15"),
        _lora("tcd-sdxl-lora", "TCD LoRA for SDXL (scheduler=tcd)", "h1t/TCD-SDXL-LoRA", "pytorch_lora_weights.safetensors", "sdxl"),
        _lora("tcd-sd15-lora", "TCD LoRA for SD1.5 (scheduler=tcd)", "h1t/TCD-SD15-LoRA", "pytorch_lora_weights.safetensors", "sd15"),
        # ---------------------------------------------------------------- FaceID family
        _faceid("faceid-sd15", "ip-adapter-faceid_sd15.bin", "sd15", "ip-adapter-faceid_sd15_lora.safetensors",
                "IP-Adapter-FaceID for SD1.5 (MLP projection + LoRA)"),
        _faceid("faceid-sdxl", "ip-adapter-faceid_sdxl.bin", "sdxl", "ip-adapter-faceid_sdxl_lora.safetensors",
                "IP-Adapter-FaceID for SDXL (MLP projection + LoRA)"),
        _faceid("faceid-plus-sd15", "ip-adapter-faceid-plus_sd15.bin", "sd15",
                "ip-adapter-faceid-plus_sd15_lora.safetensors", "IP-Adapter-FaceID-Plus for SD1.5 (face id + CLIP structure)"),
        _faceid("faceid-plusv2-sd15", "ip-adapter-faceid-plusv2_sd15.bin", "sd15",
                "ip-adapter-faceid-plusv2_sd15_lora.safetensors", "IP-Adapter-FaceID-PlusV2 for SD1.5 (s_scale shortcut)"),
        _faceid("faceid-plusv2-sdxl", "ip-adapter-faceid-plusv2_sdxl.bin", "sdxl",
                "ip-adapter-faceid-plusv2_sdxl_lora.safetensors", "IP-Adapter-FaceID-PlusV2 for SDXL (s_scale shortcut)"),
        _faceid("faceid-portrait-sd15", "ip-adapter-faceid-portrait_sd15.bin", "sd15", None,
                "IP-Adapter-FaceID-Portrait for SD1.5 (up to 5 references, no LoRA)"),
        _faceid("faceid-portrait-sdxl", "ip-adapter-faceid-portrait_sdxl.bin", "sdxl", None,
                "IP-Adapter-FaceID-Portrait for SDXL (up to 5 references, no LoRA)"),
        ModelSpec(
            name="clip-vit-h",
            kind="image_encoder",
            description="CLIP ViT-H/14 image encoder for FaceID-Plus/PlusV2",
            repo_id="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
            files=(ModelFile("config.json"), ModelFile("model.safetensors", alternatives=("pytorch_model.bin",)),
                   ModelFile("preprocessor_config.json", required=False)),
        ),
        # ---------------------------------------------------------------- extra ControlNets
        ModelSpec(
            name="controlnet-pose-sdxl",
            kind="controlnet",
            description="OpenPose ControlNet for SDXL (controlnet_selection=pose)",
            repo_id="thibaud/controlnet-openpose-sdxl-1.0",
            files=(ModelFile("config.json"), ModelFile("diffusion_pytorch_model.safetensors", alternatives=("diffusion_pytorch_model.bin",))),
            family="sdxl",
            optional=True,
        ),
        ModelSpec(
            name="controlnet-canny-sdxl",
            kind="controlnet",
            description="Canny ControlNet for SDXL (controlnet_selection=canny)",
            repo_id="diffusers/controlnet-canny-sdxl-1.0",
            files=(ModelFile("config.json"), ModelFile("diffusion_pytorch_model.safetensors", alternatives=("diffusion_pytorch_model.bin",))),
            family="sdxl",
            optional=True,
        ),
        ModelSpec(
            name="controlnet-depth-sdxl",
            kind="controlnet",
            description="Depth ControlNet for SDXL, small (controlnet_selection=depth)",
            repo_id="diffusers/controlnet-depth-sdxl-1.0-small",
            files=(ModelFile("config.json"), ModelFile("diffusion_pytorch_model.safetensors", alternatives=("diffusion_pytorch_model.bin",))),
            family="sdxl",
            optional=True,
        ),
        ModelSpec(
            name="depth-estimator",
            kind="depth_estimator",
            description="Depth estimator for the depth control image (any transformers depth-estimation model)",
            repo_id="Intel/dpt-hybrid-midas",
            files=(ModelFile("config.json"), ModelFile("model.safetensors", alternatives=("pytorch_model.bin",)),
                   ModelFile("preprocessor_config.json")),
            optional=True,
        ),
        # ---------------------------------------------------------------- face packs
        ModelSpec(
            name="antelopev2",
            kind="face_pack",
            description="InsightFace antelopev2 pack (SCRFD-10G detector + glintr100 recognition); InstantID's space",
            files=tuple(ModelFile(n) for n in ("scrfd_10g_bnkps.onnx", "glintr100.onnx"))
            + tuple(ModelFile(n, required=False) for n in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx")),
            space="antelopev2",
            source="insightface",
        ),
        ModelSpec(
            name="buffalo_l",
            kind="face_pack",
            description="InsightFace buffalo_l pack (det_10g detector + w600k_r50 recognition); FaceID's space",
            files=tuple(ModelFile(n) for n in ("det_10g.onnx", "w600k_r50.onnx"))
            + tuple(ModelFile(n, required=False) for n in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx")),
            space="buffalo_l",
            source="insightface",
            url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        ),
        ModelSpec(
            name="dlib",
            kind="face_pack",
            description="dlib HOG/MMOD detector, 5-point shape predictor and ResNet face encoder (offline pack)",
            files=(
                ModelFile("shape_predictor_5_face_landmarks.dat"),
                ModelFile("dlib_face_recognition_resnet_model_v1.dat"),
                ModelFile("mmod_human_face_detector.dat", required=False),
                ModelFile("shape_predictor_68_face_landmarks.dat", required=False),
            ),
            space="dlib",
            source="package",
        ),
    ]
    return out


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Registry:
    """Model specs by name, with the method → model mapping."""

    specs: dict[str, ModelSpec] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __iter__(self):
        return iter(self.specs.values())

    def __len__(self) -> int:
        return len(self.specs)

    def get(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self.specs), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(close)}?)" if close else f"; known models: {', '.join(self.specs)}"
            raise InvalidInputError(f"unknown model '{name}'{hint}") from None

    def names(self) -> list[str]:
        return list(self.specs)

    def with_extra(self, specs: Iterable[ModelSpec]) -> "Registry":
        merged = dict(self.specs)
        merged.update({s.name: s for s in specs})
        return Registry(merged)


def default_registry() -> Registry:
    """The built-in registry (a new object each call; cheap)."""
    return Registry({s.name: s for s in _entries()})


#: Default base model, LCM-LoRA and extra ControlNets per family / name (which method needs what: faceanchor.methods).
BASE_FOR: dict[str, str] = {"sdxl": "sdxl-base", "sd15": "sd15-base"}
LCM_LORA_FOR: dict[str, str] = {"sdxl": "lcm-lora-sdxl", "sd15": "lcm-lora-sd15"}
CONTROLNET_FOR: dict[str, str] = {"pose": "controlnet-pose-sdxl", "canny": "controlnet-canny-sdxl", "depth": "controlnet-depth-sdxl"}

"""facexlib's ArcFace recognition (IR-SE50, 512-D, unit length): InfiniteYou's embedding space.

InfiniteYou (``pipelines/pipeline_infu_flux.py``, ``extract_arcface_bgr_embedding``) detects the
largest face with antelopev2's SCRFD, aligns a 112 px crop to the ArcFace template from its 5
keypoints (``face_align.norm_crop``) **on the BGR photo**, scales the pixels to ``[-1, 1]``
(``2 * x / 255 - 1``) and runs facexlib's ``init_recognition_model('arcface')``:
``Backbone(num_layers=50, drop_ratio=0.6, mode='ir_se')`` loaded from
``recognition_arcface_ir_se50.pth``, whose output is already L2-normalised. Those embeddings
are a space of their own (``facexlib``): not comparable with antelopev2's glintr100 or
buffalo_l's w600k, and InfiniteYou's projection was trained on them.

:class:`IRSEBackbone` has the same module tree as facexlib's (so the ``.pth`` loads with
``strict=True``): ``input_layer`` (Conv 3x3 → BN → PReLU), ``body`` (IR-SE bottlenecks:
``shortcut_layer`` = MaxPool(1, stride) or Conv1x1 + BN; ``res_layer`` = BN → Conv3x3 → PReLU →
Conv3x3(stride) → BN → SE(fc1, fc2, reduction 16)), ``output_layer`` (BN2d → Dropout → Flatten →
Linear(C·7·7, 512) → BN1d), then ``x / ‖x‖``. :func:`tiny_config` keeps the structure at a size
tests build in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceanchor.errors import CheckpointError, ModelNotFoundError
from faceanchor.face.align import norm_crop
from faceanchor.face.similarity import InSpace
from faceanchor.types import Face

SPACE = "facexlib"
WEIGHTS_NAME = "recognition_arcface_ir_se50.pth"


@dataclass(frozen=True)
class IRSEConfig:
    """Stages as ``(depth, units)`` (distinct depths), each stage's first unit strided 2 (IR-SE50: 3, 4, 14, 3 units)."""

    stages: tuple[tuple[int, int], ...] = ((64, 3), (128, 4), (256, 14), (512, 3))
    stem: int = 64
    embedding_dim: int = 512
    se_reduction: int = 16


def tiny_config() -> IRSEConfig:
    return IRSEConfig(stages=((8, 1), (16, 1), (24, 1), (32, 1)), stem=8, embedding_dim=512, se_reduction=4)


def _modules():
    import torch
    from torch import nn

    class SE(nn.Module):
        def __init__(self, channels: int, reduction: int):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
            self.relu = nn.ReLU()
            self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))

    class Unit(nn.Module):
        def __init__(self, cin: int, depth: int, stride: int, reduction: int):
            super().__init__()
            if cin == depth:
                self.shortcut_layer = nn.MaxPool2d(1, stride)
            else:
                self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
            self.res_layer = nn.Sequential(
                nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
                nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SE(depth, reduction),
            )

        def forward(self, x):
            return self.res_layer(x) + self.shortcut_layer(x)

    class IRSEBackbone(nn.Module):
        """(B, 3, 112, 112) in [-1, 1] → (B, embedding_dim) unit vectors."""

        def __init__(self, config: IRSEConfig | None = None):
            super().__init__()
            cfg = config or IRSEConfig()
            self.config = cfg
            self.input_layer = nn.Sequential(nn.Conv2d(3, cfg.stem, 3, 1, 1, bias=False), nn.BatchNorm2d(cfg.stem), nn.PReLU(cfg.stem))
            units, cin = [], cfg.stem
            for depth, n in cfg.stages:
                for i in range(n):
                    units.append(Unit(cin, depth, 2 if i == 0 else 1, cfg.se_reduction))
                    cin = depth
            self.body = nn.Sequential(*units)
            self.output_layer = nn.Sequential(
                nn.BatchNorm2d(cin), nn.Dropout(0.6), nn.Flatten(), nn.Linear(cin * 7 * 7, cfg.embedding_dim), nn.BatchNorm1d(cfg.embedding_dim),
            )

        def forward(self, x):
            x = self.output_layer(self.body(self.input_layer(x)))
            return x / torch.linalg.vector_norm(x, dim=1, keepdim=True)

    return IRSEBackbone


def build_backbone(config: IRSEConfig | None = None) -> Any:
    return _modules()(config)


def _config_from_state(state: dict[str, Any]) -> IRSEConfig:
    """Stage depths and unit counts read from the ``body.<i>`` weights."""
    try:
        stem = int(state["input_layer.0.weight"].shape[0])
        units = []
        i = 0
        while f"body.{i}.res_layer.1.weight" in state:
            units.append((int(state[f"body.{i}.res_layer.1.weight"].shape[0]), f"body.{i}.shortcut_layer.0.weight" in state))
            i += 1
        if not units:
            raise KeyError("body.0.res_layer.1.weight")
        depth0 = int(state["body.0.res_layer.1.weight"].shape[0])
        reduction = depth0 // int(state["body.0.res_layer.5.fc1.weight"].shape[0])
        emb = int(state["output_layer.3.weight"].shape[0])
    except (KeyError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"this is not facexlib's ArcFace ({WEIGHTS_NAME}): missing {exc}; expected keys 'input_layer.*', "
            "'body.<i>.res_layer.*', 'output_layer.*'"
        ) from None
    # facexlib's stages have distinct depths (64, 128, 256, 512), so runs of equal depth are the stages
    stages: list[list[int]] = []
    for depth, _ in units:
        if stages and stages[-1][0] == depth:
            stages[-1][1] += 1
        else:
            stages.append([depth, 1])
    return IRSEConfig(stages=tuple((d, n) for d, n in stages), stem=stem, embedding_dim=emb, se_reduction=reduction)


def load_backbone(source: str | Path | dict[str, Any], config: IRSEConfig | None = None, device: str = "cpu") -> Any:
    """facexlib's ArcFace from ``recognition_arcface_ir_se50.pth`` (a file, its folder, or a state dict)."""
    import torch

    if isinstance(source, dict):
        state, where = source, "the given state dict"
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / WEIGHTS_NAME
        if not path.is_file():
            raise ModelNotFoundError(
                f"facexlib ArcFace weights {path} not found; download {WEIGHTS_NAME} (facexlib v0.1.0 release) and put it "
                "in ~/.faceanchor/models/facexlib/"
            )
        where = str(path)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"could not read {path} ({type(exc).__name__}: {exc}); expected facexlib's {WEIGHTS_NAME}") from exc
    cfg = config or _config_from_state(state)
    model = build_backbone(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where} does not fit facexlib's IR-SE ArcFace ({cfg}): {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()


class FacexlibArcFaceEncoder(InSpace):
    """The encoder of the ``facexlib`` space: ``encode(rgb, face)`` → unit-length 512-D embedding."""

    input_size = 112

    def __init__(self, model_path: Path | None = None, space: str = SPACE, model: Any = None, device: str = "cpu"):
        self.model_path = Path(model_path) if model_path is not None else None
        self.space = space
        self.device = device
        self._model = model
        self.dim = int(model.config.embedding_dim) if model is not None else 512

    def prepare(self) -> "FacexlibArcFaceEncoder":
        if self._model is None:
            if self.model_path is None:
                raise ModelNotFoundError(f"no facexlib ArcFace weights given ({WEIGHTS_NAME})")
            self._model = load_backbone(self.model_path, device=self.device)
            self.dim = int(self._model.config.embedding_dim)
        return self

    def align(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 112² crop of the **BGR** photo the model sees (InfiniteYou aligns the cv2 image)."""
        bgr = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])
        return norm_crop(bgr, face.kps, self.input_size)

    def preprocess(self, crops: np.ndarray) -> Any:
        """(n, 112, 112, 3) uint8 BGR crops → (n, 3, 112, 112) float32 in [-1, 1]."""
        import torch

        x = np.asarray(crops)
        if x.ndim == 3:
            x = x[None]
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0
        return 2 * t - 1

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        import torch

        self.prepare()
        p = next(self._model.parameters())
        with torch.no_grad():
            out = self._model(self.preprocess(crops).to(device=p.device, dtype=p.dtype))
        return out.float().cpu().numpy().astype(np.float32)

    def encode(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        return self.encode_crops(self.align(rgb, face)[None])[0]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.compare(a, b).score


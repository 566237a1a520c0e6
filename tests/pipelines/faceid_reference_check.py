"""Compare faceanchor's FaceID pipelines with tencent-ailab/IP-Adapter's own classes, image for image.

Not collected by pytest (the official code is not vendored). Run it against a checkout of the
official repository::

    git clone https://github.com/tencent-ailab/IP-Adapter /tmp/IP-Adapter
    PYTHONPATH=src python tests/pipelines/faceid_reference_check.py /tmp/IP-Adapter

It exits 0 when every case is bit-identical (max |diff| == 0 over all pixels) and 1 otherwise;
tolerance is exactly 0, both sides run the same float32 CPU kernels.

What it does, per case (FaceID, Plus, PlusV2 on SD1.5; FaceID, PlusV2 on SDXL; Portrait on both):

* tiny seeded SD1.5/SDXL bases and a tiny CLIP vision model (224 px, the size of the official
  default ``CLIPImageProcessor``), the same for both sides;
* a random-weight checkpoint written by ``tests/official_layout.py`` (the official scripts' key
  naming, independent of faceanchor's ``save``), loaded by the official class from its path and
  by ``FaceIDPipeline.load``;
* the face as the official README feeds it: an InsightFace face record with a raw ArcFace-sized
  embedding (norm about 22), and ``faceid_embeds = torch.from_numpy(faces[0].normed_embedding)
  .unsqueeze(0)`` (unit length); Portrait: the README's ``torch.cat`` of five
  ``normed_embedding.unsqueeze(0).unsqueeze(0)``. faceanchor gets ``faceanchor.types.Face
  (embedding=raw).normed_embedding``, so its normalisation is checked too;
* identical prompts, seeds and steps; the official ``generate`` and ``FaceIDPipeline.generate``.

A control also runs faceanchor on the *raw* embedding and requires its output to differ, so a
normalisation mix-up would show.

Shims (only imports that the used classes never call): ``einops`` (imported by
``ip_adapter/resampler.py`` for classes these paths do not use) and
``diffusers.pipelines.controlnet.MultiControlNetModel`` (moved in diffusers 0.3x). The official
files are loaded from the checkout as they are; nothing of them is copied here.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def _load_official(root: Path):
    pkg_dir = root / "ip_adapter"
    if not (pkg_dir / "ip_adapter_faceid.py").is_file():
        raise SystemExit(f"{pkg_dir} has no ip_adapter_faceid.py; give the path of a tencent-ailab/IP-Adapter checkout")
    if "einops" not in sys.modules:
        try:
            import einops  # noqa: F401
        except ImportError:
            ein = types.ModuleType("einops")
            ein.rearrange = None
            layers = types.ModuleType("einops.layers")
            layers_torch = types.ModuleType("einops.layers.torch")
            layers_torch.Rearrange = None
            sys.modules.update({"einops": ein, "einops.layers": layers, "einops.layers.torch": layers_torch})
    import diffusers.pipelines.controlnet as dc

    if not hasattr(dc, "MultiControlNetModel"):
        dc.MultiControlNetModel = type("MultiControlNetModel", (), {})
    pkg = types.ModuleType("official_ip_adapter")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["official_ip_adapter"] = pkg

    def load(name):
        spec = importlib.util.spec_from_file_location(f"official_ip_adapter.{name}", pkg_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod

    return load("ip_adapter_faceid"), load("ip_adapter_faceid_separate")


class InsightFaceRecord(dict):
    """What ``insightface.app.FaceAnalysis.get`` returns per face, for the two fields used here
    (``insightface.app.common.Face``: ``normed_embedding = embedding / numpy.linalg.norm(embedding)``).
    The real class is used when insightface is installed."""

    def __getattr__(self, name):
        return self.get(name)

    @property
    def normed_embedding(self):
        return self.embedding / np.linalg.norm(self.embedding)


def _faces(n: int, seed: int = 0) -> list:
    try:
        from insightface.app.common import Face as record
    except ImportError:
        record = InsightFaceRecord
    rs = np.random.RandomState(seed)
    return [record(embedding=rs.randn(512).astype(np.float32)) for _ in range(n)]  # raw ArcFace-like, norm ~ 22


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "IP-Adapter").expanduser()
    R, RS = _load_official(root)
    with tempfile.TemporaryDirectory(prefix="faceid-ref-") as d:
        return _compare(R, RS, Path(d))


def _compare(R, RS, tmp: Path) -> int:
    import official_layout as O
    import tiny_faceid as T
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from faceanchor.pipelines.faceid import FaceIDPipeline
    from faceanchor.types import Face

    torch.manual_seed(0)
    enc = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=48, image_size=224, patch_size=32, num_hidden_layers=3, num_attention_heads=4,
                         intermediate_size=64, projection_dim=32)
    ).eval()
    enc.save_pretrained(tmp / "clip")
    crop = T.face_crop(size=224)  # stands for face_align.norm_crop(image, landmark=faces[0].kps, image_size=224)
    kw = dict(prompt="a photo of a person", negative_prompt="blurry", num_inference_steps=3, guidance_scale=5.0,
              width=64, height=64, output_type="np")

    def base(family):
        return T.build_sd15(tmp / "s") if family == "sd15" else T.build_sdxl(tmp / "x")

    def checkpoint(method, family, seed):
        ckpt = O.faceid_checkpoint(base(family).unet, method, id_dim=512, clip_dim=48, seed=seed, std=0.05)
        return O.write_bin(ckpt, tmp / f"{method}-{family}.bin")

    def ours(method, family, path, emb, n, **g):
        fp = FaceIDPipeline(base(family), image_encoder=enc)
        fp.load(method, path, required_space=None)
        gens = [torch.Generator().manual_seed(s) for s in range(n)]
        return np.stack(fp.generate(torch.as_tensor(emb), face_image=crop, num_images=n, generator=gens, **g, **kw))

    def official(cls, family, path, faceid_embeds, n, extra_init=(), init=None, **g):
        model = cls(base(family), *extra_init, str(path), "cpu", torch_dtype=torch.float32, **(init or {}))
        return np.stack(model.generate(faceid_embeds=faceid_embeds, num_samples=n, seed=list(range(n)), **g, **kw))

    clip = (str(tmp / "clip"),)
    cases = [
        ("faceid", "sd15", R.IPAdapterFaceID, (), None, dict(scale=0.8, lora_scale=1.0), dict(scale=0.8)),
        ("faceid-plus", "sd15", R.IPAdapterFaceIDPlus, clip, None, dict(scale=0.8, s_scale=1.5),
         dict(scale=0.8, s_scale=1.5, shortcut=False, face_image=crop)),
        ("faceid-plusv2", "sd15", R.IPAdapterFaceIDPlus, clip, None, dict(scale=0.8, s_scale=1.5),
         dict(scale=0.8, s_scale=1.5, shortcut=True, face_image=crop)),
        ("faceid", "sdxl", R.IPAdapterFaceIDXL, (), None, dict(scale=0.8), dict(scale=0.8)),
        ("faceid-plusv2", "sdxl", R.IPAdapterFaceIDPlusXL, clip, None, dict(scale=0.8, s_scale=0.5),
         dict(scale=0.8, s_scale=0.5, shortcut=True, face_image=crop)),
        ("faceid-portrait", "sd15", RS.IPAdapterFaceID, (), dict(num_tokens=16, n_cond=5), dict(scale=0.8), dict(scale=0.8)),
        ("faceid-portrait", "sdxl", RS.IPAdapterFaceIDXL, (), dict(num_tokens=16, n_cond=5), dict(scale=0.8), dict(scale=0.8)),
    ]
    failures = []
    for k, (method, family, cls, extra_init, init, our_kw, ref_kw) in enumerate(cases):
        portrait = method == "faceid-portrait"
        faces_per_photo = [_faces(1, seed=100 + i) for i in range(5 if portrait else 1)]  # one app.get() per photo
        if portrait:  # README: cat over photos of normed_embedding.unsqueeze(0).unsqueeze(0) -> (1, 5, 512)
            faceid_embeds = torch.cat(
                [torch.from_numpy(faces[0].normed_embedding).unsqueeze(0).unsqueeze(0) for faces in faces_per_photo], dim=1
            )
        else:  # README: torch.from_numpy(faces[0].normed_embedding).unsqueeze(0) -> (1, 512)
            faceid_embeds = torch.from_numpy(faces_per_photo[0][0].normed_embedding).unsqueeze(0)
        project_faces = [Face(bbox=[0, 0, 1, 1], kps=np.zeros((5, 2)), det_score=1.0, embedding=faces[0].embedding)
                         for faces in faces_per_photo]
        normed = np.stack([f.normed_embedding for f in project_faces])
        raw = np.stack([f.embedding for f in project_faces])
        n = 1 if portrait else 2
        path = checkpoint(method, family, seed=3 + k)
        a = ours(method, family, path, normed, n, **our_kw)
        b = official(cls, family, path, faceid_embeds, n, extra_init=extra_init, init=init, **ref_kw)
        control = ours(method, family, path, raw, n, **our_kw)
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        control_diff = float(np.abs(control - b).max()) if control.shape == b.shape else float("inf")
        norms = faceid_embeds.reshape(-1, 512).norm(dim=-1)
        ok = a.shape == b.shape and diff == 0.0 and control_diff > 0.0 and torch.allclose(norms, torch.ones_like(norms))
        print(f"{method:16s} {family}: shape {a.shape}, max|ours - official| = {diff:.3g}, raw-embedding control "
              f"max|diff| = {control_diff:.3g}, official input norm {float(norms.max()):.6f} "
              f"(raw {float(np.linalg.norm(raw, axis=-1).max()):.1f}) -> {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{method} {family}")
    if failures:
        print(f"FAIL: {len(failures)} of {len(cases)} cases differ from the official code: {', '.join(failures)}")
        return 1
    print(f"OK: all {len(cases)} cases bit-identical to the official code")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

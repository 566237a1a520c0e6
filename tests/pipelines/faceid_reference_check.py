"""Compare faceanchor's FaceID pipelines with the reference code, image for image.

Not a pytest module (the reference is not vendored). Usage::

    git clone https://github.com/tencent-ailab/IP-Adapter /path/IP-Adapter
    python tests/pipelines/faceid_reference_check.py /path/IP-Adapter

It builds tiny seeded SD1.5/SDXL bases and a tiny CLIP (224 px, as the reference's default
``CLIPImageProcessor``), writes a random-weight checkpoint per variant in the official layout,
runs the reference classes (``IPAdapterFaceID``, ``IPAdapterFaceIDPlus`` with and without
shortcut, ``IPAdapterFaceIDXL``, ``IPAdapterFaceIDPlusXL``, Portrait from
``ip_adapter_faceid_separate``) and ours with identical inputs and seeds, and prints the
largest pixel difference. ``einops`` and ``MultiControlNetModel`` (imported but unused by those
classes) are stubbed.
"""
import importlib.util
import sys, types, tempfile
from pathlib import Path
import numpy as np, torch

ref_root = Path(sys.argv[1] if len(sys.argv) > 1 else "IP-Adapter") / "ip_adapter"
sys.path.insert(0, str(Path(__file__).resolve().parent))
pkg = types.ModuleType("refip"); pkg.__path__ = [str(ref_root)]; sys.modules["refip"] = pkg


def _ref(name):
    spec = importlib.util.spec_from_file_location(f"refip.{name}", ref_root / f"{name}.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    return mod

# stubs for imports the reference needs but never uses in these classes
ein = types.ModuleType("einops"); ein.rearrange = None
einl = types.ModuleType("einops.layers"); eint = types.ModuleType("einops.layers.torch"); eint.Rearrange = None
sys.modules.update({"einops": ein, "einops.layers": einl, "einops.layers.torch": eint})
import diffusers.pipelines.controlnet as dc
dc.MultiControlNetModel = type("MultiControlNetModel", (), {})
import tiny_faceid as T
R = _ref("ip_adapter_faceid")
RS = _ref("ip_adapter_faceid_separate")
from faceanchor.adapters.faceid import FaceIDAdapter
from faceanchor.pipelines.faceid import FaceIDPipeline

tmp = Path(tempfile.mkdtemp())
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
torch.manual_seed(0)
enc = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=48, image_size=224, patch_size=32, num_hidden_layers=3,
      num_attention_heads=4, intermediate_size=64, projection_dim=32)).eval()
enc.save_pretrained(tmp / "clip")
crop = T.face_crop(size=224)
kw = dict(prompt="a photo of a person", negative_prompt="blurry", num_inference_steps=3, guidance_scale=5.0, width=64, height=64, output_type="np")

def ckpt(method, family):
    pipe = T.build_sd15(tmp / "s") if family == "sd15" else T.build_sdxl(tmp / "x")
    a = FaceIDAdapter.build(pipe.unet, method, id_dim=512, clip_dim=48)
    a.randomize(seed=3, std=0.05)
    return a.save(tmp / f"{method}-{family}.bin")

def ours(method, family, path, emb, n=2, **g):
    pipe = T.build_sd15(tmp / "s") if family == "sd15" else T.build_sdxl(tmp / "x")
    fp = FaceIDPipeline(pipe, image_encoder=enc)
    fp.load(method, path, required_space=None)
    return np.stack(fp.generate(emb, face_image=crop, num_images=n, generator=[torch.Generator().manual_seed(s) for s in range(n)], **g, **kw))

def ref(cls, family, path, emb, extra_init=(), n=2, **g):
    pipe = T.build_sd15(tmp / "s") if family == "sd15" else T.build_sdxl(tmp / "x")
    return np.stack(cls(pipe, *extra_init, str(path), "cpu", torch_dtype=torch.float32, **g.pop("init", {})).generate(
        faceid_embeds=emb, num_samples=n, seed=list(range(n)), **g, **{k: v for k, v in kw.items()}))

e1 = T.embedding(); e5 = T.embedding(n=5)
cases = [
  ("faceid", "sd15", R.IPAdapterFaceID, (), dict(scale=0.8, lora_scale=1.0), dict(scale=0.8)),
  ("faceid-plus", "sd15", R.IPAdapterFaceIDPlus, (str(tmp/"clip"),), dict(scale=0.8, s_scale=1.5), dict(scale=0.8, s_scale=1.5, shortcut=False, face_image=crop)),
  ("faceid-plusv2", "sd15", R.IPAdapterFaceIDPlus, (str(tmp/"clip"),), dict(scale=0.8, s_scale=1.5), dict(scale=0.8, s_scale=1.5, shortcut=True, face_image=crop)),
  ("faceid", "sdxl", R.IPAdapterFaceIDXL, (), dict(scale=0.8), dict(scale=0.8)),
  ("faceid-plusv2", "sdxl", R.IPAdapterFaceIDPlusXL, (str(tmp/"clip"),), dict(scale=0.8, s_scale=0.5), dict(scale=0.8, s_scale=0.5, shortcut=True, face_image=crop)),
  ("faceid-portrait", "sd15", RS.IPAdapterFaceID, (), dict(scale=0.8), dict(scale=0.8, init=dict(num_tokens=16, n_cond=5))),
  ("faceid-portrait", "sdxl", RS.IPAdapterFaceIDXL, (), dict(scale=0.8), dict(scale=0.8, init=dict(num_tokens=16, n_cond=5))),
]
for method, fam, cls, init, og, rg in cases:
    p = ckpt(method, fam)
    emb = e5 if method == "faceid-portrait" else e1
    n = 1 if method == "faceid-portrait" else 2
    a = ours(method, fam, p, emb, n=n, **og)
    remb = emb[None] if method == "faceid-portrait" else emb
    b = ref(cls, fam, p, remb, extra_init=init, n=n, **rg)
    print(method, fam, a.shape, b.shape, "max|diff| =", float(np.abs(a - b).max()), "mean |first - last image| =", float(np.abs(a[0] - a[-1]).mean()))

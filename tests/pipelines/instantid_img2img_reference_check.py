"""Compare faceanchor's InstantID image-to-image with the official img2img pipeline, image for image.

Not a pytest module (the official code is not vendored). Usage, from the repository root::

    git clone https://github.com/instantX-research/InstantID /path/InstantID
    PYTHONPATH=src python tests/pipelines/instantid_img2img_reference_check.py /path/InstantID

It loads ``pipeline_stable_diffusion_xl_instantid_img2img.py`` from that checkout, builds two
identical sets of tiny seeded SDXL components (``tests/tiny_sdxl.py``), writes one random
``ip-adapter.bin`` the official way (``image_proj`` = the official file's own ``Resampler``
at its hard-coded size, seeded; ``ip_adapter`` = ``<i>.to_k_ip/to_v_ip.weight`` over
``unet.attn_processors`` in order), loads it with the official ``load_ip_adapter_instantid``
on one set and with ours on the other, and runs both with the same photo, keypoint image,
embedding and seed at several strengths (1.0 included: the official pipeline noises the photo
at the first timestep there), one image per call: the official pipeline crashes for
``num_images_per_prompt > 1`` (its time ids are repeated twice), so per-image generators are
checked against diffusers' ``prepare_latents`` in ``test_instantid_img2img.py`` instead. Exits
non-zero when any image differs by more than ``TOL`` (float, in [0, 1]); the count of 8-bit
pixels that differ is printed too (float noise of ~1e-6 can flip a value sitting on a rounding
boundary).

Only one shim: diffusers moved ``MultiControlNetModel`` out of
``diffusers.pipelines.controlnet.multicontrolnet`` (the official file's import); the old
module name is pointed at the new one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch

TOL = 1e-5
PROMPT = "a photo of a man"
SIZE = 64

root = Path(sys.argv[1] if len(sys.argv) > 1 else "InstantID")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "diffusers.pipelines.controlnet.multicontrolnet" not in sys.modules:
    try:
        importlib.import_module("diffusers.pipelines.controlnet.multicontrolnet")
    except ModuleNotFoundError:
        sys.modules["diffusers.pipelines.controlnet.multicontrolnet"] = importlib.import_module(
            "diffusers.models.controlnets.multicontrolnet"
        )

spec = importlib.util.spec_from_file_location("official_img2img", root / "pipeline_stable_diffusion_xl_instantid_img2img.py")
official = importlib.util.module_from_spec(spec)
spec.loader.exec_module(official)

from tiny_sdxl import CROSS_DIM, EMBED_DIM, tiny_components  # noqa: E402

from faceanchor.pipelines.instantid_img2img import InstantIDImg2ImgPipeline  # noqa: E402
from faceanchor.pipelines.instantid_sdxl import InstantIDSDXLPipeline  # noqa: E402


def official_checkpoint(unet, path: Path) -> Path:
    torch.manual_seed(5)
    proj = official.Resampler(dim=1280, depth=4, dim_head=64, heads=20, num_queries=16, embedding_dim=EMBED_DIM,
                              output_dim=CROSS_DIM, ff_mult=4)
    g = torch.Generator().manual_seed(6)
    ip = {}
    for i, name in enumerate(unet.attn_processors.keys()):
        if name.endswith("attn1.processor"):
            continue
        attn = unet.get_submodule(name[: -len(".processor")])
        hidden, cross = attn.to_q.out_features, attn.to_k.in_features
        ip[f"{i}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
        ip[f"{i}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
    torch.save({"image_proj": proj.state_dict(), "ip_adapter": ip}, path)
    return path


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    theirs_c, ours_c = tiny_components(tmp / "tok_a"), tiny_components(tmp / "tok_b")
    ckpt = official_checkpoint(theirs_c["unet"], tmp / "ip-adapter.bin")

    theirs = official.StableDiffusionXLInstantIDImg2ImgPipeline(**theirs_c, add_watermarker=False)
    theirs.set_progress_bar_config(disable=True)
    theirs.load_ip_adapter_instantid(str(ckpt), image_emb_dim=EMBED_DIM, num_tokens=16, scale=0.8)
    base = InstantIDSDXLPipeline(**ours_c)
    base.load_instantid_adapter(str(ckpt), scale=0.8, dim_head=64)
    ours = InstantIDImg2ImgPipeline.from_instantid(base)

    rs = np.random.RandomState(0)
    kps = PIL.Image.fromarray((rs.rand(SIZE, SIZE, 3) * 255).astype(np.uint8))
    emb = torch.from_numpy(rs.randn(EMBED_DIM).astype(np.float32)) * 3
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    photo = PIL.Image.fromarray(np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8))

    failures = 0
    for strength, seeds in ((0.3, [0]), (0.5, [1]), (0.75, [2]), (1.0, [3]), (1.0, [4])):
        n = len(seeds)
        kw = dict(strength=strength, num_inference_steps=4, guidance_scale=5.0, output_type="np")
        a = theirs(prompt=PROMPT, image=photo, control_image=kps, image_embeds=emb, controlnet_conditioning_scale=0.8,
                   num_images_per_prompt=n, generator=[torch.Generator().manual_seed(s) for s in seeds], **kw).images
        b = ours(PROMPT, emb, kps, photo, identity_scale=0.8, adapter_scale=0.8, num_images=n,
                 generator=[torch.Generator().manual_seed(s) for s in seeds], **kw).images
        diff = float(np.abs(np.asarray(a) - np.asarray(b)).max())
        px = int((np.round(np.asarray(a) * 255) != np.round(np.asarray(b) * 255)).any(-1).sum())
        ok = diff <= TOL
        failures += not ok
        print(f"strength {strength} seeds {seeds}: max |diff| {diff:.2e}, 8-bit pixels differing {px} of {n * SIZE * SIZE}"
              f" -> {'ok' if ok else 'DIFFERENT'}")
    if failures:
        print(f"{failures} case(s) differ from the official img2img pipeline")
        return 1
    print("faceanchor img2img equals the official InstantID img2img pipeline")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Compare faceanchor's InstantID SDXL pipeline with instantX-research/InstantID's own, image for image.

Not collected by pytest (the official code is not vendored). Run it against a checkout of the
official repository::

    git clone https://github.com/instantX-research/InstantID /tmp/InstantID
    PYTHONPATH=src python tests/pipelines/instantid_reference_check.py /tmp/InstantID

It exits 0 when every case is bit-identical (max |diff| == 0 over all pixels, and the keypoint
image and face mask equal pixel for pixel) and 1 otherwise; tolerance is exactly 0, both sides
run the same float32 CPU kernels.

Per case, both sides get identical tiny seeded SDXL components (UNet, IdentityNet-shaped
ControlNet, VAE, text encoders, Euler scheduler) and:

* the adapter file ``ip-adapter.bin`` written by ``tests/official_layout.py`` (the official key
  naming, independent of faceanchor's code) with the released Resampler sizes
  (dim 1280, depth 4, 20 heads of 64, 16 queries, 512-D embedding), loaded by the official
  ``load_ip_adapter_instantid(path)`` and by ``InstantIDSDXLPipeline.load_instantid_adapter(path)``;
* the face as the official README uses it: an InsightFace face record with a raw antelopev2-sized
  embedding, ``face_emb = face_info['embedding']`` (not normalised), ``face_kps =
  draw_kps(face_image, face_info['kps'])`` with the official ``draw_kps``; faceanchor gets
  ``faceanchor.types.Face(...).embedding`` and its own ``draw_kps`` / ``face_box_mask``;
* the same prompts, seeds, steps, IdentityNet and adapter scales.

Cases: text-to-image on the suite's tiny components (``tests/tiny_sdxl.py``, two blocks, VAE
factor 2) with a negative prompt and two images; text-to-image on a three-block UNet/ControlNet
with a factor-8 VAE (the residual layout of real SDXL) with the zero negative prompt; and
``pipeline_stable_diffusion_xl_instantid_full.py`` with ``control_mask`` (``enhance_face_region``,
mask from the face box as ``infer_full.py``) against faceanchor's ``face_mask``, on the
three-block components (the official full pipeline hard-codes SDXL's nine residual scales). The
full pipeline encodes prompts with its long-prompt weighting; both sides are given the same
``prompt_embeds`` there, for one image (given embeddings are not repeated per image by the
official full pipeline, so two images fail there with a batch mismatch). A control runs faceanchor on the unit-normalised embedding and requires
its output to differ, so a normalisation mix-up would show; the masked case also requires the
unmasked output to differ, so the mask is really exercised.

Shim (an import that moved, nothing the pipelines call differently):
``diffusers.pipelines.controlnet.multicontrolnet`` (diffusers 0.3x+ keeps ``MultiControlNetModel``
in ``diffusers.models.controlnets.multicontrolnet``); the real class is put there.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

SIZE = 64


def _load_official(root: Path):
    if not (root / "pipeline_stable_diffusion_xl_instantid.py").is_file():
        raise SystemExit(f"{root} has no pipeline_stable_diffusion_xl_instantid.py; give the path of an InstantID checkout")
    try:
        import diffusers.pipelines.controlnet.multicontrolnet  # noqa: F401
    except ImportError:
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        shim = types.ModuleType("diffusers.pipelines.controlnet.multicontrolnet")
        shim.MultiControlNetModel = MultiControlNetModel
        sys.modules[shim.__name__] = shim
    sys.path.insert(0, str(root))  # the official modules import `ip_adapter.*` from the checkout root
    import pipeline_stable_diffusion_xl_instantid as t2i
    import pipeline_stable_diffusion_xl_instantid_full as full

    return t2i, full


class InsightFaceRecord(dict):
    """What ``insightface.app.FaceAnalysis.get`` returns per face (``insightface.app.common.Face``,
    a dict with attribute access); used when insightface is not installed."""

    def __getattr__(self, name):
        return self.get(name)

    @property
    def normed_embedding(self):
        return self.embedding / np.linalg.norm(self.embedding)


def _face(seed: int = 0):
    """A detected face on a ``SIZE`` x ``SIZE`` photo: fractional box and keypoints, raw embedding."""
    try:
        from insightface.app.common import Face as record
    except ImportError:
        record = InsightFaceRecord
    rs = np.random.RandomState(seed)
    kps = np.array([[22.3, 25.6], [41.7, 24.9], [32.4, 35.2], [24.8, 45.1], [39.6, 44.7]], dtype=np.float32)
    bbox = np.array([13.6, 11.2, 50.8, 55.9], dtype=np.float32)
    return record(bbox=bbox, kps=kps, det_score=0.9, embedding=rs.randn(512).astype(np.float32))  # norm ~ 22


def _three_block_components(tok_dir: Path) -> dict:
    """SDXL-shaped tiny components whose residuals sit at 1/8, 1/16, 1/32 of the image (as SDXL's)."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from tiny_sdxl import CROSS_DIM, tiny_components

    comps = tiny_components(tok_dir)  # text encoders, tokenizers, scheduler
    blocks = dict(
        block_out_channels=(32, 64, 64), layers_per_block=2, in_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        attention_head_dim=(2, 4, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1, 2), projection_class_embeddings_input_dim=80, cross_attention_dim=CROSS_DIM,
    )
    torch.manual_seed(10)
    comps["unet"] = UNet2DConditionModel(
        **blocks, sample_size=8, out_channels=4, up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    ).eval()
    torch.manual_seed(11)
    net = ControlNetModel(**blocks, conditioning_embedding_out_channels=(16, 32, 96, 256)).eval()
    with torch.no_grad():  # random zero-convolutions: non-zero residuals, as a trained IdentityNet's
        for conv in list(net.controlnet_down_blocks) + [net.controlnet_mid_block]:
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.1)
    comps["controlnet"] = net
    torch.manual_seed(12)
    comps["vae"] = AutoencoderKL(
        block_out_channels=[32, 32, 32, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    ).eval()
    return comps


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "InstantID").expanduser()
    t2i, full = _load_official(root)
    with tempfile.TemporaryDirectory(prefix="instantid-ref-") as d:
        return _compare(t2i, full, Path(d))


def _compare(t2i, full, tmp: Path) -> int:
    import official_layout as O
    from PIL import Image
    from tiny_sdxl import tiny_components

    from faceanchor.face.kps import draw_kps
    from faceanchor.pipelines.instantid_sdxl import InstantIDSDXLPipeline, face_box_mask
    from faceanchor.types import Face

    builders = {"suite": lambda: tiny_components(tmp / "tok"), "3-block": lambda: _three_block_components(tmp / "tok3")}
    paths = {}
    for name, build in builders.items():
        ckpt = O.instantid_checkpoint(build()["unet"], embedding_dim=512, seed=7, std=0.05)  # official Resampler sizes
        paths[name] = O.write_bin(ckpt, tmp / f"ip-adapter-{name}.bin")

    face_image = Image.new("RGB", (SIZE, SIZE))
    face_info = _face()
    ours_face = Face(bbox=face_info["bbox"], kps=face_info["kps"], det_score=face_info["det_score"], embedding=face_info["embedding"],
                     space="antelopev2")
    # official README / infer_full.py inputs
    face_emb = face_info["embedding"]
    face_kps = t2i.draw_kps(face_image, face_info["kps"])
    control_mask = np.zeros([SIZE, SIZE, 3])
    x1, y1, x2, y2 = (int(v) for v in face_info["bbox"])
    control_mask[y1:y2, x1:x2] = 255
    control_mask = Image.fromarray(control_mask.astype(np.uint8))
    # faceanchor's
    our_kps = draw_kps(face_image, ours_face.kps)
    our_mask = face_box_mask(ours_face.bbox, SIZE, SIZE)

    failures = []
    kps_same = np.array_equal(np.asarray(face_kps), np.asarray(our_kps))
    mask_same = np.array_equal(np.asarray(control_mask), our_mask)
    print(f"draw_kps: {'equal' if kps_same else 'DIFFERENT'}; face mask: {'equal' if mask_same else 'DIFFERENT'} "
          f"(embedding norm {float(np.linalg.norm(face_emb)):.1f})")
    if not kps_same:
        failures.append("draw_kps")
    if not mask_same:
        failures.append("face mask")

    common = dict(num_inference_steps=3, guidance_scale=5.0, output_type="np")

    def ours(components, path, embedding, n, negative, mask=None, embeds=None):
        pipe = InstantIDSDXLPipeline(**components)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_instantid_adapter(path, scale=0.5)
        text = dict(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], pooled_prompt_embeds=embeds[2],
                    negative_pooled_prompt_embeds=embeds[3]) if embeds else dict(prompt="a photo of a man", negative_prompt=negative)
        out = pipe(face_embedding=embedding, kps_image=our_kps, num_images=n, face_mask=mask, identity_scale=0.8, adapter_scale=0.8,
                   generator=[torch.Generator().manual_seed(s) for s in range(n)], **text, **common)
        return np.asarray(out.images)

    def official(module, components, path, n, negative, mask=None, embeds=None):
        pipe = module.StableDiffusionXLInstantIDPipeline(**components, add_watermarker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_ip_adapter_instantid(str(path))
        text = dict(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], pooled_prompt_embeds=embeds[2],
                    negative_pooled_prompt_embeds=embeds[3]) if embeds else dict(prompt="a photo of a man", negative_prompt=negative)
        extra = {"control_mask": mask} if mask is not None else {}
        out = pipe(image_embeds=face_emb, image=face_kps, controlnet_conditioning_scale=0.8, ip_adapter_scale=0.8,
                   num_images_per_prompt=n, generator=[torch.Generator().manual_seed(s) for s in range(n)], **text, **extra, **common)
        return np.asarray(out.images)

    def text_embeds(components):
        from diffusers import StableDiffusionXLPipeline

        plain = StableDiffusionXLPipeline(**{k: v for k, v in components.items() if k != "controlnet"}, add_watermarker=False)
        with torch.no_grad():
            return plain.encode_prompt("a photo of a man", negative_prompt="blurry, ugly", do_classifier_free_guidance=True)

    cases = [
        ("text-to-image, suite components, negative prompt", t2i, "suite", 2, "blurry", False),
        ("text-to-image, 3-block components, zero negative", t2i, "3-block", 1, None, False),
        # one image: the full pipeline returns given prompt_embeds without repeating them per image
        ("full pipeline + control_mask, 3-block components", full, "3-block", 1, None, True),
    ]
    for title, module, name, n, negative, masked in cases:
        embeds = text_embeds(builders[name]()) if masked else None
        a = ours(builders[name](), paths[name], ours_face.embedding, n, negative, mask=our_mask if masked else None, embeds=embeds)
        b = official(module, builders[name](), paths[name], n, negative, mask=control_mask if masked else None, embeds=embeds)
        control = ours(builders[name](), paths[name], ours_face.normed_embedding, n, negative, mask=our_mask if masked else None, embeds=embeds)
        diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
        control_diff = float(np.abs(control - b).max()) if control.shape == b.shape else float("inf")
        differing = int((np.abs(a - b) > 0).any(axis=-1).sum()) if a.shape == b.shape else -1
        ok = a.shape == b.shape and diff == 0.0 and control_diff > 0.0
        note = ""
        if masked:  # the mask must matter, or this case would not test it
            unmasked = ours(builders[name](), paths[name], ours_face.embedding, n, negative, embeds=embeds)
            mask_effect = float(np.abs(unmasked - b).max())
            ok = ok and mask_effect > 0.0
            note = f", unmasked control max|diff| = {mask_effect:.3g}"
        print(f"{title}: shape {a.shape}, max|ours - official| = {diff:.3g} ({differing} of {a.shape[0] * a.shape[1] * a.shape[2]} "
              f"pixels differ), normed-embedding control max|diff| = {control_diff:.3g}{note} -> {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(title)
    if failures:
        print(f"FAIL: {', '.join(failures)}")
        return 1
    print(f"OK: all {len(cases)} cases bit-identical to the official InstantID pipelines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

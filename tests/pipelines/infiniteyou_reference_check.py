"""Compare faceanchor's InfiniteYou FLUX pipeline with bytedance/InfiniteYou's own, image for image.

Not collected by pytest (the official code is not vendored). Run it against a checkout of the
official repository::

    git clone https://github.com/bytedance/InfiniteYou /tmp/InfiniteYou
    PYTHONPATH=src python tests/pipelines/infiniteyou_reference_check.py /tmp/InfiniteYou

It prints max |Δ| per case (images in 0–1) and exits 0 when every case is within 1e-3 and the
control images equal pixel for pixel, 1 otherwise.

Both sides get the same tiny seeded FLUX parts (``faceanchor.models.flux``: transformer,
InfuseNet-shaped ``FluxControlNetModel``, VAE, CLIP + T5, flow-match scheduler) and:

* the projection file ``image_proj_model.bin`` written by ``tests/official_layout.py`` (the official
  key naming, independent of faceanchor's code) with 8 queries and 64-wide heads, loaded into the
  official ``pipelines/resampler.py`` ``Resampler`` (``load_state_dict(sd['image_proj'])``) and by
  ``faceanchor.adapters.infiniteyou.load_projection``; the same unit-length 512-D embedding,
  reshaped ``(1, -1, 512)`` as ``InfUFluxPipeline.__call__`` does;
* the control image as ``InfUFluxPipeline.__call__`` makes it: the official ``resize_and_pad_image``
  of the pose photo, the official ``draw_kps`` at the face's keypoints on it (detection is not
  compared: both sides get the same keypoints), or black; faceanchor makes its own with
  ``resize_and_pad`` / ``control_image``, compared pixel for pixel first;
* the same prompt, initial latents and the same RNG state for the control image's VAE sample (the
  official pipeline draws it from the global RNG after ``seed_everything``, faceanchor from the
  generator it is given: ``torch.default_generator`` here).

Cases: default (black control), pose control image, InfuseNet window start/end 0.34/0.67, scale 0
(also compared with diffusers ``FluxPipeline``: plain FLUX), batch of 2 (``num_images_per_prompt=2``,
the identity tokens repeated per image), a LoRA loaded by the official ``InfUFluxPipeline.load_loras``
(weight 0.8), and no LoRA again (must equal the default case exactly).

Shims (imports only, nothing the pipelines call): ``diffusers.models.controlnet_flux`` (moved to
``diffusers.models.controlnets.controlnet_flux``); ``facexlib.recognition`` and ``optimum.quanto``
when not installed (``pipeline_infu_flux.py`` imports them at the top; the two helpers used here
do not touch them).
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
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]

W, H, STEPS, TOL = 64, 64, 3, 1e-3
PROMPT = "A man, portrait, cinematic"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _load_official(root: Path):
    p = root / "pipelines"
    if not (p / "pipeline_flux_infusenet.py").is_file():
        raise SystemExit(f"{root} has no pipelines/pipeline_flux_infusenet.py; give the path of an InfiniteYou checkout")
    import diffusers.models.controlnets.controlnet_flux as cf

    sys.modules.setdefault("diffusers.models.controlnet_flux", cf)
    for name, attrs in (("facexlib", {}), ("facexlib.recognition", {"init_recognition_model": None}),
                        ("optimum", {}), ("optimum.quanto", {"freeze": None, "qint8": None, "quantize": None})):
        try:
            importlib.import_module(name)
        except ImportError:
            m = types.ModuleType(name)
            m.__dict__.update(attrs)
            sys.modules[name] = m
    pkg = types.ModuleType("infu_pipelines")
    pkg.__path__ = [str(p)]
    sys.modules["infu_pipelines"] = pkg
    resampler = _module("infu_pipelines.resampler", p / "resampler.py")
    infusenet = _module("infu_pipelines.pipeline_flux_infusenet", p / "pipeline_flux_infusenet.py")
    infu = _module("infu_pipelines.pipeline_infu_flux", p / "pipeline_infu_flux.py")
    return resampler, infusenet, infu


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "InfiniteYou").expanduser()
    official = _load_official(root)
    with tempfile.TemporaryDirectory(prefix="infiniteyou-ref-") as d:
        return _compare(*official, Path(d))


def _compare(resampler, infusenet, infu, tmp: Path) -> int:
    from diffusers import FluxPipeline
    from PIL import Image

    import official_layout as O
    from faceanchor.adapters.infiniteyou import load_projection
    from faceanchor.models import flux
    from faceanchor.pipelines.infiniteyou_flux import InfiniteYouFluxPipeline, control_image, resize_and_pad

    torch.set_num_threads(1)
    comps = flux.build_components("tiny", seed=0)
    net = flux.build_infusenet("tiny", seed=0)
    width = net.config.joint_attention_dim
    cfg = dict(dim=64, depth=2, dim_head=64, heads=2, num_queries=8, embedding_dim=512, output_dim=width, ff_mult=4)
    path = O.write_bin(O.infiniteyou_projection_checkpoint(**cfg), tmp / "aes_stage2" / "image_proj_model.bin")

    off_proj = resampler.Resampler(**cfg)
    off_proj.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["image_proj"])
    off_proj.eval()
    emb = torch.nn.functional.normalize(torch.randn(512, generator=torch.Generator().manual_seed(1)), dim=0)
    with torch.no_grad():
        off_ids = off_proj(emb.clone().unsqueeze(0).reshape([1, -1, 512]))
    ours = InfiniteYouFluxPipeline(FluxPipeline(**comps), net, load_projection(path.parent, output_dim=width))
    ours.base.set_progress_bar_config(disable=True)
    ids = ours.identity_tokens(emb)
    failures = 0
    print(f"identity tokens: max |Δ| = {float((ids - off_ids).abs().max()):.2e}")
    if float((ids - off_ids).abs().max()) > 1e-5:
        failures += 1

    off_pipe = infusenet.FluxInfuseNetPipeline(**comps, controlnet=net)
    off_pipe.set_progress_bar_config(disable=True)

    pose = Image.fromarray(np.random.default_rng(4).integers(0, 255, (90, 70, 3), dtype=np.uint8))
    kps = np.array([[22.3, 25.6], [41.7, 24.9], [32.4, 35.2], [24.8, 45.1], [39.6, 44.7]], dtype=np.float32)
    off_padded = infu.resize_and_pad_image(pose, (W, H))
    off_control = infu.draw_kps(off_padded, kps)
    same_pad = np.array_equal(np.asarray(off_padded), np.asarray(resize_and_pad(pose, (W, H))))
    same_kps = np.array_equal(np.asarray(off_control), np.asarray(control_image(W, H, kps)))
    print(f"resize_and_pad equal: {same_pad}; draw_kps control image equal: {same_kps}")
    failures += (not same_pad) + (not same_kps)
    black = Image.fromarray(np.zeros([H, W, 3]).astype(np.uint8))

    cases = [
        ("default", dict(control=black)),
        ("pose control image", dict(control=off_control)),
        ("window 0.34-0.67", dict(control=black, start=0.34, end=0.67)),
        ("scale 0", dict(control=black, scale=0.0)),
        ("batch of 2", dict(control=black, n=2)),
    ]
    for name, c in cases:
        n, scale, start, end = c.get("n", 1), c.get("scale", 1.0), c.get("start", 0.0), c.get("end", 1.0)
        latents = torch.randn(n, (H // 4) * (W // 4), 16, generator=torch.Generator().manual_seed(3))
        torch.manual_seed(7)
        want = off_pipe(prompt=PROMPT, controlnet_prompt_embeds=off_ids.repeat(n, 1, 1), control_image=c["control"], guidance_scale=3.5,
                        num_inference_steps=STEPS, controlnet_guidance_scale=1.0, controlnet_conditioning_scale=scale,
                        control_guidance_start=start, control_guidance_end=end, height=H, width=W, num_images_per_prompt=n,
                        latents=latents.clone(), max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH, output_type="np").images
        torch.manual_seed(7)
        got = ours.generate(ids, prompt=PROMPT, control=control_image(W, H, kps) if c["control"] is off_control else None,
                            width=W, height=H, num_images=n, num_inference_steps=STEPS, guidance_scale=3.5, conditioning_scale=scale,
                            guidance_start=start, guidance_end=end, latents=latents.clone(), control_generator=torch.default_generator,
                            max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH, output_type="np")
        d = float(np.abs(got - want).max())
        ok = got.shape == want.shape and d <= TOL
        if name == "default":
            first = got
        moved = float(np.abs(got[:1] - first).max())  # each case must change the image (so it is really exercised)
        ok = ok and (name == "default" or name == "batch of 2" or moved > 1e-3)
        print(f"{name:22s} max |Δ| = {d:.2e} {'ok' if ok else 'FAIL'} (vs default case: {moved:.2e})")
        failures += not ok
        if name == "scale 0":
            plain = FluxPipeline(**comps)
            plain.set_progress_bar_config(disable=True)
            pf = plain(prompt=PROMPT, height=H, width=W, num_inference_steps=STEPS, guidance_scale=3.5, latents=latents.clone(),
                       max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH, output_type="np").images
            d0 = float(np.abs(got - pf).max())
            print(f"{'scale 0 vs FluxPipeline':22s} max |Δ| = {d0:.2e} {'ok' if d0 <= TOL else 'FAIL'}")
            failures += d0 > TOL
        if name == "default":
            base_d = float(np.abs(got - want).max())
            other = ours.generate(ours.identity_tokens(-emb), prompt=PROMPT, width=W, height=H, num_inference_steps=STEPS,
                                  latents=latents.clone(), control_generator=torch.Generator().manual_seed(0),
                                  max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH, output_type="np")
            dd = float(np.abs(other - want).max())
            print(f"{'control: other identity':22s} max |Δ| = {dd:.2e} {'ok (differs)' if dd > 10 * max(base_d, 1e-6) else 'FAIL (same)'}")
            failures += dd <= 10 * max(base_d, 1e-6)
    failures += _lora_case(infusenet, infu, ours, ids, off_ids, first, tmp)
    print("all cases within tolerance" if not failures else f"{failures} failure(s)")
    return 0 if not failures else 1


def _lora_case(infusenet, infu, ours, ids, off_ids, plain_image, tmp: Path) -> int:
    """A LoRA as the official ``InfUFluxPipeline.load_loras`` loads it (its own code, called on the
    official ``FluxInfuseNetPipeline`` of separate, equal tiny parts) against ``set_loras``; then no LoRA
    again, which must give the default case's image."""
    from PIL import Image
    from safetensors.torch import save_file

    from faceanchor.models import flux
    from faceanchor.pipelines.loras import LoraFile

    g = torch.Generator().manual_seed(11)
    sd = {}
    for name, (i, o) in {"transformer_blocks.0.attn.to_q": (32, 32), "transformer_blocks.0.attn.to_add_out": (32, 32),
                         "single_transformer_blocks.0.proj_out": (160, 32)}.items():
        sd[f"transformer.{name}.lora_A.weight"] = torch.randn(4, i, generator=g) * 0.5
        sd[f"transformer.{name}.lora_B.weight"] = torch.randn(o, 4, generator=g) * 0.5
    path = tmp / "flux_realism_lora.safetensors"
    save_file(sd, str(path))
    off_pipe = infusenet.FluxInfuseNetPipeline(**flux.build_components("tiny", seed=0), controlnet=flux.build_infusenet("tiny", seed=0))
    off_pipe.set_progress_bar_config(disable=True)
    infu.InfUFluxPipeline.load_loras(types.SimpleNamespace(pipe=off_pipe), [[str(path), "realism", 0.8]])
    latents = torch.randn(1, (H // 4) * (W // 4), 16, generator=torch.Generator().manual_seed(3))
    black = Image.fromarray(np.zeros([H, W, 3]).astype(np.uint8))
    torch.manual_seed(7)
    want = off_pipe(prompt=PROMPT, controlnet_prompt_embeds=off_ids, control_image=black, guidance_scale=3.5, num_inference_steps=STEPS,
                    controlnet_guidance_scale=1.0, controlnet_conditioning_scale=1.0, height=H, width=W, latents=latents.clone(),
                    max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH, output_type="np").images
    kw = dict(prompt=PROMPT, width=W, height=H, num_inference_steps=STEPS, guidance_scale=3.5, max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH,
              output_type="np")
    ours.set_loras([LoraFile(path, 0.8, "realism")])
    torch.manual_seed(7)
    got = ours.generate(ids, latents=latents.clone(), control_generator=torch.default_generator, **kw)
    d, moved = float(np.abs(got - want).max()), float(np.abs(got - plain_image).max())
    ok = d <= TOL and moved > 1e-3
    print(f"{'LoRA (load_loras)':22s} max |Δ| = {d:.2e} {'ok' if ok else 'FAIL'} (vs default case: {moved:.2e})")
    ours.set_loras([])
    torch.manual_seed(7)
    back = ours.generate(ids, latents=latents.clone(), control_generator=torch.default_generator, **kw)
    d0 = float(np.abs(back - plain_image).max())
    print(f"{'no LoRA again':22s} max |Δ| = {d0:.2e} vs the default case {'ok' if d0 == 0.0 else 'FAIL'}")
    return (not ok) + (d0 != 0.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

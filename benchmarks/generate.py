"""Generation benchmark with dummy (full-size, random) or tiny weights.

For each method it prints per-stage times, denoising steps per second and peak memory, and
the ratio of each method's steps/s against the plain base pipeline (no adapter, no
ControlNet) measured in the same run; for the FaceID family also the time to switch methods
on one loaded base.

    python benchmarks/generate.py                                   # CPU: dummy SDXL+SD1.5 at 256², 2 steps, bf16
    python benchmarks/generate.py --size 1024 --steps 30 --device cuda --dtype fp16
    python benchmarks/generate.py --size 1024 --steps 5 --scheduler lcm --device cuda --dtype fp16
    python benchmarks/generate.py --weights tiny --size 64          # seconds; checks the script itself
    python benchmarks/generate.py --methods infiniteyou --size 1024 --steps 30 --device cuda --dtype bf16   # FLUX.1-dev dummy (~40 GB)
    python benchmarks/generate.py --methods infiniteyou --size 1024 --steps 30 --device cuda --dtype bf16 --quantize 8bit --cpu-offload

InfiniteYou (FLUX.1-dev, ~20 B parameters with T5 and InfuseNet) is left out of the default list on a
CPU with dummy weights (it would not fit); ask for it with --methods, or use --weights tiny.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "tests" / "data" / "faces" / "obama.jpg"


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_steps_per_second(loaded, family: str, size: int, steps: int, device: str) -> float:
    """Steps/s of the bare diffusers pipeline on the same components (the baseline)."""
    import diffusers
    import torch

    if family == "flux":  # InfiniteYou: plain FLUX on the same transformer/VAE/encoders (no InfuseNet)
        base = loaded.pipe.base
        plain = diffusers.FluxPipeline(**{k: getattr(base, k) for k in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")})
        plain.set_progress_bar_config(disable=True)
        marks_f: list[float] = []
        t0 = time.perf_counter()
        plain(prompt="a photo", num_inference_steps=steps, height=size, width=size, output_type="latent", max_sequence_length=32 if size <= 128 else 512,
              generator=torch.Generator("cpu").manual_seed(0),
              callback_on_step_end=lambda p, i, t, kw: (marks_f.append(time.perf_counter()), {})[1])
        return rate(marks_f, t0)
    pipe = loaded.pipe.pipe if hasattr(loaded.pipe, "pipe") else loaded.pipe
    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    kw = dict(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet, scheduler=pipe.scheduler)
    if family == "sdxl":
        kw.update(text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2)
    else:
        kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    plain = cls(**kw)
    plain.set_progress_bar_config(disable=True)
    restore = None
    if hasattr(loaded.pipe, "identity_adapter") and loaded.pipe.identity_adapter is not None:
        restore = loaded.pipe.identity_adapter
        loaded.pipe.unload_instantid_adapter()
    elif hasattr(loaded.pipe, "adapter") and loaded.pipe.adapter is not None:
        restore = loaded.pipe.adapter
        loaded.pipe.unload()
    marks: list[float] = []
    t0 = time.perf_counter()
    plain(prompt="a photo", num_inference_steps=steps, height=size, width=size, output_type="latent",
          generator=torch.Generator("cpu").manual_seed(0),
          callback_on_step_end=lambda p, i, t, kw: (marks.append(time.perf_counter()), {})[1])
    if restore is not None:
        if hasattr(loaded.pipe, "load_instantid_adapter"):
            loaded.pipe.load_instantid_adapter(restore, scale=restore.scale)
        else:
            loaded.pipe.use(restore)
    return rate(marks, t0)


def rate(marks: list[float], t0: float) -> float:
    """Steps/s from the step-end timestamps: between steps when there are two or more
    (prompt encoding and set-up excluded), else from the start."""
    if len(marks) >= 2:
        return (len(marks) - 1) / (marks[-1] - marks[0])
    return 1.0 / (marks[0] - t0) if marks else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["dummy", "tiny"], default="dummy")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--scheduler", default="euler")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None, help="default: fp16 on GPU, bf16 on CPU")
    from faceanchor.methods.registry import names

    ap.add_argument("--methods", nargs="+", default=None, choices=names(), help="default: every method (InfiniteYou not for dummy on a CPU)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per method (median reported)")
    ap.add_argument("--quantize", choices=["none", "8bit"], default="none", help="FLUX: 8-bit transformer, T5 and InfuseNet (InfiniteYou's --quantize_8bit)")
    ap.add_argument("--cpu-offload", action="store_true", help="model CPU offload (CUDA only)")
    args = ap.parse_args(argv)

    import torch

    from faceanchor.config import Settings, resolve_device
    from faceanchor.engine import Engine
    from faceanchor.types import GenerationRequest

    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bf16" if device == "cpu" else "fp16")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    if args.methods is None:
        from faceanchor.methods.registry import get

        args.methods = [n for n in names() if n != "faceid-portrait-unnorm"
                        and not (get(n).families[0] == "flux" and args.weights == "dummy" and device == "cpu")]
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="faceanchor-bench-")), device=device, flux_quantize=args.quantize,
                        speed_cpu_offload=args.cpu_offload)
    engine = Engine(settings, weights=args.weights, face_pack="dlib", device=device, dtype=dtype)
    print(f"# generate benchmark: weights={args.weights} size={args.size}² steps={args.steps} scheduler={args.scheduler} "
          f"device={device} dtype={dtype_name} quantize={args.quantize} cpu_offload={args.cpu_offload} torch={torch.__version__}")
    print(f"{'method':<16}{'load s':>9}{'face s':>8}{'prompt s':>10}{'denoise s':>11}{'decode s':>10}{'score s':>9}"
          f"{'steps/s':>9}{'plain steps/s':>15}{'ratio':>7}{'peak MB':>10}")
    baselines: dict[str, float] = {}
    for method in args.methods:
        m = engine.method(method)
        req = GenerationRequest(
            method=method, face_image=str(FACE), face_images=[str(FACE)] if m.separate_references else [],
            prompt="a portrait photo", width=args.size, height=args.size, num_inference_steps=args.steps,
            scheduler=args.scheduler, seed=0,
        )
        family = m.family_for(req)
        first = engine.generate(req)  # loads models (timed as "load")
        runs, rates = [], []
        for _ in range(args.repeat):
            marks: list[float] = []
            t0 = time.perf_counter()
            runs.append(engine.generate(req, on_progress=lambda e: marks.append(time.perf_counter()) if e.stage == "denoise" and e.total else None))
            rates.append(rate(marks, t0))
        t = {k: statistics.median(r.timings.get(k, 0.0) for r in runs) for k in ("face", "prompt", "denoise", "decode", "score")}
        sps = statistics.median(rates)
        if family not in baselines:
            loaded = next(v for k, v in engine._loaded.items() if k[1] == family)
            baselines[family] = plain_steps_per_second(loaded, family, args.size, args.steps, device)
        base = baselines[family]
        print(f"{method:<16}{first.timings.get('load', 0):>9.2f}{t['face']:>8.2f}{t['prompt']:>10.2f}{t['denoise']:>11.2f}"
              f"{t['decode']:>10.2f}{t['score']:>9.2f}{sps:>9.3f}{base:>15.3f}{sps / base:>7.2f}{peak_memory_mb(device):>10.0f}")
        sys.stdout.flush()
    faceid = [n for n in args.methods if engine.method(n).pipeline_key == "faceid" and "sd15" in engine.method(n).families]
    if len(faceid) >= 2:
        switches = []
        for a, b in zip(faceid, faceid[1:] + faceid[:1]):
            loaded = next(v for k, v in engine._loaded.items() if k[1] == "sd15")
            t0 = time.perf_counter()
            engine.method(b).adapter(loaded, engine.loader, GenerationRequest(method=b, prompt="x"), 128)
            switches.append((f"{a}->{b}", time.perf_counter() - t0))
        print("# FaceID method switch on one loaded SD1.5 (adapters cached after first load):")
        for name, s in switches:
            print(f"  {name:<32}{s * 1000:>9.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

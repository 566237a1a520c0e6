"""Separate requests as one pipeline call (Engine.generate_many) on tiny seeded weights: each
request's images equal its own generate() call, per-request errors, cancels and progress."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.errors import Cancelled, NoFaceError
from faceanchor.types import GenerationRequest, PlacedIdentity

sys.path.insert(0, str(Path(__file__).parent))
from photos import small_copy  # noqa: E402

OBAMA = small_copy("obama.jpg")
OBAMA2 = small_copy("obama2.jpg")
BIDEN = small_copy("biden.jpg")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(Settings(home=tmp_path_factory.mktemp("home"), device="cpu"), weights="tiny", face_pack="dlib")


def req(**kw):
    base = dict(face_image=OBAMA, prompt="a portrait", width=64, height=64, num_inference_steps=2, seed=7)
    base.update(kw)
    return GenerationRequest(**base)


def pixels(im):
    return np.asarray(im.image, dtype=np.int16)


def mixed_requests():
    return [
        req(),
        req(face_image=BIDEN, prompt="an oil painting of a man", negative_prompt="blurry", seed=11,
            identity_strength=0.5, adapter_strength=1.2),
        req(face_image=OBAMA2, prompt="x", seed=3, samples=2),
    ]


def test_batch_equals_each_request_alone(engine):
    reqs = mixed_requests()
    alone = [engine.generate(r) for r in reqs]
    many = engine.generate_many(reqs)
    assert len(many) == len(reqs)
    for a, m, r in zip(alone, many, reqs):
        assert not isinstance(m, Exception), m
        assert [im.seed for im in m.images] == [im.seed for im in a.images]
        for x, y in zip(a.images, m.images):
            assert np.abs(pixels(x) - pixels(y)).max() <= 2  # float tolerance of batched kernels, 8-bit output
        assert m.params["prompt_used"] == r.prompt and m.params["identity_strength"] == r.identity_strength
        assert m.timings["batch_requests"] == 3 and m.timings["batch_images"] == 4
    # the per-sample values matter: the two strengths and prompts give different images
    assert np.abs(pixels(many[0].images[0]) - pixels(many[1].images[0])).max() > 10


def test_pipeline_batch_of_separate_inputs_equals_single_calls_in_latents(engine):
    """The pipeline's per-sample inputs (rows of prompt embeddings, kps images, masks, scales)."""
    from faceanchor.pipelines.prompts import encode_prompts

    reqs = mixed_requests()[:2]
    engine.generate(reqs[0])  # loaded
    loaded = next(iter(engine._loaded.values()))
    pipe = loaded.pipe
    m = engine.method("instantid")
    tools = engine._tools(m)
    per = []
    for r in reqs:
        ident = engine.identity(r)
        w, h, kps, mask, _ = m.controls(r, ident, tools)
        pe = encode_prompts(pipe, r.prompt, r.negative_prompt, device="cpu")
        per.append((torch.as_tensor(ident.embedding).reshape(1, 1, -1), kps, mask, pe, r))

    def call(items, seeds):
        return pipe(prompt=None, face_embedding=torch.cat([p[0] for p in items]), kps_image=[p[1] for p in items] if len(items) > 1 else items[0][1],
                    face_mask=[p[2] for p in items] if len(items) > 1 else items[0][2], height=64, width=64, num_inference_steps=2,
                    guidance_scale=5.0, num_images=len(items), generator=[torch.Generator().manual_seed(s) for s in seeds],
                    identity_scale=[p[4].identity_strength for p in items], adapter_scale=[p[4].adapter_strength for p in items],
                    prompt_embeds=torch.cat([p[3][0] for p in items]), negative_prompt_embeds=torch.cat([p[3][1] for p in items]),
                    pooled_prompt_embeds=torch.cat([p[3][2] for p in items]), negative_pooled_prompt_embeds=torch.cat([p[3][3] for p in items]),
                    output_type="latent").images

    single = torch.cat([call([p], [s]) for p, s in zip(per, (5, 6))])
    batched = call(per, (5, 6))
    assert float((single - batched).abs().max()) < 1e-4
    assert float((batched[0] - batched[1]).abs().max()) > 1e-2


def test_one_request_failing_or_cancelled_leaves_the_others(engine, monkeypatch):
    from PIL import Image
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 90, 90)).save(buf, "PNG")
    reqs = [req(seed=1), req(face_image=buf.getvalue(), seed=2), req(seed=3, prompt="b"), req(seed=4, prompt="c")]
    events: list[list] = [[] for _ in reqs]
    cancelled = {"on": False}

    def progress(i):
        def on(ev):
            events[i].append(ev)
            if i == 2 and ev.stage == "denoise" and ev.step == 1:
                cancelled["on"] = True  # request 2 is cancelled after the first step of the shared call
        return on

    out = engine.generate_many(reqs, [progress(i) for i in range(4)], [None, None, lambda: cancelled["on"], None])
    assert isinstance(out[1], NoFaceError)
    assert isinstance(out[2], Cancelled)
    assert out[0].timings["batch_requests"] == 3 and out[3].timings["batch_requests"] == 3
    alone = engine.generate(reqs[3])
    assert np.abs(pixels(alone.images[0]) - pixels(out[3].images[0])).max() <= 2
    for i in (0, 3):
        steps = [ev.step for ev in events[i] if ev.stage == "denoise" and ev.total]
        assert steps == [1, 2]
        assert {ev.stage for ev in events[i]} >= {"face", "load", "controls", "prompt", "denoise", "decode", "score"}
    assert [ev.step for ev in events[2] if ev.stage == "denoise" and ev.total] == [1]  # no events after its cancel


def test_all_cancelled_stops_the_call(engine):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 40

    out = engine.generate_many([req(seed=1), req(seed=2)], None, [stop, stop])
    assert all(isinstance(o, Cancelled) for o in out)


def test_batch_keys(engine):
    key = engine.batch_key(req())
    assert key is not None and key == engine.batch_key(req(seed=9, prompt="other", face_image=BIDEN, adapter_strength=0.3))
    for other in (req(num_inference_steps=3), req(width=128), req(scheduler="lcm"), req(guidance_scale=1.0),
                  req(enhance_face_region=False), req(controlnet_selection=["canny"])):
        assert engine.batch_key(other) not in (None, key)
    # region control of several people, and methods that cannot batch, run alone
    assert engine.batch_key(req(face_box=[0, 0, 32, 32])) is None
    assert engine.batch_key(req(more_identities=[PlacedIdentity(face_image=BIDEN, box=[32, 0, 64, 32])])) is None
    faceid = engine.batch_key(req(method="faceid"))
    assert faceid is not None and faceid != key and faceid == engine.batch_key(req(method="faceid", seed=3, face_image=BIDEN))
    for other in (req(method="faceid", adapter_strength=0.5), req(method="faceid", lora_scale=0.5), req(method="faceid-plusv2")):
        assert engine.batch_key(other) not in (None, faceid)
    assert engine.batch_key(req(method="faceid", face_box=[0, 0, 32, 32])) is None
    assert engine.batch_key(req(base="sd15")) is None  # InstantID on SD1.5 is an error: it fails alone


@pytest.mark.parametrize("method", ["faceid", "faceid-plusv2", "faceid-portrait"])
def test_faceid_family_batch_equals_each_request_alone(engine, method):
    reqs = [req(method=method, seed=1), req(method=method, face_image=BIDEN, prompt="a painting", negative_prompt="ugly", seed=2, samples=2)]
    alone = [engine.generate(r) for r in reqs]
    many = engine.generate_many(reqs)
    for a, m in zip(alone, many):
        assert m.timings["batch_requests"] == 2 and [im.seed for im in m.images] == [im.seed for im in a.images]
        for x, y in zip(a.images, m.images):
            assert np.abs(pixels(x) - pixels(y)).max() <= 2
    assert np.abs(pixels(many[0].images[0]) - pixels(many[1].images[0])).max() > 10


def test_requests_that_cannot_batch_run_alone_in_generate_many(engine):
    reqs = [req(seed=1), req(seed=2, face_box=[0, 0, 40, 40]), req(seed=3, width=128, height=64)]
    out = engine.generate_many(reqs)
    assert [o.timings["batch_requests"] for o in out] == [1, 1, 1]
    alone = engine.generate(reqs[1])
    assert np.array_equal(pixels(alone.images[0]), pixels(out[1].images[0]))


def test_the_batched_worker_runs_queued_jobs_as_one_call(engine, tmp_path, monkeypatch):
    """The engine on tiny weights behind the queue: three queued InstantID jobs run as one
    pipeline call, each job's stored image equal to its request run alone (up to 8-bit rounding)."""
    import io

    from PIL import Image

    from faceanchor.service.runtime import Service
    from faceanchor.types import JobStatus

    photo = Path(OBAMA).read_bytes()
    settings = Settings(home=tmp_path, device="cpu", watermark=False, worker_batch_max=4, job_lease_seconds=2.0)
    calls = []
    real = engine.generate_many
    monkeypatch.setattr(engine, "generate_many", lambda reqs, *a, **kw: calls.append(len(reqs)) or real(reqs, *a, **kw))
    svc = Service(settings, engine=engine)
    reqs = [{"face_image": photo, "prompt": p, "width": 64, "height": 64, "num_inference_steps": 2, "seed": s, "adapter_strength": a}
            for p, s, a in (("a portrait", 1, 0.8), ("a painting", 2, 1.1), ("a sketch", 3, 0.5))]
    ids = [svc.submit("instantid", dict(r))[0].id for r in reqs]
    svc.start(background=False)
    try:
        deadline = time.time() + 120
        views = [svc.jobs.get(i) for i in ids]
        while not all(v.status.finished for v in views) and time.time() < deadline:
            time.sleep(0.05)
            views = [svc.jobs.get(i) for i in ids]
    finally:
        svc.stop()
    assert calls == [3]
    assert all(v.status == JobStatus.COMPLETED and v.result["timings"]["batch_requests"] == 3 for v in views), [v.error for v in views]
    stored = np.asarray(Image.open(io.BytesIO(svc.files.get(views[1].result["images"][0]["file_id"], "outputs"))).convert("RGB"), np.int16)
    alone = engine.generate(GenerationRequest(**reqs[1]))
    assert np.abs(stored - np.asarray(alone.images[0].image, np.int16)).max() <= 2

"""User LoRAs with InfiniteYou on tiny FLUX weights: per request, never in the base weights.

The LoRA files are written here with torch + safetensors only, in diffusers' FLUX LoRA layout
(``transformer.<module>.lora_A/B.weight``), kohya's (``lora_unet_double_blocks_<i>_...``,
``lora_down``/``lora_up``/``alpha``) and XLabs' (``double_blocks.<i>.processor.qkv_lora1...``), for the tiny transformer's layer shapes written out below."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from photos import small_copy  # noqa: E402

from faceanchor.engine import Engine  # noqa: E402
from faceanchor.errors import InvalidInputError, ModelNotFoundError  # noqa: E402
from faceanchor.types import GenerationRequest  # noqa: E402

OBAMA = small_copy("obama.jpg", 300)
BASE = dict(method="infiniteyou", face_image=OBAMA, prompt="a portrait", num_inference_steps=1, seed=4)
#: Linear layers of the tiny FLUX transformer (1 double + 1 single block, width 32): (in, out).
TINY = {"transformer_blocks.0.attn.to_q": (32, 32), "transformer_blocks.0.attn.to_out.0": (32, 32),
        "transformer_blocks.0.ff.net.0.proj": (32, 128), "single_transformer_blocks.0.proj_out": (160, 32)}


def diffusers_lora(path: Path, layers: dict[str, tuple[int, int]], seed: int = 0, rank: int = 4, scale: float = 0.5) -> str:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, (fan_in, fan_out) in layers.items():
        sd[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) * scale
        sd[f"transformer.{name}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * scale
    save_file(sd, str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    return {
        "a": diffusers_lora(d / "a.safetensors", TINY, seed=1),
        "b": diffusers_lora(d / "b.safetensors", {"transformer_blocks.0.attn.to_q": (32, 32)}, seed=2),
        "wide": diffusers_lora(d / "wide.safetensors", {"transformer_blocks.0.attn.to_q": (48, 32)}, seed=3),  # in 48: another model's
        "elsewhere": diffusers_lora(d / "elsewhere.safetensors", {"transformer_blocks.7.attn.to_q": (32, 32)}, seed=3),
        "dir": d,
    }


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    from faceanchor.config import Settings

    return Settings(home=tmp_path_factory.mktemp("home"), device="cpu")


@pytest.fixture(scope="module")
def engine(settings):
    return Engine(settings, weights="tiny", face_pack="dlib")


def _gen(engine, **kw):
    return engine.generate(GenerationRequest(**{**BASE, **kw}))


def _px(result):
    return np.asarray(result.images[0].image, dtype=np.float32) / 255


def _pipe(engine):
    return next(iter(engine._loaded.values())).pipe


def test_a_lora_changes_the_image_weight_zero_and_no_lora_give_the_plain_image(engine, files):
    plain = _px(_gen(engine))
    r = _gen(engine, loras=[{"model": files["a"]}])
    assert np.abs(_px(r) - plain).max() > 1e-2
    assert r.models["lora_1"] == files["a"] and r.params["loras"] == [{"model": files["a"], "weight": 1.0, "weight_name": None}]
    half = _px(_gen(engine, loras=[{"model": files["a"], "weight": 0.5}]))
    assert np.abs(half - plain).max() > 1e-3 and np.abs(half - _px(r)).max() > 1e-3
    assert np.array_equal(_px(_gen(engine, loras=[{"model": files["a"], "weight": 0.0}])), plain)  # weight 0: as if not given
    after = _gen(engine)  # a request without: exactly the no-LoRA image, the LoRA layers off
    assert np.array_equal(_px(after), plain) and not any(k.startswith("lora_") for k in after.models)
    tr = _pipe(engine).base.transformer
    assert tuple(tr.transformer_blocks[0].attn.to_q.base_layer.weight.shape) == (32, 32)  # the base layer itself is untouched


def test_loras_in_sequence_never_add_up(engine, settings, files):
    _gen(engine, loras=[{"model": files["a"]}])
    b = _px(_gen(engine, loras=[{"model": files["b"]}]))
    fresh = Engine(settings, weights="tiny", face_pack="dlib")
    assert np.array_equal(b, _px(_gen(fresh, loras=[{"model": files["b"]}])))  # after A, B alone is B's image
    both = _gen(engine, loras=[{"model": files["a"]}, {"model": files["b"], "weight": 0.7}])
    assert np.abs(_px(both) - b).max() > 1e-3 and set(both.models) >= {"lora_1", "lora_2"}


@pytest.mark.parametrize("layout", ["kohya", "xlabs"])
def test_kohya_and_xlabs_layouts_read_as_their_diffusers_equivalents(engine, tmp_path, layout):
    """kohya (``lora_down``/``lora_up``, scaled by ``alpha / rank``) and XLabs (``processor.*_lora1``, the
    layout of the realism LoRA): one output projection and one fused q/k/v projection of the double block."""
    g = torch.Generator().manual_seed(5)
    rank, alpha = 4, 2.0
    down_p, up_p = torch.randn(rank, 32, generator=g), torch.randn(32, rank, generator=g)
    down_qkv, up_qkv = torch.randn(rank, 32, generator=g), torch.randn(96, rank, generator=g)  # one fused q/k/v projection
    if layout == "kohya":
        pre = "lora_unet_double_blocks_0_img_attn_"
        written = {f"{pre}proj.lora_down.weight": down_p, f"{pre}proj.lora_up.weight": up_p, f"{pre}proj.alpha": torch.tensor(alpha),
                   f"{pre}qkv.lora_down.weight": down_qkv, f"{pre}qkv.lora_up.weight": up_qkv, f"{pre}qkv.alpha": torch.tensor(alpha)}
        s = alpha / rank
    else:
        pre = "double_blocks.0.processor."
        written = {f"{pre}proj_lora1.down.weight": down_p, f"{pre}proj_lora1.up.weight": up_p,
                   f"{pre}qkv_lora1.down.weight": down_qkv, f"{pre}qkv_lora1.up.weight": up_qkv}
        s = 1.0
    save_file(written, str(tmp_path / "theirs.safetensors"))
    same = {"transformer.transformer_blocks.0.attn.to_out.0.lora_A.weight": down_p * s, "transformer.transformer_blocks.0.attn.to_out.0.lora_B.weight": up_p}
    for i, proj in enumerate(("to_q", "to_k", "to_v")):  # the fused projection: the same A, B split by rows
        same[f"transformer.transformer_blocks.0.attn.{proj}.lora_A.weight"] = down_qkv * s
        same[f"transformer.transformer_blocks.0.attn.{proj}.lora_B.weight"] = up_qkv[32 * i: 32 * (i + 1)]
    save_file({k: v.contiguous() for k, v in same.items()}, str(tmp_path / "same.safetensors"))
    theirs = _px(_gen(engine, loras=[{"model": str(tmp_path / "theirs.safetensors")}]))
    d = _px(_gen(engine, loras=[{"model": str(tmp_path / "same.safetensors")}]))
    assert np.abs(theirs - d).max() <= 1 / 255 and np.abs(theirs - _px(_gen(engine))).max() > 1e-2


def test_bad_loras_are_clear_errors_and_leave_the_pipeline_as_it_was(settings, engine, files, tmp_path):
    fresh = Engine(settings, weights="tiny", face_pack="dlib")
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        _gen(fresh, loras=[{"model": str(tmp_path / "missing.safetensors")}])
    assert not fresh._loaded  # refused before anything loaded
    plain = _px(_gen(engine))
    with pytest.raises(InvalidInputError, match=r"does not fit transformer\.transformer_blocks\.0\.attn\.to_q: A \(4, 48\)"):
        _gen(engine, loras=[{"model": files["wide"]}])
    with pytest.raises(InvalidInputError, match="transformer_blocks.7.attn.to_q, which this transformer does not have"):
        _gen(engine, loras=[{"model": files["a"]}, {"model": files["elsewhere"]}])
    assert np.array_equal(_px(_gen(engine)), plain)  # nothing was widened or left on
    tr = _pipe(engine).base.transformer
    assert tuple(getattr(tr.transformer_blocks[0].attn.to_q, "base_layer", tr.transformer_blocks[0].attn.to_q).weight.shape) == (32, 32)
    (tmp_path / "x.bin").write_bytes(b"0")
    save_file({"foo.weight": torch.zeros(2)}, str(tmp_path / "notlora.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    for ref, words in ((str(tmp_path / "x.bin"), "only .safetensors"), (str(tmp_path / "notlora.safetensors"), "foo.weight"),
                       (str(tmp_path / "broken.safetensors"), "not a readable .safetensors"),
                       (str(files["dir"]), "holds 4 .safetensors files; name the file")):
        with pytest.raises(InvalidInputError, match=words):
            _gen(engine, loras=[{"model": ref}])
    with pytest.raises(InvalidInputError, match="instantid does not use loras"):
        engine.generate(GenerationRequest(**{**BASE, "method": "instantid", "loras": [{"model": files["a"]}]}))
    with pytest.raises(ValueError, match="each LoRA once"):
        GenerationRequest(**BASE, loras=[{"model": files["a"]}, {"model": files["a"], "weight": 0.5}])
    assert np.array_equal(_px(_gen(engine)), plain)


def test_the_official_loras_resolve_from_the_registry_and_folders(settings, engine, files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"infiniteyou-realism-lora.*supports/optional_loras/flux_realism_lora\.safetensors.*faceanchor models pull infiniteyou-realism-lora"):
        _gen(engine, loras=[{"model": "realism"}])
    with pytest.raises(ModelNotFoundError, match="someone/flux-lora"):
        _gen(engine, loras=[{"model": "someone/flux-lora"}])  # a hub id, not in the cache, offline
    with pytest.raises(InvalidInputError, match="the same LoRA file is given twice"):
        _gen(engine, loras=[{"model": files["b"]}, {"model": str(files["dir"]), "weight_name": "b.safetensors"}])
    official = settings.models_dir / "ByteDance" / "InfiniteYou" / "supports" / "optional_loras"  # a copy of the hub repo
    official.mkdir(parents=True)
    diffusers_lora(official / "flux_realism_lora.safetensors", TINY, seed=1)  # the same tensors as files["a"]
    r = _gen(engine, loras=[{"model": "realism", "weight": 0.8}])
    assert r.models["lora_1"] == "ByteDance/InfiniteYou:supports/optional_loras/flux_realism_lora.safetensors"
    assert np.array_equal(_px(r), _px(_gen(engine, loras=[{"model": files["a"], "weight": 0.8}])))
    by_folder = _gen(engine, loras=[{"model": str(files["dir"]), "weight_name": "b.safetensors"}])
    assert by_folder.models["lora_1"] == str(files["dir"] / "b.safetensors")


def test_loaded_adapters_stay_bounded(engine, files, tmp_path):
    first = _px(_gen(engine, loras=[{"model": files["a"]}]))
    for i in range(5):
        _gen(engine, loras=[{"model": diffusers_lora(tmp_path / f"l{i}.safetensors", TINY, seed=10 + i)}])
    assert len(_pipe(engine).loras.loaded) == 4  # the least recently used ones deleted
    assert np.array_equal(_px(_gen(engine, loras=[{"model": files["a"]}])), first)  # loaded again, the same


def test_8bit_transformer_takes_loras(settings, files):
    q8 = Engine(settings.model_copy(update={"flux_quantize": "8bit"}), weights="tiny", face_pack="dlib")
    plain = _px(_gen(q8))
    assert np.abs(_px(_gen(q8, loras=[{"model": files["a"]}])) - plain).max() > 1e-2
    assert np.array_equal(_px(_gen(q8)), plain)


def test_cli_lora_option(files, tmp_path, monkeypatch, capsys):
    from faceanchor.cli.app import main
    from faceanchor.imageio import read_metadata

    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEANCHOR_DEVICE", "cpu")
    args = ["generate", "--method", "infiniteyou", "--weights", "tiny", "--pack", "dlib", "--face", OBAMA, "--prompt", "a portrait",
            "--steps", "1", "--seed", "3", "--out", str(tmp_path / "out"), "--json"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--lora", str(tmp_path / "nope.safetensors")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("[transformers]")]
    assert exc.value.code == 2 and len(err) == 1 and "no such file or folder" in err[0]
    try:
        main([*args, "--lora", f"{files['a']}:0.5"])
    except SystemExit as e:
        assert e.code in (0, None)
    meta = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    embedded = read_metadata(open(meta["files"][0], "rb").read())
    assert embedded["params"]["loras"] == [{"model": files["a"], "weight": 0.5, "weight_name": None}]
    assert embedded["models"]["lora_1"] == files["a"]


def test_api_offers_the_registry_loras_and_the_servers_own_only(files, tmp_path):
    from fastapi.testclient import TestClient

    from faceanchor.api.app import create_app
    from faceanchor.config import Settings

    settings = Settings(home=tmp_path / "home", device="cpu", rate_limit_per_minute=0, api_lora_names=[files["b"], str(tmp_path / "gone.safetensors")])
    app = create_app(settings, Engine(settings, weights="tiny", face_pack="dlib"), load_in_background=False, serve_web=False)
    key, _ = app.state.service.keys.create("test")
    import base64

    face = base64.b64encode(open(OBAMA, "rb").read()).decode()
    body = dict(face_image=face, prompt="a portrait", width=64, height=64, num_inference_steps=1, seed=3, base64=True)
    with TestClient(app) as h:
        h.headers.update({"x-api-key": key})
        r = h.post("/v1/infiniteyou", json={**body, "loras": [{"model": files["a"]}]})  # a server path nobody offered
        assert r.status_code == 422 and "is not offered by this server" in r.text and "realism" in r.text
        r = h.post("/v1/infiniteyou", json={**body, "loras": [{"model": str(tmp_path / "gone.safetensors")}]})  # offered, missing
        assert r.status_code == 422 and "no such file" in r.json()["error"]["message"]  # at submit, before the queue
        r = h.post("/v1/infiniteyou", json={**body, "loras": [{"model": files["b"], "weight": 0.6}]})
        assert r.status_code == 200, r.text
        from faceanchor.imageio import read_metadata

        meta = read_metadata(base64.b64decode(r.json()["image"]))
        assert meta["params"]["loras"][0]["weight"] == 0.6 and meta["models"]["lora_1"] == files["b"]
        c = h.post("/v1/characters", json={"name": "B", "images": {"face": face}})
        r = h.post("/v1/character/generate", json={"prompt": "x", "character_id": c.json()["id"], "method": "infiniteyou",
                                                   "loras": [{"model": "/etc/passwd"}], "width": 64, "height": 64, "num_inference_steps": 1})
        assert r.status_code == 422 and "is not offered" in r.text


def test_models_list_shows_the_official_loras(tmp_path, monkeypatch, capsys):
    from faceanchor.cli.app import main

    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    official = tmp_path / "home" / "models" / "ByteDance" / "InfiniteYou" / "supports" / "optional_loras"
    official.mkdir(parents=True)
    diffusers_lora(official / "flux_anti_blur_lora.safetensors", TINY)
    try:
        main(["models", "list", "--method", "infiniteyou", "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, file in (("infiniteyou-realism-lora", "flux_realism_lora"), ("infiniteyou-anti-blur-lora", "flux_anti_blur_lora")):
        r = rows[name]
        assert (r["kind"], r["optional"], r["repo_id"], r["methods"], r["family"]) == ("lora", True, "ByteDance/InfiniteYou", ["infiniteyou"], "flux")
        assert [f["path"] for f in r["files"]] == [f"supports/optional_loras/{file}.safetensors"]
    assert rows["infiniteyou-realism-lora"]["status"] == "optional" and "models pull infiniteyou-realism-lora" in rows["infiniteyou-realism-lora"]["how_to_get"]
    assert rows["infiniteyou-anti-blur-lora"]["present"] and rows["infiniteyou-anti-blur-lora"]["found_at"] == str(official.parents[1])

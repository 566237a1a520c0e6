"""encode_prompts: plain = diffusers' encode_prompt bit for bit; compel = weights and long prompts.

Tiny SD1.5 / SDXL pipelines of the ``tiny`` weights (tokenizers built locally by
``faceanchor.models.dummy.build_tokenizer``: byte-level, so every letter is a token), offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_faceid as T  # noqa: E402
from tiny_sdxl import tiny_instantid_pipeline  # noqa: E402

from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.pipelines.prompts import a1111_to_compel, encode_prompts  # noqa: E402

PROMPT, NEG = "a photo of a man", "blurry"
LONG_WORDS = ["big", "dog"] * 25  # 50 words of 3 unmerged letters: 150 tokens + bos/eos with the dummy tokenizer


def _pipe(family: str):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from faceanchor.models.dummy import build_components

    c = build_components(family, "tiny")
    if family == "sdxl":
        return StableDiffusionXLPipeline(**{k: c[k] for k in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")})
    return StableDiffusionPipeline(**{k: c[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def pipe(request):
    return _pipe(request.param)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("negative,n,cfg", [(NEG, 1, True), (None, 2, True), ("", 1, False)])
def test_plain_is_exactly_diffusers_encode_prompt(pipe, negative, n, cfg):
    got = encode_prompts(pipe, PROMPT, negative, device="cpu", num_images_per_prompt=n, do_classifier_free_guidance=cfg)
    ref = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=n, do_classifier_free_guidance=cfg, negative_prompt=negative)
    assert len(got) == (4 if getattr(pipe, "text_encoder_2", None) is not None else 2)
    _same(got, ref)


def test_compel_weight_changes_only_the_weighted_word(pipe):
    plain = encode_prompts(pipe, PROMPT, NEG, device="cpu")
    weighted = encode_prompts(pipe, "a photo of a (man:1.5)", NEG, weighting="compel", device="cpu")
    assert weighted[0].shape == plain[0].shape
    diff = (weighted[0] - plain[0]).abs().amax(-1)[0]
    ids = pipe.tokenizer(PROMPT).input_ids  # bos, letters..., eos: "man" is the 3 tokens before eos
    man = list(range(len(ids) - 4, len(ids) - 1))
    assert (diff[man] > 1e-3).all()  # the weight acts on "man"...
    others = [i for i in range(diff.shape[0]) if i not in man]
    assert torch.equal(diff[others], torch.zeros(len(others)))  # ...and on nothing else: ":1.5" was not read as text
    _same(weighted[1:], plain[1:])  # the negative (and the pooled outputs) are untouched


@pytest.mark.parametrize("prompt", ["a photo of a (man:1.0)", "a photo of a (man)1.0", PROMPT])
def test_compel_weight_one_equals_plain(pipe, prompt):
    # compel's "no weights" bypass: a prompt whose weights are all 1 encodes like the plain text
    _same(encode_prompts(pipe, prompt, NEG, weighting="compel", device="cpu"), encode_prompts(pipe, PROMPT, NEG, device="cpu"))


def test_compel_keeps_every_word_of_a_long_prompt(pipe):
    long = " ".join(LONG_WORDS)
    assert len(pipe.tokenizer(long, truncation=False).input_ids) == 152
    plain = encode_prompts(pipe, long, NEG, device="cpu")
    got = encode_prompts(pipe, long, NEG, weighting="compel", device="cpu")
    assert plain[0].shape[1] == 77 and got[0].shape[1] == 2 * 77  # two chunks of bos + 75 tokens + eos
    assert got[1].shape == got[0].shape  # the negative is padded to the same length
    # the last word counts: plain encoding truncates it away, compel keeps it
    changed = " ".join(LONG_WORDS[:-1] + ["man"])
    assert torch.equal(encode_prompts(pipe, changed, NEG, device="cpu")[0], plain[0])
    other = encode_prompts(pipe, changed, NEG, weighting="compel", device="cpu")[0]
    assert torch.equal(other[:, :77], got[0][:, :77]) and (other[:, 77:] - got[0][:, 77:]).abs().max() > 1e-3


def test_compel_repeats_per_image_and_follows_the_negative_conventions():
    pipe = _pipe("sdxl")
    one = encode_prompts(pipe, "(man:1.3)", None, weighting="compel", device="cpu")
    two = encode_prompts(pipe, "(man:1.3)", None, weighting="compel", device="cpu", num_images_per_prompt=2)
    assert two[0].shape[0] == 2 and all(torch.equal(t[1], o[0]) for t, o in zip(two, one))
    # force_zeros_for_empty_prompt: no negative prompt = zero negatives, as diffusers
    assert torch.equal(one[1], torch.zeros_like(one[0])) and torch.equal(one[3], torch.zeros_like(one[2]))
    no_cfg = encode_prompts(pipe, "(man:1.3)", NEG, weighting="compel", device="cpu", do_classifier_free_guidance=False)
    assert no_cfg[1] is None and no_cfg[3] is None and torch.equal(no_cfg[0], one[0])


def test_unknown_weighting_and_bad_inputs_are_clear_errors():
    with pytest.raises(InvalidInputError, match="unknown prompt weighting 'a1111'; use one of plain, compel"):
        encode_prompts(object(), PROMPT, weighting="a1111", device="cpu")
    with pytest.raises(InvalidInputError, match="strings"):
        encode_prompts(object(), [PROMPT], device="cpu")


def test_a1111_weights_become_compel_weights():
    assert a1111_to_compel("a (man:1.3) in a hat") == "a (man)1.3 in a hat"
    assert a1111_to_compel("((man:1.2) in a hat:0.8)") == "((man)1.2 in a hat)0.8"
    assert a1111_to_compel("(red hat: .5)") == "(red hat).5"
    # left alone: compel syntax, text with a colon, escapes, unbalanced groups
    for kept in ("(man)1.3 hat++", '("a", "b").blend(0.7, 0.3)', "(style: noir)", r"\(x:2\)", "(y:1.3"):
        assert a1111_to_compel(kept) == kept


def test_weighted_long_embeddings_drive_every_pipeline(tmp_path):
    """encode_prompts output goes to the InstantID pipeline and to FaceID (SD1.5) as prompt_embeds."""
    from faceanchor.pipelines.faceid import FaceIDPipeline

    long = "a photo of a (man:1.4), " + " ".join(LONG_WORDS)
    _, instantid, kps, emb = tiny_instantid_pipeline(tmp_path / "tok", 64)
    names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    embeds = encode_prompts(instantid, long, "blurry", weighting="compel", device="cpu")
    assert embeds[0].shape[1] > 77
    kw = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    img = instantid(None, emb, kps, **dict(zip(names, embeds)), **kw).images
    plain = instantid(None, emb, kps, **dict(zip(names, encode_prompts(instantid, long, "blurry", device="cpu"))), **kw).images
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all() and np.abs(img - plain).max() > 1e-3

    fx = FaceIDPipeline(T.build_sd15(tmp_path / "sd15"))  # its tokenizer has 16-token windows: compel chunks by 16
    fx.load("faceid", id_dim=T.ID_DIM, lora_rank=4)
    fx.adapter.randomize(seed=1, std=0.05)
    pe, npe = encode_prompts(fx.pipe, "a (man:1.4) with a hat on a sunny day", "blurry", weighting="compel", device="cpu")
    assert pe.shape[1] > 16
    out = fx.generate(T.embedding(), prompt_embeds=pe, negative_prompt_embeds=npe, num_inference_steps=2, width=64, height=64,
                      generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.asarray(out).shape == (1, 64, 64, 3) and np.isfinite(np.asarray(out)).all()

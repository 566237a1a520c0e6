import numpy as np
import pytest
from batched_onnx import CountingSession

from faceanchor.face.align import norm_crop
from faceanchor.face.analyzer import FaceAnalyzer
from faceanchor.face.encode_arcface import ArcFaceEncoder, graph_normalises_itself


@pytest.fixture
def analyzer(onnx_pack_settings):
    return FaceAnalyzer(onnx_pack_settings, pack="buffalo_l").prepare()


def test_embedding_is_the_model_on_the_aligned_preprocessed_crop(analyzer, tiny_arcface, load_face):
    img = load_face("obama.jpg")
    face = analyzer.get(img)[0]
    assert face.space == "buffalo_l" and face.embedding.shape == (512,)
    crop = norm_crop(np.asarray(img), face.kps, 112)
    blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # RGB, NCHW
    expected = tiny_arcface(blob)[0]
    np.testing.assert_allclose(face.embedding, expected, rtol=1e-4, atol=1e-5)
    # raw embedding kept; normed_embedding is the unit vector
    assert abs(np.linalg.norm(face.embedding) - np.linalg.norm(expected)) < 1e-3
    np.testing.assert_allclose(face.normed_embedding, expected / np.linalg.norm(expected), atol=1e-5)


def test_channel_order_is_rgb(analyzer, tiny_arcface, load_face):
    img = load_face("obama.jpg")
    face = analyzer.get(img)[0]
    crop = norm_crop(np.asarray(img), face.kps, 112)[..., ::-1]  # BGR
    bgr = tiny_arcface(((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None].copy())[0]
    assert np.abs(face.embedding - bgr).max() > 1e-3


def test_alignment_matters(analyzer, tiny_arcface, load_face):
    img = np.asarray(load_face("obama.jpg"))
    face = analyzer.get(img)[0]
    shifted = face.with_(kps=face.kps + 15)
    assert np.abs(analyzer.encoder.encode(img, shifted) - face.embedding).max() > 1e-3


def test_graph_with_sub_mul_takes_raw_pixels(tmp_path, tiny_arcface):
    import onnx
    model = onnx.load(str(tiny_arcface.path))
    assert not graph_normalises_itself(tiny_arcface.path)
    # prepend x*1 - 0 nodes named as InsightFace's own exports name them
    g = model.graph
    first_input = g.input[0].name
    g.initializer.extend([onnx.helper.make_tensor("c0", onnx.TensorProto.FLOAT, [], [0.0]), onnx.helper.make_tensor("c1", onnx.TensorProto.FLOAT, [], [1.0])])
    sub = onnx.helper.make_node("Sub", [first_input, "c0"], ["sub_out"], name="Sub_0")
    mul = onnx.helper.make_node("Mul", ["sub_out", "c1"], ["mul_out"], name="Mul_1")
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == first_input:
                node.input[i] = "mul_out"
    nodes = [sub, mul, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    path = tmp_path / "selfnorm.onnx"
    onnx.save(model, str(path))
    assert graph_normalises_itself(path)
    enc = ArcFaceEncoder(path, space="custom").prepare()
    assert (enc.input_mean, enc.input_std) == (0.0, 1.0)
    crop = np.full((112, 112, 3), 200, dtype=np.uint8)
    np.testing.assert_allclose(enc.encode_crops(crop[None])[0], tiny_arcface(np.full((1, 3, 112, 112), 200.0, dtype=np.float32))[0], rtol=1e-4, atol=1e-4)


def test_encoder_facts(analyzer):
    enc = analyzer.encoder
    assert enc.dim == 512 and enc.input_size == 112
    assert enc.metric == "cosine" and enc.threshold == pytest.approx(0.3)
    v = enc.compare(np.ones(512), np.ones(512))
    assert v.same and v.score == pytest.approx(1.0)


def test_crops_of_a_batch_free_model_go_in_one_call_with_the_same_embeddings(batched_models, tiny_arcface, load_face, dlib_analyzer):
    photos = [np.asarray(load_face(n)) for n in ("obama.jpg", "biden.jpg", "astronaut.png")]
    crops = np.stack([norm_crop(p, dlib_analyzer.detect(p)[0].kps, 112) for p in photos])
    fixed = ArcFaceEncoder(tiny_arcface.path, space="buffalo_l").prepare()
    free = ArcFaceEncoder(batched_models["arcface"], space="buffalo_l").prepare()
    free._session = CountingSession(free._session)
    batch = free.encode_crops(crops)
    assert free._session.batches == [3]  # every crop in one network call
    one_by_one = np.stack([fixed.encode_crops(c[None])[0] for c in crops])
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch, tiny_arcface(fixed.preprocess(crops)), rtol=1e-4, atol=1e-5)

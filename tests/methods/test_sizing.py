"""The working-size cap: sizes over it scale down (aspect kept, on the grid), others stay."""

from faceanchor.methods.sizing import cap_side, cap_size, output_size


def test_cap_size_scales_down_keeping_the_aspect():
    w, h = cap_size(1434, 2333, 1_310_000, 64)
    assert w * h <= 1_310_000 and w % 64 == 0 and h % 64 == 0
    assert abs(w / h - 1434 / 2333) < 0.05 and (w, h) == (896, 1408)
    assert cap_size(1434, 2333, None, 64) == (1408, 2304)  # no cap: the grid only
    assert cap_size(640, 512, 1_310_000, 64) == (640, 512)  # within: unchanged
    assert cap_size(5000, 10, 1000, 64) == (704, 64)  # a side never below one grid cell
    assert cap_side(1024, 400_000, 8) == 632


def test_output_size_applies_the_cap_to_photo_and_explicit_sizes():
    assert output_size((600, 800), None, None, "sdxl", max_pixels=1_310_000) == (960, 1280)  # official sizing fits
    assert output_size((600, 800), 2048, 2048, "sdxl", max_pixels=1_310_000) == (1088, 1088)
    assert output_size((600, 800), None, None, "sd15", max_pixels=400_000) == (512, 680)  # SD1.5 sizing fits
    assert output_size(None, 768, 768, "sd15", max_pixels=400_000) == (632, 632)
    assert output_size((600, 800), 2048, 2048, "sdxl") == (2048, 2048)  # no cap given: as before

from __future__ import annotations

import pytest
import torch

from swinedge.errors import SwinedgeError
from swinedge.models import MODEL_SPECS, SwinConfig, SwinTransformer, count_macs, create_model

# timm's parameter counts at 1000 classes (timm.create_model(name).num_params).
TIMM_PARAMS = {
    "swin_tiny_patch4_window7_224": 28_288_354,
    "swin_small_patch4_window7_224": 49_606_258,
    "swin_base_patch4_window7_224": 87_768_224,
    "swin_large_patch4_window7_224": 196_532_476,
    "swin_base_patch4_window12_384": 87_903_584,
    "swin_large_patch4_window12_384": 196_735_516,
}
# Official Swin GFLOPs (paper / model zoo), rounded to one decimal.
OFFICIAL_GFLOPS = {
    "swin_tiny_patch4_window7_224": 4.5,
    "swin_small_patch4_window7_224": 8.7,
    "swin_base_patch4_window7_224": 15.4,
    "swin_base_patch4_window12_384": 47.1,
    "swin_large_patch4_window7_224": 34.5,
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_param_counts_equal_timm(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert model.num_params() == TIMM_PARAMS[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL_GFLOPS))
def test_gflops_match_official(name: str) -> None:
    assert abs(count_macs(MODEL_SPECS[name].config) / 1e9 - OFFICIAL_GFLOPS[name]) < 0.06


@pytest.mark.parametrize("name", sorted(MODEL_SPECS))
def test_forward_shape_every_variant(name: str) -> None:
    cfg = MODEL_SPECS[name].config
    with torch.device("meta"):
        model = SwinTransformer(cfg).eval()
        logits = model(torch.empty(2, cfg.in_chans, cfg.img_size, cfg.img_size))
    assert tuple(logits.shape) == (2, cfg.num_classes)


@pytest.mark.parametrize(
    "img_size,in_chans,num_classes",
    [(64, 3, 7), (72, 1, 3), (76, 4, 0), (100, 3, 10)],  # 72/76/100: attention and merge padding
)
def test_real_forward_any_size(img_size: int, in_chans: int, num_classes: int) -> None:
    model = create_model("swin_micro_patch4_window4_64", img_size=img_size, in_chans=in_chans, num_classes=num_classes).eval()
    x = torch.randn(2, in_chans, img_size, img_size)
    y = model(x)
    expected_width = num_classes if num_classes else model.num_features
    assert y.shape == (2, expected_width)
    assert torch.isfinite(y).all()
    # Batch items are independent: the second image alone gives the same logits.
    torch.testing.assert_close(model(x[1:]), y[1:], atol=1e-5, rtol=1e-5)


def test_window_clamped_and_unshifted_when_map_is_small() -> None:
    # Swin-T at 224: the last stage is 7x7 with window 7 -> no shift anywhere in it.
    geoms = MODEL_SPECS["swin_tiny_patch4_window7_224"].config.stage_geometries()
    assert [g.height for g in (s[0] for s in geoms)] == [56, 28, 14, 7]
    assert [g.shift for g in geoms[0]] == [0, 3]
    assert all(g.shift == 0 for g in geoms[3])
    # At 160 px the last stage is 5x5: the window shrinks to 5.
    small = SwinConfig(img_size=160).stage_geometries()
    assert small[3][0].window == 5 and small[3][0].shift == 0


def test_padding_geometry() -> None:
    geoms = SwinConfig(img_size=256).stage_geometries()
    g = geoms[0][1]
    assert (g.height, g.padded_height, g.shift) == (64, 70, 3)


def test_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_model("swin_micro_patch4_window4_64", num_classes=4, drop_path_rate=0.5)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (dict(img_size=30), "unsupported img_size 30"),
        (dict(img_size=226), "unsupported img_size 226"),
        (dict(num_classes=-1), "num_classes"),
        (dict(num_heads=(3, 6, 12, 25)), "not divisible"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SwinedgeError, match=fragment):
        create_model("swin_tiny_patch4_window7_224", **kwargs)


def test_unknown_attention_impl() -> None:
    model = create_model("swin_micro_patch4_window4_64")
    with pytest.raises(SwinedgeError, match="unknown attention implementation"):
        model.set_attention_impl("flash")

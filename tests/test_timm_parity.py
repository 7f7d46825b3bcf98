"""Logits equal to timm's model of the same name and weights (runs where timm imports)."""

from __future__ import annotations

import pytest
import torch

from swinedge.models import checkpoint_filter_fn, create_model
from swinedge.models.checkpoint import load_state_dict_strict

pytestmark = [pytest.mark.gpu, pytest.mark.timm]


@pytest.mark.parametrize(
    "name",
    [
        "swin_tiny_patch4_window7_224",
        "swin_small_patch4_window7_224",
        "swin_base_patch4_window7_224",
        "swin_base_patch4_window12_384",
        "swin_large_patch4_window7_224",
        "swin_large_patch4_window12_384",
    ],
)
def test_logits_equal_timm(name: str) -> None:
    import timm

    device = "cuda"
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval().to(device)
    ours = create_model(name).eval().to(device)
    state = checkpoint_filter_fn(ref.state_dict(), ours)
    load_state_dict_strict(ours, state, f"timm {name}")
    size = ours.config.img_size
    x = torch.randn(2, 3, size, size, device=device)
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        expected, got = ref(x), ours(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_logits_equal_timm_padded_size() -> None:
    """A size that is not a window multiple: timm pads inside attention, so do we."""
    import timm

    device = "cuda"
    torch.manual_seed(0)
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=256, strict_img_size=False)
    ref = ref.eval().to(device)
    ours = create_model("swin_tiny_patch4_window7_224", img_size=256).eval().to(device)
    load_state_dict_strict(ours, checkpoint_filter_fn(ref.state_dict(), ours), "timm")
    x = torch.randn(2, 3, 256, 256, device=device)
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(640, 640), (800, 1344)])
def test_backbone_stages_equal_timm_features_only(size: tuple[int, int], tmp_path) -> None:
    """A timm ``features_only`` Swin-T state dict, through ``swinedge build --features``,
    gives timm's four stage maps (timm returns NHWC; swinedge NCHW) at detection sizes.
    1344, not 1333: timm needs a patch multiple, swinedge pads one itself."""
    import timm

    from swinedge.models import build_backbone_checkpoint, load_model

    device = "cuda"
    torch.manual_seed(0)
    ref = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3), img_size=size)
    ref = ref.eval().to(device)
    torch.save(ref.state_dict(), tmp_path / "timm_features.pth")
    result = build_backbone_checkpoint("swin_tiny_patch4_window7_224", tmp_path / "bb.pt", weights=tmp_path / "timm_features.pth", size=size)
    assert result["source"]["layout"] == "timm-features" and result["config"]["stage_norms"] is False
    ours, _ = load_model(tmp_path / "bb.pt")
    ours = ours.to(device)
    x = torch.randn(1, 3, *size, device=device)
    with torch.no_grad():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        expected, got = ref(x), ours(x)
    assert len(got) == len(expected) == 4
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e.permute(0, 3, 1, 2), atol=1e-4, rtol=1e-4)
    # The same weights read as one model for several sizes (what `export --sizes` traces),
    # built at the other size: the maps are timm's too.
    other = (800, 1344) if size == (640, 640) else (640, 640)
    any_size, _ = load_model(tmp_path / "bb.pt", input_size=other)
    any_size = any_size.to(device).set_any_size(True)
    with torch.no_grad():
        got = any_size(x)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e.permute(0, 3, 1, 2), atol=1e-4, rtol=1e-4)

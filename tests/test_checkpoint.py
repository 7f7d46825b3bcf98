"""Checkpoint layouts (timm, official), file formats, adaptation and safety."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from swinedge.errors import SwinedgeError
from swinedge.models import create_model, load_model, load_weights, save_checkpoint
from swinedge.models.checkpoint import resize_rel_pos_bias_table

NAME = "swin_micro_patch4_window4_64"


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The documented official layout: downsample at the end of the previous stage,
    ``head.`` instead of ``head.fc.``, plus index and mask buffers."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        k = k.replace("head.fc.", "head.")
        out[k] = v.clone()
        if k.endswith("relative_position_bias_table"):
            out[k.replace("relative_position_bias_table", "relative_position_index")] = torch.zeros(16, 16, dtype=torch.long)
    out["layers.0.blocks.1.attn_mask"] = torch.full((4, 16, 16), -100.0)
    return out


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model(NAME, num_classes=6).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def fresh(num_classes: int = 6, **kw) -> torch.nn.Module:
    torch.manual_seed(99)
    return create_model(NAME, num_classes=num_classes, **kw).eval()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_timm_layout_round_trip(tmp_path: Path, source, images, wrap) -> None:
    state = source.state_dict()
    obj = {wrap: state} if wrap else state
    torch.save(obj, tmp_path / "timm.pth")
    target = fresh()
    assert not torch.allclose(target(images), source(images))
    load_weights(target, tmp_path / "timm.pth")
    torch.testing.assert_close(target(images), source(images), atol=1e-6, rtol=0)


def test_official_layout_round_trip(tmp_path: Path, source, images) -> None:
    official = to_official(source.state_dict())
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    torch.save({"model": official}, tmp_path / "official.pth")
    target = fresh()
    load_weights(target, tmp_path / "official.pth")
    torch.testing.assert_close(target(images), source(images), atol=1e-6, rtol=0)


def test_safetensors_and_module_prefix(tmp_path: Path, source, images) -> None:
    from safetensors.torch import save_file

    state = {f"module.{k}": v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    target = fresh()
    load_weights(target, tmp_path / "w.safetensors")
    torch.testing.assert_close(target(images), source(images), atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_self_describing_checkpoint(tmp_path: Path, source, images, suffix: str) -> None:
    path = save_checkpoint(source, tmp_path / f"m{suffix}", name=NAME, source=None)
    model, info = load_model(path)
    assert info["model"] == NAME and info["config"]["num_classes"] == 6
    torch.testing.assert_close(model(images), source(images), atol=1e-6, rtol=0)


def test_mismatch_lists_first_keys(tmp_path: Path, source) -> None:
    torch.save(source.state_dict(), tmp_path / "w.pth")
    with pytest.raises(SwinedgeError) as exc:
        load_weights(fresh(num_classes=3), tmp_path / "w.pth")
    msg = str(exc.value)
    assert "mis-shaped 2 e.g. 'head.fc.weight' (6, 256) vs (3, 256)" in msg
    assert "--adapt" in msg and "\n" not in msg


def test_adapt_replaces_head_and_resizes_window(tmp_path: Path, source, images) -> None:
    torch.save(source.state_dict(), tmp_path / "w.pth")
    # Other class count: head replaced, body identical.
    target = fresh(num_classes=3)
    load_weights(target, tmp_path / "w.pth", adapt=True)
    torch.testing.assert_close(target.forward_features(images), source.forward_features(images), atol=1e-6, rtol=0)
    # Other window (4 -> 2): every table is resized to 3x3 rows.
    target = fresh(window_size=2)
    load_weights(target, tmp_path / "w.pth", adapt=True)
    assert target.layers[0].blocks[0].attn.relative_position_bias_table.shape == (9, 1)


def test_resize_identity_and_smoothness() -> None:
    table = torch.randn(49, 3)
    torch.testing.assert_close(resize_rel_pos_bias_table(table, 49), table)
    const = torch.full((49, 2), 0.5)
    torch.testing.assert_close(resize_rel_pos_bias_table(const, 169), torch.full((169, 2), 0.5))


def test_missing_keys_from_another_architecture(tmp_path: Path) -> None:
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict()
    torch.save(other, tmp_path / "resnetish.pth")
    with pytest.raises(SwinedgeError, match=r"0/\d+ keys match\); missing \d+ e.g. 'patch_embed.proj.weight'"):
        load_weights(fresh(), tmp_path / "resnetish.pth")


class _Evil:
    def __reduce__(self):
        return (Path("/tmp/swinedge-pwned").touch, ())


def test_pickled_code_never_runs(tmp_path: Path) -> None:
    marker = Path("/tmp/swinedge-pwned")
    marker.unlink(missing_ok=True)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": {"x": _Evil()}}, f)
    with pytest.raises(SwinedgeError, match="not a readable checkpoint"):
        load_weights(fresh(), tmp_path / "evil.pth")
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(SwinedgeError, match="not a readable checkpoint"):
        load_weights(fresh(), tmp_path / "notes.pth")

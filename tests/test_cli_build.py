"""`swinedge models`, `build` and `--version` through the CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli_helpers import one_line_error
from swinedge import __version__
from swinedge.cli import app
from swinedge.models import create_model, load_model

runner = CliRunner()
NAME = "swin_micro_patch4_window4_64"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, fragment: str) -> None:
    line = one_line_error(result)
    assert fragment in line, line


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"swinedge {__version__}"


def test_every_command_has_help() -> None:
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert commands == {"models", "build", "export", "quantize", "qat", "verify", "inspect", "build-engine", "benchmark", "doctor", "run", "serve-repo"}
    for cmd in commands:
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.stdout, cmd
        assert len(r.stdout.split("Options")[0].strip().splitlines()) >= 2, f"{cmd} has no description"


def test_models_json() -> None:
    r = invoke("models", "--json")
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["swin_tiny_patch4_window7_224"]["params"] == 28_288_354
    assert rows["swin_base_patch4_window12_384"]["window_size"] == 12


def test_build_with_weights_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    src = create_model(NAME, num_classes=4).eval()
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")
    r = invoke("build", NAME, "--weights", tmp_path / "w.pth", "--num-classes", 4, "--out", tmp_path / "out" / "m.pt")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "out" / "m.pt.json").read_text())
    assert manifest["kind"] == "checkpoint" and manifest["config"]["num_classes"] == 4
    assert manifest["source"]["file"] == "w.pth" and len(manifest["source"]["sha256"]) == 64
    model, _ = load_model(tmp_path / "out" / "m.pt")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), src(x), atol=1e-6, rtol=0)
    assert [p.name for p in (tmp_path / "out").iterdir()] and not list((tmp_path / "out").glob("*.partial"))


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("missing", "checkpoint not found"),
        ("not_checkpoint", "not a readable checkpoint"),
        ("other_arch", "keys match"),
        ("wrong_classes", "mis-shaped"),
        ("bad_img_size", "unsupported img_size 30"),
        ("unknown_model", "unknown model 'swin_huge'"),
        ("bad_suffix", "use a .pt, .pth or .safetensors"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, case: str, fragment: str) -> None:
    out = tmp_path / "o" / "m.pt"
    w = tmp_path / "w.pth"
    model = NAME
    extra: list = []
    if case == "not_checkpoint":
        w.write_bytes(b"\x00garbage" * 10)
    elif case == "other_arch":
        torch.save(torch.nn.Linear(3, 3).state_dict(), w)
    elif case == "wrong_classes":
        torch.save(create_model(NAME, num_classes=4).state_dict(), w)
        extra = ["--num-classes", "7"]
    elif case == "bad_img_size":
        torch.save(create_model(NAME).state_dict(), w)
        extra = ["--img-size", "30"]
    elif case == "unknown_model":
        model = "swin_huge"
    elif case == "bad_suffix":
        out = tmp_path / "o" / "m.onnx"
    args = ["build", model, "--out", out]
    if case not in ("unknown_model", "bad_suffix"):
        args += ["--weights", w]
    assert_user_error(invoke(*args, *extra), fragment)
    assert not out.exists()


def test_error_text_with_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    odd = tmp_path / "[bold]weights[/bold].pth"
    r = invoke("build", NAME, "--weights", odd, "--out", tmp_path / "m.pt")
    assert f"checkpoint not found: {odd}" in one_line_error(r)


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        target_dir = Path("/proc")  # not writable even for root
    else:
        target_dir = tmp_path / "ro"
        target_dir.mkdir()
        target_dir.chmod(0o500)
    r = invoke("build", NAME, "--out", target_dir / "m.pt")
    assert "cannot write in" in one_line_error(r)

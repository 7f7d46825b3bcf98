"""Image-source faults (issue #24, items 3, 6 and 8): what ``--calib``/``--data`` may name,
files from other tools, and images that are not 8-bit RGB.

CLI cases run like ``tests/test_fuzz_cli.py``'s (its ``Sandbox``, watchdog and checks):
exit code 2, exactly one stderr line starting with ``error:`` that names the problem, every
input byte-identical (sha256), nothing new in the work folder or TMPDIR. The rest checks the
loader directly; decoded pixels are compared with a conversion written here in NumPy from
the raw values the test wrote, never with the code under test.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swinedge.data import FitPadPreprocess, Preprocess, open_images, read_class_names, report_skipped
from swinedge.errors import SwinedgeError
from swinedge.transforms import MAX_RESIZED_PIXELS, viewed
from test_fuzz_cli import MICRO, Case, Sandbox, _unfreeze_gc, _write_small_files, case, run_case, runner  # noqa: F401

from swinedge.cli import app

CALIB = "--calib-size 2"


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """m.onnx (the micro model, exported once) and the fuzz suite's small files."""
    d = tmp_path_factory.mktemp("faults-images")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TMPDIR", str(tmp_path_factory.mktemp("faults-images-tmp")))
        r = runner.invoke(app, ["export", MICRO, "--out", str(d / "m.onnx")])
        assert r.exit_code == 0, r.output
    (d / "small").mkdir()
    _write_small_files(d / "small")
    return d


# -- setups ---------------------------------------------------------------------------------------------
def _mkfifo(path: Path, unblock_after_s: float = 15.0) -> None:
    """A FIFO, and a timer that opens its writing end (then closes it) should a reader be
    blocked on it: a regression ends in a failed read, not a hung suite (the watchdog cannot
    interrupt a blocked open())."""

    def unblock() -> None:
        deadline = time.monotonic() + 60  # a reader may open it again (calibration makes passes)
        while time.monotonic() < deadline and os.path.lexists(path):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader now (the fixed code never opens it)
                pass
            time.sleep(0.2)

    os.mkfifo(path)
    timer = threading.Timer(unblock_after_s, unblock)
    timer.daemon = True
    timer.start()


def fifo(name: str):
    def setup(box: Sandbox) -> None:
        (box.work / name).parent.mkdir(parents=True, exist_ok=True)
        _mkfifo(box.work / name)

    return setup


def fifo_in_manifest(box: Sandbox) -> None:
    _mkfifo(box.work / "pipe.png")
    (box.work / "list.txt").write_text("imgs/i0.png\npipe.png\nimgs/i1.png\n")


def socket_in_folder(box: Sandbox) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(box.work / "imgs" / "sock.png"))
    s.close()


def symlink_loop(box: Sandbox) -> None:
    (box.work / "loop" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 40), (10, 20, 30)).save(box.work / "loop" / "a" / "x.png")
    os.symlink("..", box.work / "loop" / "a" / "up")


def strip_image(box: Sandbox) -> None:
    (box.work / "strip").mkdir()
    Image.new("L", (1, 60000), 128).save(box.work / "strip" / "s.png")  # a few hundred bytes


def manifest_pre(**changes):
    def setup(box: Sandbox) -> None:
        box.need("m.onnx")
        target = box.work / "m.onnx.json"
        m = json.loads(target.read_text())
        pre = m.get("preprocess") or {}
        pre.update(changes)
        m["preprocess"] = pre
        target.write_text(json.dumps(m))

    return setup


QUANT = "quantize m.onnx --out q.onnx"
VERIFY = f"verify {MICRO} m.onnx"
CASES = [
    case("quantize-calib-fifo", f"{QUANT} --calib pipe {CALIB}", "is a FIFO", setup=fifo("pipe"), limit_s=20),
    case("verify-data-fifo", f"{VERIFY} --data pipe --size 2", "is a FIFO", setup=fifo("pipe"), limit_s=20),
    case("quantize-calib-fifo-in-folder", f"{QUANT} --calib imgs", "is a FIFO", setup=fifo("imgs/p.png"), limit_s=20),
    case("verify-data-fifo-in-folder", f"{VERIFY} --data imgs", "is a FIFO", setup=fifo("imgs/p.png"), limit_s=20),
    case("quantize-calib-fifo-in-manifest", f"{QUANT} --calib list.txt {CALIB}", "is a FIFO", setup=fifo_in_manifest, limit_s=20),
    case("verify-data-socket-in-folder", f"{VERIFY} --data imgs", "is a socket", setup=socket_in_folder, limit_s=20),
    case("quantize-calib-device", f"{QUANT} --calib /dev/zero {CALIB}", "is a character device", limit_s=20),
    case("verify-data-symlink-loop", f"{VERIFY} --data loop", "is a symlink loop", setup=symlink_loop, limit_s=20),
    case("quantize-calib-symlink-loop", f"{QUANT} --calib loop {CALIB}", "is a symlink loop", setup=symlink_loop, limit_s=20),
    case("verify-data-1x60000-png", f"{VERIFY} --data strip", "over the budget", setup=strip_image, limit_s=20, max_growth_gib=1),
    case("quantize-calib-1x60000-png", f"{QUANT} --calib strip --calib-size 1", "over the budget", setup=strip_image, limit_s=20,
         max_growth_gib=1),  # fmt: skip
    case("quantize-manifest-std-zero", f"{QUANT} --calib imgs {CALIB}", "std", setup=manifest_pre(std=[0, 0.224, 0.225])),
    case("quantize-manifest-resize-string", f"{QUANT} --calib imgs {CALIB}", "resize", setup=manifest_pre(resize="224")),
    case("quantize-manifest-mean-string", f"{QUANT} --calib imgs {CALIB}", "mean", setup=manifest_pre(mean="0.5")),
    case("quantize-manifest-mean-nan", f"{QUANT} --calib imgs {CALIB}", "mean", setup=manifest_pre(mean=[0.5, float("nan"), 0.5])),
    case("quantize-manifest-unknown-interpolation", f"{QUANT} --calib imgs {CALIB}", "interpolation",
         setup=manifest_pre(interpolation="lanczos9")),  # fmt: skip
    case("verify-manifest-std-negative", f"{VERIFY} --data imgs", "std", setup=manifest_pre(std=[-1, 1, 1])),
]


@pytest.mark.parametrize("c", CASES)
def test_bad_image_source_is_a_one_line_error_that_touches_nothing(c, made: Path, tmp_path: Path, monkeypatch) -> None:
    run_case(c, made, tmp_path, monkeypatch)


def test_skipped_image_is_one_warning_line_in_verify(made: Path, tmp_path: Path, monkeypatch) -> None:
    box = Sandbox(tmp_path, made, monkeypatch)
    box.need("m.onnx")
    (box.work / "imgs" / "zz.png").write_bytes(b"not a png")
    result = box.invoke(Case(tuple(shlex.split(f"{VERIFY} --data imgs")), ""))
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if "skipped" in ln and "unreadable" in ln]
    assert len(warnings) == 1 and "skipped 1 unreadable" in warnings[0] and "zz.png" in warnings[0], result.stderr


@pytest.mark.parametrize("precision", ["int8"])  # fp16's AutoCast reads one batch: it may never meet the file
def test_skipped_calibration_image_is_one_warning_line_in_quantize(made: Path, tmp_path: Path, monkeypatch, precision: str) -> None:
    """Calibration runs with modelopt's stderr redirected: the skipped file is reported
    after it, once."""
    box = Sandbox(tmp_path, made, monkeypatch)
    box.need("m.onnx")
    (box.work / "imgs" / "zz.png").write_bytes(b"not a png")
    argv = f"quantize m.onnx --precision {precision} --calib imgs --calib-size 3 --out q.onnx"
    result = box.invoke(Case(tuple(shlex.split(argv)), ""))
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if "skipped" in ln and "unreadable" in ln]
    assert len(warnings) == 1 and "zz.png" in warnings[0], result.stderr


# -- the stream records what it skipped (for callers whose stderr is redirected) --------------------------
def _rgb(path: Path, colour=(200, 100, 50), size=(40, 30)) -> None:
    Image.new("RGB", size, colour).save(path)


def test_stream_records_skipped_files_for_a_later_report(tmp_path: Path) -> None:
    for i in range(3):
        _rgb(tmp_path / f"a{i}.png")
    (tmp_path / "b.png").write_bytes(b"junk")
    (tmp_path / "c.png").write_bytes(b"")
    stream = open_images(tmp_path, Preprocess(32), labelled=False)
    assert sum(len(b) for b in stream.batches(2)) == 3  # no warn callback: nothing printed...
    assert [name for name, _ in stream.skipped] == ["b.png", "c.png"]  # ... but recorded
    lines: list[str] = []
    assert report_skipped(stream, lines.append) == 2
    assert len(lines) == 1 and lines[0].startswith("skipped 2 unreadable file(s)") and "b.png" in lines[0]
    loaded = stream.load()
    lines.clear()
    assert report_skipped(loaded, lines.append) == 2 and len(lines) == 1


# -- files from other tools ---------------------------------------------------------------------------
def test_labels_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffcat\r\ndog\r\n# comment\r\nbird\r\n".encode())
    assert read_class_names(path) == ["cat", "dog", "bird"]
    path = tmp_path / "labels.json"
    path.write_bytes('\ufeff["cat", "dog"]\r\n'.encode())
    assert read_class_names(path) == ["cat", "dog"]


@pytest.mark.parametrize("suffix", [".csv", ".txt", ".json"])
def test_manifest_with_bom_and_crlf(tmp_path: Path, suffix: str) -> None:
    (tmp_path / "img").mkdir()
    for i in range(2):
        _rgb(tmp_path / "img" / f"x{i}.png")
    path = tmp_path / f"list{suffix}"
    if suffix == ".json":
        text = '[{"path": "img/x0.png", "label": 1},\r\n {"path": "img/x1.png", "label": 0}]\r\n'
    else:
        text = "# exported by a spreadsheet\r\nimg/x0.png,1\r\nimg/x1.png,0\r\n"
    path.write_bytes(("\ufeff" + text).encode())
    stream = open_images(path, Preprocess(32))
    batches = list(stream.batches(4))
    assert not stream.skipped and len(batches[0]) == 2 and batches[0].labels.tolist() == [1, 0]


def test_symlinked_class_and_image_folders_are_followed(tmp_path: Path) -> None:
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (data / "0").mkdir(parents=True)
    for i in range(2):
        _rgb(data / "0" / f"a{i}.png")
    (elsewhere / "more").mkdir(parents=True)
    for i in range(4):
        _rgb(elsewhere / f"b{i}.png")
    _rgb(elsewhere / "more" / "c.png")
    os.symlink(elsewhere, data / "1")  # a symlinked class folder
    os.symlink(elsewhere / "more", data / "0" / "linked")  # a symlinked image folder inside a class
    stream = open_images(data, Preprocess(32), num_classes=2)
    assert len(stream) == 2 + 1 + 5
    names = [stream.reader.name(i) for i in range(len(stream))]
    assert "0/linked/c.png" in names and "1/more/c.png" in names
    assert sorted(stream.labels) == [0, 0, 0, 1, 1, 1, 1, 1]


def test_a_dangling_image_link_is_reported_not_dropped(tmp_path: Path) -> None:
    _rgb(tmp_path / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "b.png")
    stream = open_images(tmp_path, Preprocess(32), labelled=False)
    list(stream.batches(2))
    assert [n for n, _ in stream.skipped] == ["b.png"]


def test_a_fifo_named_as_labels_is_refused(tmp_path: Path) -> None:
    _mkfifo(tmp_path / "labels.txt", 5)
    with pytest.raises(SwinedgeError, match="FIFO"):  # (reading it would block forever)
        read_class_names(tmp_path / "labels.txt")


# -- images are what they look like -----------------------------------------------------------------------
def _png(path: Path, raw: np.ndarray, bit_depth: int, colour_type: int) -> None:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): filter 0 on every row."""
    h, w = raw.shape[:2]
    data = raw.astype(">u2" if bit_depth == 16 else "u1").reshape(h, -1)
    body = b"".join(b"\x00" + row.tobytes() for row in data)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))


def _decoded(path: Path, channels: int = 3) -> np.ndarray:
    stream = open_images(path.parent, Preprocess(32, channels=channels), labelled=False)
    index = [stream.reader.name(i) for i in range(len(stream))].index(path.name)
    return np.asarray(stream.reader.decode(index)).astype(np.int64)


def _from16(v: np.ndarray) -> np.ndarray:
    return np.round(v.astype(np.float64) * 255.0 / 65535.0).astype(np.int64)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.round(rgb.astype(np.float64) * a + 255.0 * (1 - a)).astype(np.int64)


RNG = np.random.RandomState(7)


def test_16bit_grey_png(tmp_path: Path) -> None:
    raw = RNG.randint(0, 65536, size=(9, 11)).astype(np.uint16)
    raw[0, 0], raw[0, 1] = 0, 65535
    _png(tmp_path / "g.png", raw, 16, 0)
    got = _decoded(tmp_path / "g.png")
    assert got.shape == (9, 11, 3)
    assert np.array_equal(got, np.repeat(_from16(raw)[..., None], 3, axis=2))
    assert np.array_equal(_decoded(tmp_path / "g.png", channels=1), _from16(raw))


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16B", ">u2")])
def test_16bit_grey_in_memory_modes(mode: str, dtype: str) -> None:
    raw = RNG.randint(0, 65536, size=(5, 7)).astype(np.uint16)
    image = Image.frombytes(mode, (7, 5), raw.astype(dtype).tobytes())
    assert image.mode == mode
    got = np.asarray(viewed(image)).astype(np.int64)
    assert np.array_equal(got, np.repeat(_from16(raw)[..., None], 3, axis=2))


@pytest.mark.parametrize("alpha", [False, True])
def test_16bit_rgb_png(tmp_path: Path, alpha: bool) -> None:
    raw = RNG.randint(0, 65536, size=(6, 8, 4 if alpha else 3)).astype(np.uint16)
    _png(tmp_path / "c.png", raw, 16, 6 if alpha else 2)
    want = _from16(raw[..., :3])
    if alpha:
        want = _over_white(want, _from16(raw[..., 3]))
    # Pillow keeps the high byte of each 16-bit sample: 1 level at most, 2 where alpha is also rounded
    assert np.abs(_decoded(tmp_path / "c.png") - want).max() <= (2 if alpha else 1)


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette = RNG.randint(0, 256, size=(16, 3))
    index = RNG.randint(0, 16, size=(10, 12))
    image = Image.fromarray(index.astype(np.uint8), "P")
    image.putpalette(palette.astype(np.uint8).ravel().tolist())
    image.info["transparency"] = 3
    image.save(tmp_path / "p.png", transparency=3)
    want = palette[index]
    want[index == 3] = 255  # the transparent entry shows the (white) background
    assert np.array_equal(_decoded(tmp_path / "p.png"), want)


def test_rgba_and_la(tmp_path: Path) -> None:
    rgba = RNG.randint(0, 256, size=(10, 12, 4)).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.abs(_decoded(tmp_path / "a.png") - _over_white(rgba[..., :3], rgba[..., 3])).max() <= 1
    la = RNG.randint(0, 256, size=(10, 12, 2)).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    want = _over_white(np.repeat(la[..., :1], 3, axis=2), la[..., 1])
    assert np.abs(_decoded(tmp_path / "la.png") - want).max() <= 1


def test_cmyk() -> None:
    cmyk = RNG.randint(0, 256, size=(6, 9, 4)).astype(np.int64)
    image = Image.frombytes("CMYK", (9, 6), cmyk.astype(np.uint8).tobytes())
    want = np.round((255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255.0)
    assert np.abs(np.asarray(viewed(image)).astype(np.int64) - want).max() <= 1


def test_one_bit_png(tmp_path: Path) -> None:
    bits = RNG.randint(0, 2, size=(7, 16)).astype(np.uint8)
    Image.frombytes("1", (16, 7), np.packbits(bits, axis=1).tobytes()).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    assert np.array_equal(_decoded(tmp_path / "b.png"), np.repeat((bits * 255)[..., None], 3, axis=2).astype(np.int64))


def test_8bit_rgb_is_unchanged(tmp_path: Path) -> None:
    rgb = RNG.randint(0, 256, size=(10, 12, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "r.png")
    assert np.array_equal(_decoded(tmp_path / "r.png"), rgb.astype(np.int64))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """The documented choice: EXIF orientation is applied (what a viewer shows)."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:20, :30] = (255, 0, 0)  # red top-left as stored
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    image.save(tmp_path / "o.jpg", quality=100, exif=exif)
    got = _decoded(tmp_path / "o.jpg")
    assert got.shape == (60, 40, 3)  # displayed upright: portrait
    assert got[5, 35, 0] > 200 and got[5, 35, 1] < 60  # red now at the top right
    assert got[5, 5, 0] < 60


# -- the pixel budget ---------------------------------------------------------------------------------------
def test_pixel_budget_is_checked_from_the_header_before_decoding(tmp_path: Path, monkeypatch) -> None:
    Image.new("L", (1, 60000), 128).save(tmp_path / "s.png")
    decoded: list[int] = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or real_load(self))
    stream = open_images(tmp_path, Preprocess(224), labelled=False)
    with pytest.raises(SwinedgeError, match=r"s.png is 1x60000: .*over the budget"):
        list(stream.batches(1))
    assert not decoded
    assert Preprocess(224).budget_error(6000, 4000) is None  # an ordinary photo
    assert MAX_RESIZED_PIXELS >= 256 * 256 * 100


# -- preprocessing specs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,field",
    [
        ({"std": [0, 0.2, 0.2]}, "preprocess.std"),
        ({"std": [0.2, -0.1, 0.2]}, "preprocess.std"),
        ({"std": [0.2, float("inf"), 0.2]}, "preprocess.std"),
        ({"mean": "0.5"}, "preprocess.mean"),
        ({"mean": [0.5, 0.5]}, "preprocess.mean"),
        ({"mean": [0.5, "a", 0.5]}, "preprocess.mean"),
        ({"mean": [0.5, float("nan"), 0.5]}, "preprocess.mean"),
        ({"resize": "224"}, "preprocess.resize"),
        ({"resize": 0}, "preprocess.resize"),
        ({"resize": -5}, "preprocess.resize"),
        ({"resize": 224.5}, "preprocess.resize"),
        ({"resize": True}, "preprocess.resize"),
        ({"interpolation": "lanczos"}, "preprocess.interpolation"),
        ({"interpolation": ["bicubic"]}, "preprocess.interpolation"),
    ],
)
def test_bad_preprocess_spec_names_the_field(spec: dict, field: str) -> None:
    with pytest.raises(SwinedgeError, match=field.replace(".", r"\.")) as e:
        Preprocess.from_spec(224, 3, spec)
    assert "\n" not in str(e.value)
    if "resize" not in spec:
        with pytest.raises(SwinedgeError, match=field.replace(".", r"\.")):
            FitPadPreprocess.from_spec([224, 320], 3, spec)


@pytest.mark.parametrize("size", [["224", 320], [0, 320], [224], "224x320"])
def test_bad_fit_pad_size(size) -> None:
    with pytest.raises(SwinedgeError, match="input size"):
        FitPadPreprocess.from_spec(size, 3, {})


def test_good_specs_still_parse() -> None:
    p = Preprocess.from_spec(224, 3, {"resize": 256, "crop": 224, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3})
    assert p.resize_size == 256 and p.std == (0.5, 0.5, 0.5)
    assert Preprocess.from_spec(32, 1, None).channels == 1
    assert Preprocess.from_spec(np.int64(64), np.int64(3), {"resize": np.int64(73)}).resize == 73
    assert FitPadPreprocess.from_spec((224, 320), 3, None).width == 320

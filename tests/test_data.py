"""Image sets: folders, manifests, bad files, the default set, preprocessing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swinedge.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_image_set
from swinedge.errors import SwinedgeError

PRE = Preprocess(32)


def _img(path: Path, color=(200, 30, 60), size=(40, 48), fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def test_folder_recursive_with_labels_from_the_class_list(tmp_path: Path) -> None:
    _img(tmp_path / "cat" / "a.jpg")
    _img(tmp_path / "cat" / "deep" / "b.png")
    _img(tmp_path / "dog" / "c.webp")
    _img(tmp_path / "dog" / "d.bmp")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    s = load_image_set(tmp_path, PRE, class_names=["bird", "cat", "dog"])
    assert s.images.shape == (4, 3, 32, 32) and s.images.dtype == np.float32
    assert list(s.labels) == [1, 1, 2, 2]  # indices in the model's list, not among the folders present


def test_class_folders_never_numbered_by_the_folders_present(tmp_path: Path) -> None:
    """A partial copy of a labelled set: folder '999' is class 999, not the 2nd folder."""
    _img(tmp_path / "3" / "a.png")
    _img(tmp_path / "999" / "b.png")
    s = load_image_set(tmp_path, PRE, num_classes=1000)
    assert list(s.labels) == [3, 999]
    with pytest.raises(SwinedgeError, match="class folder '999' .* is class 999, but the model has 10 classes"):
        load_image_set(tmp_path, PRE, num_classes=10)
    with pytest.raises(SwinedgeError, match="cannot tell which class each folder .*'cat'.*--labels FILE"):
        _img(tmp_path / "cat" / "c.png")
        load_image_set(tmp_path, PRE)
    with pytest.raises(SwinedgeError, match="class folder 'cat' .* not one of the model's 2 class names"):
        load_image_set(tmp_path, PRE, class_names=["3", "999"])
    # Calibration ignores labels: any folder layout will do.
    assert load_image_set(tmp_path, PRE, labelled=False).labels is None


def test_imagenet_synset_folders_take_the_imagenet_1k_index(tmp_path: Path) -> None:
    from swinedge.data import imagenet1k_classes

    synsets = imagenet1k_classes()
    assert len(synsets) == 1000 == len(set(synsets)) and synsets == sorted(synsets)
    # Independent anchors: ImageNet-1k class 0 is tench, 1 goldfish, 999 toilet tissue.
    assert (synsets[0], synsets[1], synsets[999]) == ("n01440764", "n01443537", "n15075141")
    _img(tmp_path / "n15075141" / "a.png")
    _img(tmp_path / "n01443537" / "b.png")
    s = load_image_set(tmp_path, PRE, num_classes=1000)
    assert list(s.labels) == [1, 999]
    _img(tmp_path / "n99999999" / "c.png")
    with pytest.raises(SwinedgeError, match="'n99999999' .* not an ImageNet-1k synset"):
        load_image_set(tmp_path, PRE, num_classes=1000)


def test_labels_file(tmp_path: Path) -> None:
    from swinedge.data import read_class_names

    (tmp_path / "l.txt").write_text("# classes\ncat\n\ndog\n")
    assert read_class_names(tmp_path / "l.txt") == ["cat", "dog"]
    (tmp_path / "l.json").write_text(json.dumps(["a", "b", "c"]))
    assert read_class_names(tmp_path / "l.json") == ["a", "b", "c"]
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(SwinedgeError, match="names class 'a' more than once"):
        read_class_names(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(SwinedgeError, match="lists no class names"):
        read_class_names(tmp_path / "empty.txt")


def test_stream_reads_one_batch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Files are decoded only when their batch is due: never more than a batch ahead."""
    from swinedge import data

    for i in range(10):
        _img(tmp_path / f"{i}.png", color=(i * 20, 0, 0))
    stream = data.open_images(tmp_path, PRE)
    decoded: list[int] = []
    real = data._FileReader.decode
    monkeypatch.setattr(data._FileReader, "decode", lambda self, i: decoded.append(i) or real(self, i))
    sizes = []
    for batch in stream.batches(4):
        sizes.append(len(batch))
        assert len(decoded) == sum(sizes)  # nothing read ahead of the batch handed out
    assert sizes == [4, 4, 2] and decoded == list(range(10))
    whole = data.load_image_set(tmp_path, PRE).images
    np.testing.assert_array_equal(np.concatenate([b.images for b in stream.batches(3)]), whole)


def test_flat_folder_has_no_labels(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    assert load_image_set(tmp_path, PRE).labels is None


def test_manifest_txt_and_json(tmp_path: Path) -> None:
    _img(tmp_path / "imgs" / "a.png")
    _img(tmp_path / "imgs" / "b.png")
    (tmp_path / "m.txt").write_text("# path,label\nimgs/a.png,3\nimgs/b.png,7\n")
    s = load_image_set(tmp_path / "m.txt", PRE)
    assert list(s.labels) == [3, 7]
    (tmp_path / "m.json").write_text(json.dumps([{"path": str(tmp_path / "imgs" / "b.png")}]))
    s = load_image_set(tmp_path / "m.json", PRE)
    assert len(s) == 1 and s.labels is None


def test_manifest_half_labelled_is_an_error(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "m.txt").write_text("a.png,1\nb.png\n")
    with pytest.raises(SwinedgeError, match="every line has a label or none"):
        load_image_set(tmp_path / "m.txt", PRE)


def test_bad_files_are_skipped_counted_and_named(tmp_path: Path) -> None:
    _img(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "fake.jpg").write_text("hello")
    messages: list[str] = []
    s = load_image_set(tmp_path, PRE, warn=messages.append)
    assert len(s) == 1 and s.skipped == 2
    assert len(messages) == 1 and "skipped 2" in messages[0]
    assert "broken.png" in messages[0] and "fake.jpg (not an image)" in messages[0]


def test_a_corrupt_pick_is_replaced_by_another_readable_image(tmp_path: Path) -> None:
    """A seeded pick of 4 out of 6 files where 2 are corrupt: both are replaced."""
    for i in range(4):
        _img(tmp_path / f"ok{i}.png", color=(i * 40, 0, 0))
    (tmp_path / "bad0.png").write_bytes(b"junk")
    (tmp_path / "bad1.png").write_bytes(b"junk")
    for seed in range(6):  # several picks, most of which include a corrupt file
        messages: list[str] = []
        s = load_image_set(tmp_path, PRE, size=4, seed=seed, warn=messages.append)
        assert sorted(Path(p).name for p in s.paths) == [f"ok{i}.png" for i in range(4)]
        if s.skipped:
            assert "others read in their place" in messages[0] and "bad" in messages[0]
    with pytest.raises(SwinedgeError, match="asked for 5 images but found 4 readable .*2 unreadable, e.g. bad"):
        load_image_set(tmp_path, PRE, size=5)


def test_seeded_subset(tmp_path: Path) -> None:
    for i in range(10):
        _img(tmp_path / f"{i}.png", color=(i * 20, 0, 0))
    a = load_image_set(tmp_path, PRE, size=4, seed=1)
    b = load_image_set(tmp_path, PRE, size=4, seed=1)
    c = load_image_set(tmp_path, PRE, size=4, seed=2)
    assert a.paths == b.paths and a.paths != c.paths and len(a) == 4


def test_default_set_is_real_photos_and_fills_with_crops() -> None:
    s = load_image_set(None, PRE, size=20, seed=0)
    assert len(s) == 20 and s.source == "default"
    assert sum(not p.startswith("crop:") for p in s.paths) == 9
    # Real photos: not constant, spread over the normalized range.
    assert s.images.std() > 0.5


def test_constant_image_normalizes_exactly(tmp_path: Path) -> None:
    _img(tmp_path / "c.png", color=(51, 102, 204), size=(70, 50))
    x = load_image_set(tmp_path, PRE).images[0]
    expected = (np.array([51, 102, 204]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(x.mean(axis=(1, 2)), expected, atol=1e-5)
    assert np.ptp(x, axis=(1, 2)).max() < 1e-5


def test_center_crop_keeps_center_and_cuts_edges(tmp_path: Path) -> None:
    """A wide image: resize shorter side to 36 (32/0.875), then the center 32x32."""
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, :100] = 255  # left third white: must be cropped away
    img[40:60, 140:160] = 128  # center square: must stay centered
    Image.fromarray(img).save(tmp_path / "w.png")
    x = load_image_set(tmp_path, Preprocess(32, mean=(0, 0, 0), std=(1, 1, 1))).images[0, 0]
    assert x[:, 0].max() < 0.05  # no white from the left third
    ys, xs = np.nonzero(x > 0.3)
    assert abs(ys.mean() - 15.5) < 1 and abs(xs.mean() - 15.5) < 1


def test_grayscale_to_rgb_and_single_channel(tmp_path: Path) -> None:
    Image.new("L", (40, 40), 100).save(tmp_path / "g.png")
    assert load_image_set(tmp_path, PRE).images.shape == (1, 3, 32, 32)
    assert load_image_set(tmp_path, Preprocess(32, channels=1)).images.shape == (1, 1, 32, 32)


def test_digits_splits_are_disjoint_and_labelled() -> None:
    test = load_image_set("digits", PRE)
    train = load_image_set("digits-train", PRE)
    assert len(test) + len(train) == 1797
    assert sorted(set(test.labels.tolist())) == list(range(10))
    # No test image appears in the training split.
    train_keys = {x.tobytes() for x in train.images}
    assert sum(x.tobytes() in train_keys for x in test.images) < 15  # a few scans are pixel-identical


def test_preprocess_from_export_spec_is_timm_eval() -> None:
    from swinedge.export import preprocess_spec

    for size in range(16, 1025):  # timm: shorter side to floor(size / crop_pct), crop_pct 0.875
        assert Preprocess.from_spec(size, 3, preprocess_spec(size)).resize_size == math.floor(size / 0.875), size
        assert Preprocess(size).resize_size == math.floor(size / 0.875), size
    p = Preprocess.from_spec(224, 3, preprocess_spec(224))
    assert p.resize_size == 256 and p.interpolation == "bicubic" and p.mean == IMAGENET_MEAN

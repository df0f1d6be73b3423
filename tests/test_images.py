import numpy as np
import pytest
from PIL import Image

from unioncam_rt.errors import ImageError
from unioncam_rt.images import list_images, load_image, open_image, to_rgb


def save(tmp_path, image, name):
    path = tmp_path / name
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        image = Image.fromarray(np.full((20, 30), 65535, dtype=np.uint16))
        assert image.mode.startswith("I;16")
    else:
        image = base.convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    if mode == "I;16":
        assert np.asarray(rgb).min() == 255  # full-scale 16-bit is white, not clipped garbage


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(to_rgb(rgba)).tolist()[0][0] == [255, 255, 255]
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert np.asarray(to_rgb(opaque)).tolist()[0][0] == [10, 20, 30]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert open_image(path).size == (20, 40)


def test_model_array_is_resized_straight_to_input(tmp_path):
    path = save(tmp_path, Image.new("RGB", (300, 100), (255, 128, 0)), "wide.png")
    loaded = load_image(path, (224, 224))
    assert loaded.array.shape == (3, 224, 224) and loaded.array.dtype == np.float32
    assert loaded.original_size == (300, 100)
    np.testing.assert_allclose(loaded.array[:, 100, 100], [1.0, 128 / 255, 0.0], atol=1e-6)


def test_bad_files_give_one_line_errors(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    good = save(tmp_path, Image.new("RGB", (64, 64)), "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    for path, words in [(empty, "empty"), (text, "not an image"), (truncated, "corrupt"),
                        (tmp_path / "missing.png", "no such file"), (tmp_path, "directory")]:
        with pytest.raises(ImageError, match=words) as info:
            open_image(path)
        assert "\n" not in str(info.value)


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (200, 200)), "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        open_image(path)


def test_list_images_expands_directories(tmp_path):
    save(tmp_path, Image.new("RGB", (8, 8)), "b.png")
    save(tmp_path, Image.new("RGB", (8, 8)), "a.jpg")
    (tmp_path / "readme.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.png"]
    with pytest.raises(ImageError, match="no images"):
        list_images([tmp_path / "sub"] if (tmp_path / "sub").mkdir() is None else [])


def test_array_input_validation():
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((10, 10, 3), dtype=np.float32), (32, 32))
    assert load_image(np.zeros((10, 12, 3), dtype=np.uint8), (32, 32)).original_size == (12, 10)

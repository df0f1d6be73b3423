"""The serve layers that need no Ray: decoding request bytes, and one replica's service."""

import numpy as np
import pytest
from PIL import Image

from unioncam_rt.errors import ImageError, UnionCamError
from unioncam_rt.images import load_image
from unioncam_rt.serve.decode import ImageLimits, decode_image
from unioncam_rt.serve.errors import PayloadTooLarge, RequestError, http_status

from .request_images import encoded, photo_like, png_header_only, truncated_jpeg

SIZE = (32, 32)


def test_decoding_bytes_matches_reading_the_file(tmp_path):
    image = photo_like(50, 30)
    path = tmp_path / "photo.png"
    image.save(path)
    from_bytes = decode_image(path.read_bytes(), SIZE)
    from_file = load_image(path, SIZE)
    assert from_bytes.path is None and from_bytes.original_size == (50, 30)
    np.testing.assert_array_equal(from_bytes.array, from_file.array)


def test_exif_orientation_and_modes_follow_the_image_rules():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    assert decode_image(encoded(Image.new("RGB", (40, 20)), "JPEG", exif=exif), SIZE).original_size == (20, 40)
    clear = decode_image(encoded(Image.new("RGBA", (4, 4), (10, 20, 30, 0))), SIZE)
    assert np.asarray(clear.rgb)[0, 0].tolist() == [255, 255, 255]  # transparency composited on white
    grey16 = decode_image(encoded(Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))), SIZE)
    assert np.asarray(grey16.rgb).min() == 255


@pytest.mark.parametrize("data,error,words", [
    (b"", ImageError, "empty body"),
    (b"hello, not an image", ImageError, "not an image"),
    (truncated_jpeg(), ImageError, "truncated"),
    (png_header_only(3000, 2000), PayloadTooLarge, "limit of 4000000 pixels"),
    (b"\xff" * 5000, PayloadTooLarge, "limit of 4096 bytes"),
])
def test_bad_bodies_raise_one_line_errors_with_their_status(data, error, words):
    with pytest.raises(error) as caught:
        decode_image(data, SIZE, ImageLimits(max_bytes=4096, max_pixels=4_000_000))
    message = str(caught.value)
    assert words in message and "\n" not in message
    assert http_status(caught.value) == (413 if error is PayloadTooLarge else 400)


def test_decompression_bomb_guard_applies_whatever_max_pixels():
    with pytest.raises(PayloadTooLarge, match="decompression-bomb guard"):
        decode_image(png_header_only(20000, 20000), SIZE, ImageLimits(max_pixels=10**12))


def test_status_table():
    assert http_status(RequestError("x")) == 400 and http_status(UnionCamError("x")) == 400
    assert http_status(ValueError("bug")) == 500


@pytest.fixture(scope="module")
def service():
    pytest.importorskip("torch")
    from unioncam_rt.runtime.torch_engine import TorchEngine
    from unioncam_rt.serve.service import ExplainService

    from .conftest import tiny_model

    return ExplainService(TorchEngine(tiny_model()))


def test_requests_that_arrive_together_share_one_call_per_key(service):
    data = encoded(photo_like())
    requests = [service.prepare(data, {"method": "gradcam"}), service.prepare(data, {"method": "scorecam"}),
                service.prepare(data, {"method": "gradcam", "class": "class3", "npy": "1"})]
    before = dict(service.images_per_call)
    answers = service.explain_batch(requests)
    assert [a["method"] for a in answers] == ["gradcam", "scorecam", "gradcam"]
    assert answers[2]["class_index"] == 3 and "cam_npy" in answers[2] and "cam_npy" not in answers[0]
    assert [a["batch"]["images"] for a in answers] == [2, 1, 2]
    assert answers[0]["batch"]["call"] == answers[2]["batch"]["call"] != answers[1]["batch"]["call"]
    grew = {k: v - before.get(k, 0) for k, v in service.images_per_call.items()}
    assert grew == {1: 1, 2: 1}
    # the shared call gives the same map as explaining alone (up to float rounding)
    alone = service.explain_batch([service.prepare(data, {"method": "gradcam", "class": "3", "npy": "1"})])[0]
    np.testing.assert_allclose(cam_of(alone), cam_of(answers[2]), atol=1e-5)


def cam_of(answer: dict) -> np.ndarray:
    import base64
    import io

    return np.load(io.BytesIO(base64.b64decode(answer["cam_npy"])))


@pytest.mark.parametrize("params,words", [
    ({"method": "nope"}, "unknown method 'nope'"),
    ({"class": "class99"}, "unknown class name"),
    ({"class": "10"}, "class index 10 out of range"),
    ({"theta": "abc"}, "theta 'abc' is not a number"),
    ({"theta": "150"}, "theta 150.0 must be a percentile"),
    ({"npy": "maybe"}, "npy 'maybe'"),
    ({"clas": "1"}, "unknown query parameter 'clas'"),
])
def test_bad_parameters_are_refused_before_the_engine(service, params, words):
    with pytest.raises(UnionCamError, match=words.replace("(", r"\(")):
        service.prepare(encoded(photo_like()), params)


def test_budget_is_passed_on(service):
    data = encoded(photo_like())
    request = service.prepare(data, {"method": "scorecam", "budget": "4"})
    assert request.key.budget == "4"
    with pytest.raises(UnionCamError):
        service.prepare(data, {"budget": "lots"})


def test_serve_and_distributed_modules_do_not_import_ray():
    import subprocess
    import sys

    modules = ["unioncam_rt", "unioncam_rt.serve.command", "unioncam_rt.serve.runner", "unioncam_rt.serve.app",
               "unioncam_rt.serve.http", "unioncam_rt.distributed.explain_job", "unioncam_rt.distributed.evaluate_job"]
    code = f"import sys, {', '.join(modules)}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

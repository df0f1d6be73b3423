"""``unioncam-rt serve`` end to end: a server in a subprocess on a free loopback port, real
EfficientNet-Lite0 weights and development photos; explanations, errors, batching."""

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray", reason="needs ray: pip install 'unioncam-rt[serve]'")
requests = pytest.importorskip("requests", reason="needs requests: pip install 'unioncam-rt[serve]'")

from .conftest import DEV_IMAGES, dev_rows  # noqa: E402
from .request_images import encoded, photo_like, png_header_only, truncated_jpeg  # noqa: E402

pytestmark = pytest.mark.serve
MAX_BYTES = 2 * 2**20
MAX_PIXELS = 4_000_000
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(lite_engine_dir, tmp_path_factory):
    """``python -m unioncam_rt.serve`` on a free port (a local 2-CPU Ray); its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "unioncam_rt.serve", "--engine", str(lite_engine_dir), "--port", str(port),
               "--num-cpus", "2", "--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS),
               "--max-batch", "4", "--batch-wait-ms", "300"]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/healthz", timeout=2).json() == {"status": "ok"}:
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def photo(row: int = 0) -> Path:
    return DEV_IMAGES / dev_rows()[row]["file"]


def post(url, data: bytes, params=None, content_type="image/jpeg", **kwargs):
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{url}/explain", data=data, params=params, headers=headers, timeout=120, **kwargs)


def decode_npy(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)))


@pytest.mark.slow
def test_explanation_matches_the_in_process_api(server, lite_engine_dir):
    from unioncam_rt.explainer import Explainer

    path = photo(0)
    answer = post(server, path.read_bytes(), {"npy": "1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    reference = Explainer(lite_engine_dir).explain(path)
    assert set(reference.summary()) - {"image"} <= set(body)
    assert body["class_index"] == reference.class_index and body["class_name"] == reference.class_name
    assert body["branch"] == reference.branch and body["method"] == "unioncam"
    assert body["masked_passes"] == reference.masked_passes
    assert body["probability"] == pytest.approx(reference.probability, abs=1e-5)
    cam = decode_npy(body["cam_npy"])
    assert cam.dtype == np.float32 and cam.shape == reference.cam.shape
    np.testing.assert_allclose(cam, reference.cam, atol=1e-4)
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["cam_png"]))))
    assert png.dtype == np.uint8 and png.shape == cam.shape
    np.testing.assert_array_equal(png, np.round(cam * 255).astype(np.uint8))
    assert body["original_size"] == [Image.open(path).height, Image.open(path).width]


def test_multipart_upload_class_by_name_and_model_endpoint(server):
    model = requests.get(f"{server}/v1/model", timeout=10).json()
    assert model["model"] == "efficientnet-lite0" and len(model["labels"]) == model["classes"] == 1000
    assert model["input_size"] == [224, 224] and model["backend"] == "onnxruntime" and model["precision"] == "fp32"
    answer = requests.post(f"{server}/explain", params={"method": "gradcam", "class": "Goldfish"}, timeout=60,
                           files={"image": ("tench.jpg", photo(0).read_bytes(), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["class_index"] == 1 and answer.json()["method"] == "gradcam"


def bad_requests():
    good = photo(0).read_bytes()
    return [
        ("empty body", dict(data=b""), 400, "empty body"),
        ("not an image", dict(data=b"plain text, not an image"), 400, "not an image"),
        ("truncated jpeg", dict(data=truncated_jpeg()), 400, "truncated"),
        ("decompression bomb", dict(data=png_header_only(30000, 30000), content_type="image/png"), 413, "pixels"),
        ("over max pixels", dict(data=png_header_only(2500, 2000), content_type="image/png"), 413, "4000000 pixels"),
        ("over max bytes", dict(data=b"\xff" * (MAX_BYTES + 1)), 413, f"limit of {MAX_BYTES} bytes"),
        ("unknown class", dict(data=good, params={"class": "not-a-class"}), 400, "unknown class name"),
        ("class out of range", dict(data=good, params={"class": "1000"}), 400, "out of range"),
        ("unknown method", dict(data=good, params={"method": "bogus"}), 400, "unknown method 'bogus'"),
        ("bad theta", dict(data=good, params={"theta": "x"}), 400, "not a number"),
        ("theta out of range", dict(data=good, params={"theta": "101"}), 400, "percentile"),
        ("unknown parameter", dict(data=good, params={"classs": "1"}), 400, "unknown query parameter"),
        ("bad budget", dict(data=good, params={"budget": "lots"}), 400, "budget"),
        ("unsupported content type", dict(data=good, content_type="text/plain"), 415, "content type 'text/plain'"),
        ("form-encoded body", dict(data=good, content_type="application/x-www-form-urlencoded"), 415, "curl -F"),
        ("two images in one request", dict(data=None, content_type=None,
                                           files=[("image", ("a.jpg", good)), ("image", ("b.jpg", good))]), 413,
         "2 images in one request"),
        ("multipart without image", dict(data=None, content_type=None, files={"photo": ("a.jpg", good)}), 400,
         "no 'image' field"),
    ]


def test_bad_requests_get_one_line_4xx_and_the_service_survives(server):
    for name, kwargs, status, words in bad_requests():
        answer = post(server, **kwargs)
        assert answer.status_code == status, (name, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert words in error and "\n" not in error, (name, error)
    assert requests.get(f"{server}/explain", timeout=10).status_code == 405
    assert requests.get(f"{server}/nowhere", timeout=10).status_code == 404
    assert requests.get(f"{server}/healthz", timeout=10).json() == {"status": "ok"}
    after = post(server, encoded(photo_like()), {"method": "gradcam"}, content_type="image/png")
    assert after.status_code == 200 and after.json()["class_name"]


def test_concurrent_requests_share_engine_calls(server):
    before = requests.get(f"{server}/v1/stats", timeout=10).json()
    bodies = [photo(row).read_bytes() for row in range(4)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda data: post(server, data, {"method": "gradcam"}), bodies))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    shared = [a.json()["batch"]["images"] for a in answers]
    after = requests.get(f"{server}/v1/stats", timeout=10).json()
    calls = after["explain_calls"] - before["explain_calls"]
    assert after["requests"] - before["requests"] == 4
    assert max(shared) >= 2 and calls < 4, (shared, calls)
    assert len({a.json()["batch"]["call"] for a in answers}) == calls


def invoke_serve(*args):
    import typer
    from typer.testing import CliRunner

    from unioncam_rt.serve.command import serve_command

    app = typer.Typer()
    app.command()(serve_command)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_bad_options_exit_2_in_one_line_before_ray_starts(lite_engine_dir):
    result = invoke_serve("--engine", lite_engine_dir, "--max-memory", "1KB", "--port", free_port())
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = invoke_serve("--engine", lite_engine_dir, "--port", busy.getsockname()[1])
    assert result.exit_code == 2 and "pass another --port" in result.output
    result = invoke_serve("--engine", lite_engine_dir.parent / "missing")
    assert result.exit_code == 2 and "does not exist" in result.output

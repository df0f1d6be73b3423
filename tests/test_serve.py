"""``unioncam-rt serve`` end to end: a server in a subprocess on a free loopback port, real
EfficientNet-Lite0 weights and development photos; explanations, errors, batching, stalled
uploads, a killed replica; and ``serve run`` of the example config on a tiny engine."""

import base64
import io
import json
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
BODY_TIMEOUT_S = 3
STALLED_UPLOADS = 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(url: str, process: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until ``GET /healthz`` answers ok; fails with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).json() == {"status": "ok"}:
                return
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def stop(process: subprocess.Popen) -> None:
    """SIGINT (the service shuts Serve and Ray down), then SIGKILL after 60 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_env() -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def server(lite_engine_dir, tmp_path_factory):
    """``python -m unioncam_rt.serve`` on a free port (a local 2-CPU Ray); its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "unioncam_rt.serve", "--engine", str(lite_engine_dir), "--port", str(port),
               "--num-cpus", "2", "--max-bytes", str(MAX_BYTES), "--max-pixels", str(MAX_PIXELS),
               "--max-batch", "4", "--batch-wait-ms", "300", "--body-timeout-s", str(BODY_TIMEOUT_S)]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=serve_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        yield url
    finally:
        stop(process)


def photo(row: int = 0) -> Path:
    return DEV_IMAGES / dev_rows()[row]["file"]


def post(url, data: bytes, params=None, content_type="image/jpeg", **kwargs):
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{url}/explain", data=data, params=params, headers=headers, timeout=120, **kwargs)


def decode_npy(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)))


def dds_with_unknown_pixel_format() -> bytes:
    """A DDS whose pixel-format flags are 0: Pillow raises NotImplementedError (was a 500)."""
    data = bytearray(encoded(Image.new("RGB", (8, 8)), "DDS"))
    data[80:84] = bytes(4)
    return bytes(data)


@pytest.fixture(scope="module")
def tiny_engine_dir(tmp_path_factory):
    pytest.importorskip("torch")
    from unioncam_rt.exporting.pipeline import ExportConfig, export_model

    from .conftest import tiny_model

    out = tmp_path_factory.mktemp("engines") / "tiny"
    export_model(ExportConfig(tiny_model().net, out, target_layer="trunk", input_size=(32, 32)))
    return out


def example_config_on(engine: Path, port: int) -> dict:
    """``examples/serve-config.yaml`` with ``engine`` for its model, ``port``, and one CPU per
    engine replica (so that it fits any test machine); everything else as shipped."""
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "examples" / "serve-config.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"].pop("model", None)
    app["args"]["engine"] = str(engine)
    for deployment in app["deployments"]:
        if deployment["name"] == "UnionCam":
            deployment["ray_actor_options"]["num_cpus"] = 1
    return config


@pytest.mark.slow
def test_serve_run_of_the_example_config_answers_health_and_explanations(tiny_engine_dir, tmp_path):
    """Ray Serve's own deployment path: ``serve run CONFIG`` (the application builder with the
    config's args and deployment options). First in this file, before the module's server starts."""
    import shutil

    import yaml

    serve_cli = shutil.which("serve", path=str(Path(sys.executable).parent)) or shutil.which("serve")
    if serve_cli is None:
        pytest.skip("Ray's serve command is not installed")
    port = free_port()
    config = tmp_path / "serve-config.yaml"
    config.write_text(yaml.safe_dump(example_config_on(tiny_engine_dir, port)))
    log = tmp_path / "serve-run.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([serve_cli, "run", str(config)], stdout=sink, stderr=subprocess.STDOUT,
                                   env=serve_env(), cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        answer = post(url, encoded(photo_like()), {"method": "unioncam", "class": "3"}, content_type="image/png")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["class_index"] == 3 and body["method"] == "unioncam" and body["branch"] in ("fused", "region")
        assert requests.get(f"{url}/v1/model", timeout=30).json()["classes"] == 10
        refused = post(url, b"not an image", content_type="image/png")
        assert refused.status_code == 400 and "not an image" in refused.json()["error"]
    finally:
        stop(process)


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
        ("class with two minus signs", dict(data=good, params={"class": "--5"}), 400, "neither a class index"),
        ("class in superscript digits", dict(data=good, params={"class": "\u00b2"}), 400, "neither a class index"),
        ("budget in superscript digits", dict(data=good, params={"budget": "\u00b2"}), 400, "budget"),
        ("DDS of an unknown pixel format", dict(data=dds_with_unknown_pixel_format(), content_type="image/x-dds"), 400,
         "corrupt or truncated image (NotImplementedError"),
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


def open_stalled_upload(port: int) -> socket.socket:
    """A connection that sends the headers of a 100000-byte upload and 100 bytes, then stalls."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(b"POST /explain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                       b"Content-Length: 100000\r\n\r\n" + b"\xff" * 100)
    return connection


def read_response(connection: socket.socket, timeout_s: float) -> tuple[int, dict]:
    """Status and JSON body of the response on ``connection`` (it must come within ``timeout_s``)."""
    connection.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < content_length(data):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body[:content_length(data)])


def content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_stalled_uploads_do_not_stop_health_or_explanations_and_get_408(server):
    port = int(server.rsplit(":", 1)[1])
    stalled = [open_stalled_upload(port) for _ in range(STALLED_UPLOADS)]
    try:
        started = time.monotonic()
        health = requests.get(f"{server}/healthz", timeout=10)
        assert health.json() == {"status": "ok"} and time.monotonic() - started < 5
        answer = post(server, photo(1).read_bytes(), {"method": "gradcam"})
        assert answer.status_code == 200 and answer.json()["class_name"], answer.text
        answers = [read_response(connection, BODY_TIMEOUT_S + 30) for connection in stalled]
    finally:
        for connection in stalled:
            connection.close()
    assert {status for status, _ in answers} == {408}
    assert all(body["error"].startswith(f"body not received within {BODY_TIMEOUT_S} s (100 of 100000 bytes")
               for _, body in answers), answers[0]
    assert time.monotonic() - started < BODY_TIMEOUT_S + 60
    assert requests.get(f"{server}/healthz", timeout=10).json() == {"status": "ok"}


def engine_busy(url: str, timeout_s: float = 60) -> dict:
    """The engine replica's stats once it is inside an engine call."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = requests.get(f"{url}/v1/stats", timeout=30).json()
        if stats["explaining"]:
            return stats
        time.sleep(0.05)
    pytest.fail(f"no engine call started within {timeout_s} s")


def test_a_replica_killed_mid_request_answers_503_json_and_is_replaced(server):
    """Last in this file: it kills the engine replica of the module's server."""
    bodies = [photo(row).read_bytes() for row in range(4)]
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(post, server, data, {"method": "unioncam"}) for data in bodies]
        stats = engine_busy(server)
        os.kill(int(stats["replica"].rsplit(":", 1)[1]), signal.SIGKILL)
        answers = [future.result() for future in pending]
    assert all(a.headers["content-type"] == "application/json" for a in answers), [a.text for a in answers]
    assert {a.status_code for a in answers} <= {200, 503} and 503 in {a.status_code for a in answers}
    for refused in (a for a in answers if a.status_code == 503):
        error = refused.json()["error"]
        assert error.startswith("the engine replica stopped") and "may be retried" in error, error
        assert refused.headers["retry-after"] == "1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Serve replaces the replica; a retry is then answered
        retry = post(server, bodies[0], {"method": "gradcam"})
        if retry.status_code == 200:
            break
        assert retry.status_code == 503, retry.text
        time.sleep(1)
    assert retry.status_code == 200, retry.text
    assert requests.get(f"{server}/v1/stats", timeout=30).json()["replica"] != stats["replica"]

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
    ({"class": "--5"}, "class '--5' is neither a class index"),
    ({"class": "\u00b2"}, "class '\u00b2' is neither a class index"),
    ({"class": "-\u00b2"}, "is neither a class index"),
    ({"budget": "\u00b2"}, "budget '\u00b2': give 0"),
    ({"budget": "\u00b2/energy"}, "budget '\u00b2/energy': give 0"),
])
def test_bad_parameters_are_refused_before_the_engine(service, params, words):
    with pytest.raises(UnionCamError, match=words.replace("(", r"\(")):
        service.prepare(encoded(photo_like()), params)


NASTY_VALUES = ["--5", "\u00b2", "-\u00b2", "\u0663", "\U0001d7d1", "1e999", "nan", "-inf", "+3", "-0", " 3 ", "",
                "\x00", "3\x00", "99999999999999999999999", "-99999999999999999999", "0x10", "1_000", "cover\u00b2",
                "\u00b2/energy", "cover0.5:\u00b2", "cover1e9", "0/energy/", "//", "5/energy/bogus", "\u00e9" * 300]


@pytest.mark.parametrize("name", ["class", "theta", "budget", "method", "npy"])
def test_no_query_value_escapes_as_anything_but_a_4xx(service, name):
    """Each value is explained (200) or refused with a one-line `UnionCamError` (400)."""
    data, answered = encoded(photo_like()), 0
    for value in NASTY_VALUES:
        try:
            request = service.prepare(data, {name: value, **({} if name == "method" else {"method": "gradcam"})})
        except UnionCamError as exc:
            assert http_status(exc) == 400 and "\n" not in str(exc), (value, exc)
            continue
        answer = service.explain_batch([request])[0]
        assert isinstance(answer, dict), (name, value, answer)
        answered += 1
    assert answered < len(NASTY_VALUES)


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
               "unioncam_rt.serve.http", "unioncam_rt.serve.deployments", "unioncam_rt.serve.worker",
               "unioncam_rt.jobs.explain", "unioncam_rt.jobs.explain_ray", "unioncam_rt.jobs.evaluate_ray"]
    code = f"import sys, {', '.join(modules)}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- batching, HTTP and the application, without a Ray cluster -------------------------------------------------

def run(coroutine):
    import asyncio

    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_requests_arriving_while_the_engine_works_form_one_next_batch():
    """Ray's @serve.batch formed a batch per arrival during a long engine call (8 clients: 110
    of 141 calls held one image); the queue forms the next batch only when the engine is free."""
    import asyncio

    from unioncam_rt.serve.batching import BatchQueue

    async def engine(items):
        await asyncio.sleep(0.3)
        return [item * 10 for item in items]

    async def scenario():
        queue = BatchQueue(engine, max_batch=8, wait_s=0.005)
        first = asyncio.ensure_future(queue.submit(0))
        later = []
        for i in range(1, 8):  # arrive one by one, 20 ms apart (more than wait_s), while batch 1 runs
            await asyncio.sleep(0.02)
            later.append(asyncio.ensure_future(queue.submit(i)))
        answers = await asyncio.gather(first, *later)
        return answers, dict(queue.batch_sizes)

    answers, sizes = run(scenario())
    assert answers == [i * 10 for i in range(8)]
    assert sizes == {1: 1, 7: 1}


def test_batch_queue_caps_batches_skips_gone_callers_and_fails_a_batch_whole():
    import asyncio

    from unioncam_rt.serve.batching import BatchQueue

    seen = []

    async def engine(items):
        seen.append(list(items))
        await asyncio.sleep(0.05)
        if "bad" in items:
            raise ValueError("engine failed")
        return items

    async def scenario():
        queue = BatchQueue(engine, max_batch=3, wait_s=0.0)
        busy = asyncio.ensure_future(queue.submit("a"))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(queue.submit("gone"))
        rest = [asyncio.ensure_future(queue.submit(x)) for x in ("b", "c", "d", "e")]
        await asyncio.sleep(0.01)
        gone.cancel()
        answers = await asyncio.gather(busy, *rest)
        failing = await asyncio.gather(queue.submit("bad"), queue.submit("x"), return_exceptions=True)
        return answers, failing

    answers, failing = run(scenario())
    assert answers == ["a", "b", "c", "d", "e"]
    assert seen[:3] == [["a"], ["b", "c", "d"], ["e"]]  # "gone" left before its batch formed; at most 3 a batch
    assert [type(f).__name__ for f in failing] == ["ValueError", "ValueError"]


def http_request(path="/explain", method="POST", headers=(), body_chunks=None, stall=False):
    """A Starlette request whose body arrives as ``body_chunks``, then stalls if ``stall``."""
    import asyncio

    from starlette.requests import Request

    chunks = list(body_chunks or [])

    async def receive():
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks) or stall}
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "scheme": "http",
             "server": ("127.0.0.1", 8000), "root_path": ""}
    return Request(scope, receive)


class SlowEngine:
    """An `EngineClient` whose explanations take ``seconds``."""

    def __init__(self, seconds=0.0):
        self.seconds = seconds
        self.calls = 0

    async def explain(self, data, params):
        import asyncio

        self.calls += 1
        await asyncio.sleep(self.seconds)
        return {"bytes": len(data)}

    async def model_info(self):
        return {"model": "fake"}

    async def stats(self):
        return {"requests": self.calls}


def answer_of(response) -> tuple[int, dict]:
    import json

    return response.status_code, json.loads(response.body)


def test_a_stalled_body_is_answered_408_at_the_deadline_and_never_reaches_the_engine():
    import time

    from unioncam_rt.serve.http import handle
    from unioncam_rt.serve.service import ServiceSettings

    engine = SlowEngine()
    request = http_request(headers=[("Content-Type", "image/png"), ("Content-Length", "100000")],
                           body_chunks=[b"\x89PNG" + b"\x00" * 96], stall=True)
    started = time.monotonic()
    status, body = answer_of(run(handle(request, engine, ServiceSettings(body_timeout_s=0.3))))
    assert status == 408 and 0.3 <= time.monotonic() - started < 5
    assert body["error"] == ("body not received within 0.3 s (100 of 100000 bytes arrived); send the whole body "
                             "at once")
    assert engine.calls == 0
    complete = http_request(headers=[("Content-Type", "image/png")], body_chunks=[b"abc", b"def"])
    assert answer_of(run(handle(complete, engine, ServiceSettings(body_timeout_s=0.3)))) == (200, {"bytes": 6})


def test_a_body_cut_short_by_the_client_is_a_request_error_not_a_bug():
    from starlette.requests import Request

    from unioncam_rt.serve.http import handle
    from unioncam_rt.serve.service import ServiceSettings

    messages = [{"type": "http.request", "body": b"\xff" * 10, "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    request = Request(http_request().scope, receive)
    status, body = answer_of(run(handle(request, SlowEngine(), ServiceSettings())))
    assert (status, body) == (400, {"error": "body incomplete: the client disconnected after 10 bytes"})


def test_health_is_answered_while_explanations_and_stalled_uploads_wait():
    import asyncio
    import time

    from unioncam_rt.serve.http import handle
    from unioncam_rt.serve.service import ServiceSettings

    settings = ServiceSettings(body_timeout_s=5)
    engine = SlowEngine(seconds=5)

    async def scenario():
        busy = [asyncio.ensure_future(handle(http_request(body_chunks=[b"x"]), engine, settings)) for _ in range(4)]
        stalled = [asyncio.ensure_future(handle(http_request(body_chunks=[b"x"], stall=True), engine, settings))
                   for _ in range(100)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        health = await handle(http_request("/healthz", "GET"), engine, settings)
        waited = time.monotonic() - started
        for task in busy + stalled:
            task.cancel()
        return health, waited

    health, waited = run(scenario())
    assert answer_of(health) == (200, {"status": "ok"}) and waited < 0.5


def test_a_stopped_engine_replica_is_answered_503_json_that_may_be_retried():
    pytest.importorskip("ray")
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from unioncam_rt.serve.deployments import ReplicaClient
    from unioncam_rt.serve.http import handle
    from unioncam_rt.serve.service import ServiceSettings

    class Method:
        def __init__(self, error):
            self.error = error

        def remote(self, *args):
            async def fail():
                raise self.error
            return fail()

    class Handle:
        def __init__(self, error):
            self.explain = self.stats = self.model_info = Method(error)

    for error, words in [(ActorDiedError(), "may be retried"), (BackPressureError(num_queued_requests=5,
                                                                                    max_queued_requests=5), "busy")]:
        response = run(handle(http_request(body_chunks=[b"x"]), ReplicaClient(Handle(error)), ServiceSettings()))
        status, body = answer_of(response)
        assert status == 503 and words in body["error"] and "\n" not in body["error"], body
        assert not body["error"].startswith("internal error"), body
        assert response.headers["retry-after"] == "1" and response.media_type == "application/json"


def test_engine_worker_batches_concurrent_requests(service):
    import asyncio

    from unioncam_rt.serve.worker import BatchOptions, EngineWorker

    worker = EngineWorker(service, BatchOptions(max_batch=4, wait_s=0.2))
    data = encoded(photo_like())

    async def scenario():
        return await asyncio.gather(*[worker.explain(data, {"method": "gradcam"}) for _ in range(4)],
                                    worker.explain(b"not an image", {}), worker.explain(data, {"class": "--5"}))

    answers = run(scenario())
    assert [a["batch"]["images"] for a in answers[:4]] == [4, 4, 4, 4]
    assert len({a["batch"]["call"] for a in answers[:4]}) == 1
    not_an_image, bad_class = answers[4:]
    assert (not_an_image.status, not_an_image.message) == (400, "body (12 bytes): not an image Pillow can read")
    assert bad_class.status == 400 and bad_class.message.startswith("class '--5' is neither a class index")


def test_application_builder_arguments_are_checked_in_one_line():
    from unioncam_rt.serve.app import APP_ARGS, app_args

    values = app_args({"engine": "/models/x", "max_batch": "4", "batch_wait_ms": 5})
    assert values["max_batch"] == 4 and values["batch_wait_ms"] == 5.0 and values["body_timeout_s"] == 30.0
    assert set(values) == set(APP_ARGS)
    for args, words in [({"engin": "x"}, "unknown argument 'engin'"), ({"max_batch": "lots"}, "max_batch = 'lots'"),
                        ({"max_batch": 0}, "at least 1"), ({"body_timeout_s": 0}, "must be positive"),
                        ({"replicas": True}, "replicas = True"), ({"batch_wait_ms": "nan"}, "must not be negative")]:
        with pytest.raises(UnionCamError, match=words):
            app_args(args)


def test_example_config_is_a_valid_serve_config_that_builds(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("torch")
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from unioncam_rt.exporting.pipeline import ExportConfig, export_model
    from unioncam_rt.serve.app import build_app

    from .conftest import tiny_model

    config = yaml.safe_load((Path(__file__).parents[1] / "examples" / "serve-config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    app = schema.applications[0]
    assert app.import_path == "unioncam_rt.serve.app:build_app"
    assert {d.name for d in app.deployments} == {"UnionCam", "UnionCamHTTP"}
    engine = tmp_path / "tiny"
    export_model(ExportConfig(tiny_model().net, engine, target_layer="trunk", input_size=(32, 32)))
    built = build_app({**app.args, "engine": str(engine)})
    assert type(built).__name__ == "Application"
    with pytest.raises(UnionCamError, match="unknown argument"):
        build_app({**app.args, "engine": str(engine), "bogus": 1})

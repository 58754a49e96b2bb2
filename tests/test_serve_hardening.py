"""`clip-adapter serve` under hostile or careless clients: idle uploads, hang-ups, probing, bad binds (loopback only).

Every test that talks to a real server bounds each socket operation (10 s) and each wait, so a
regression fails instead of hanging.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from clip_adapter.api import AdaptedCLIP  # noqa: E402
from clip_adapter.apps.serve import ServeLimits, create_app, serve_in_background  # noqa: E402
from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.pipeline import FeatureConfig  # noqa: E402

BOUND_S = 10.0  # the longest any single wait may take


from test_serve import build_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


class GatedBackbone:
    """The real backbone, holding each encoder call until ``gate`` is set (so a request stays in flight)."""

    def __init__(self, inner, gate: threading.Event) -> None:
        self.inner, self.gate, self.entered = inner, gate, threading.Event()

    def encode_images(self, pixels):
        self.entered.set()
        assert self.gate.wait(BOUND_S)
        return self.inner.encode_images(pixels)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class LocalCheckpointBackbone:
    """The real backbone, described as if loaded from local files (a checkpoint path, a model folder)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def describe(self):
        return {
            **self.inner.describe(),
            "name": "hf:/srv/secret-models/clip-vit-b32",
            "pretrained": "/home/alice/checkpoints/ViT-B-32-quickgelu.pt",
        }

    def __getattr__(self, name):
        return getattr(self.inner, name)


def png_bytes(size=(32, 32), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def one_image():
    return [("images", ("ok.png", png_bytes(), "image/png"))]


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def idle_upload(url: str, declared: int = 100_000, sent: bytes = b"12345") -> socket.socket:
    """A connection that sends the headers of a ``declared``-byte upload and ``sent``, then nothing."""
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=BOUND_S)
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % declared + sent
    )
    return sock


def read_until_closed(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on ``sock``; fails unless the server then closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
    return int(lines[0].split()[1]), headers, body


def health(client: httpx.Client) -> dict:
    return client.get("/health").json()


def test_idle_uploads_do_not_take_model_slots_and_time_out_with_408(world):
    model, images, _ = world
    # The reported attack: as many idle uploads as --max-concurrency (8), each 5 bytes into 100,000.
    app = create_app(model, ServeLimits(max_concurrency=8, body_timeout_s=2.0, max_wait_ms=0))
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=BOUND_S) as client:
        idle = [idle_upload(url) for _ in range(8)]
        try:
            wait_until(lambda: health(client)["uploading"] == 8, "the idle uploads to reach the app")
            started = time.monotonic()
            answer = client.post("/predict", files=[("images", (images[0].name, images[0].read_bytes(), "image/png"))])
            assert answer.status_code == 200, answer.text  # the model slots are free: uploads do not hold them
            status = client.get("/health")
            assert status.status_code == 200 and status.json()["status"] == "ok"
            refusals = [read_until_closed(sock) for sock in idle]  # each is answered, then closed
            assert time.monotonic() - started < BOUND_S
        finally:
            for sock in idle:
                sock.close()
        assert health(client)["uploading"] == 0
    for code, headers, body in refusals:
        error = json.loads(body)
        assert code == 408 and headers.get("connection") == "close"
        assert set(error) == {"error", "kind", "part"} and error["kind"] == "body-timeout"
        assert "--body-timeout-s" in error["error"] and "\n" not in error["error"]


def test_uploads_beyond_max_uploads_get_503_and_health_says_saturated(world):
    model, _, _ = world
    app = create_app(model, ServeLimits(max_uploads=2, body_timeout_s=2.0))
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=BOUND_S) as client:
        idle = [idle_upload(url) for _ in range(2)]
        try:
            wait_until(lambda: client.get("/health").status_code == 503, "/health to report the saturation")
            status = client.get("/health").json()
            refused = client.post("/predict", files=one_image())
            for sock in idle:
                read_until_closed(sock)
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: client.get("/health").status_code == 200, "/health to recover")
        after = client.post("/predict", files=one_image())
    assert status["status"] == "busy" and status["uploading"] == 2 and status["max_uploads"] == 2
    assert (
        refused.status_code == 503 and refused.json()["kind"] == "busy" and "--max-uploads" in refused.json()["error"]
    )
    assert after.status_code == 200


def test_health_is_503_while_every_model_slot_is_taken(world):
    model, images, _ = world
    gate = threading.Event()
    app_model = AdaptedCLIP(model.classifier, GatedBackbone(model.backbone, gate), FeatureConfig())
    with serve_in_background(create_app(app_model, ServeLimits(max_concurrency=1, max_wait_ms=0))) as url:
        with httpx.Client(base_url=url, timeout=BOUND_S) as client:
            worker = threading.Thread(
                target=client.post, args=("/predict",), kwargs={"files": one_image()}, daemon=True
            )
            worker.start()
            try:
                assert app_model.backbone.entered.wait(BOUND_S)
                busy = client.get("/health")
            finally:
                gate.set()
                worker.join(BOUND_S)
            idle = client.get("/health")
    assert busy.status_code == 503 and busy.json()["status"] == "busy" and busy.json()["in_flight"] == 1
    assert idle.status_code == 200 and idle.json()["status"] == "ok" and idle.json()["in_flight"] == 0


def test_a_client_hanging_up_mid_upload_is_not_an_internal_error(world, caplog):
    model, _, _ = world
    caplog.set_level(logging.DEBUG)
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    with serve_in_background(create_app(model, ServeLimits(body_timeout_s=5.0))) as url:
        uvicorn_log.addHandler(caplog.handler)  # after uvicorn configured its logging (which drops handlers)
        try:
            with httpx.Client(base_url=url, timeout=BOUND_S) as client:
                sock = idle_upload(url)
                wait_until(lambda: health(client)["uploading"] == 1, "the upload to reach the app")
                sock.close()
                wait_until(lambda: health(client)["uploading"] == 0, "the server to notice the hang-up")
                assert client.post("/predict", files=one_image()).status_code == 200
        finally:
            uvicorn_log.removeHandler(caplog.handler)
    ours = [r for r in caplog.records if r.name.startswith(("clip_adapter", "uvicorn"))]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.WARNING], [r.getMessage() for r in ours]
    assert len([r for r in ours if r.name == "clip_adapter.apps.serve"]) <= 1
    assert all("\n" not in r.getMessage() for r in ours)


def test_info_publishes_names_and_ids_not_paths_or_versions(world):
    import platform

    import torch

    model, _, _ = world
    local = AdaptedCLIP(model.classifier, LocalCheckpointBackbone(model.backbone), FeatureConfig())
    with TestClient(create_app(local)) as client:
        public = client.get("/info")
    with TestClient(create_app(local, info_full=True)) as client:
        full = client.get("/info").json()
    info = public.json()
    assert "/home/alice" not in public.text and "/srv/secret-models" not in public.text
    assert torch.__version__ not in public.text and "versions" not in info
    assert info["backbone"]["pretrained"] == "ViT-B-32-quickgelu.pt"
    assert info["backbone"]["name"] == "hf:clip-vit-b32"
    assert info["backbone"]["id"] == model.backbone.id  # the weights' content hash identifies them
    assert info["classes"] == model.classnames
    assert full["backbone"]["pretrained"] == "/home/alice/checkpoints/ViT-B-32-quickgelu.pt"
    assert full["versions"]["python"] == platform.python_version()


def test_unknown_routes_and_methods_answer_the_error_shape_and_docs_are_off(world):
    model, _, _ = world
    with TestClient(create_app(model)) as client:
        answers = {path: client.get(path) for path in ("/nope", "/docs", "/redoc", "/openapi.json", "/predict")}
        put = client.put("/health")
    with TestClient(create_app(model, docs=True)) as client:
        schema = client.get("/openapi.json")
    for path, answer in answers.items():
        body = answer.json()
        assert set(body) == {"error", "kind", "part"} and "\n" not in body["error"], (path, body)
    assert all(
        answers[p].status_code == 404 and answers[p].json()["kind"] == "not-found"
        for p in ("/nope", "/docs", "/redoc", "/openapi.json")
    )
    assert answers["/predict"].status_code == 405 and answers["/predict"].json()["kind"] == "method-not-allowed"
    assert answers["/predict"].headers["allow"] == "POST" and "POST" in answers["/predict"].json()["error"]
    assert put.status_code == 405 and put.json()["kind"] == "method-not-allowed"
    assert schema.status_code == 200 and "/predict" in schema.json()["paths"]


def test_base64_with_line_breaks_is_accepted_and_the_alphabet_still_checked(world):
    model, images, _ = world
    data = images[0].read_bytes()
    wrapped = base64.encodebytes(data).decode()  # what base64(1) writes: 76-column lines
    assert "\n" in wrapped.strip()
    with TestClient(create_app(model)) as client:
        plain = client.post("/predict", json={"images": [base64.b64encode(data).decode()]})
        lines = client.post("/predict", json={"images": [wrapped, wrapped.replace("\n", "\r\n"), " " + wrapped + "\t"]})
        bad = client.post("/predict", json={"images": [wrapped[:40] + "$" + wrapped[40:]]})
        unicode_space = client.post("/predict", json={"images": [wrapped.replace("\n", "\u2028")]})
    assert plain.status_code == 200 and lines.status_code == 200, lines.text
    assert [r["label"] for r in lines.json()["predictions"]] == [plain.json()["predictions"][0]["label"]] * 3
    assert bad.status_code == 400 and bad.json()["kind"] == "bad-base64" and bad.json()["part"] == "images[0]"
    assert unicode_space.status_code == 400 and unicode_space.json()["kind"] == "bad-base64"


def test_serve_cli_unresolvable_host_is_one_error_line_before_any_warning(world, monkeypatch, capsys):
    real = socket.getaddrinfo

    def no_such_host(host, *args, **kwargs):  # deterministic and offline: no resolver is asked
        if host == "bogus.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    assert cli_main(["serve", str(world[2]), "--host", "bogus.invalid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "bogus.invalid" in err and "warning" not in err


def test_serve_cli_port_taken_is_one_error_line_and_nothing_announced(world, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["serve", str(world[2]), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and f"127.0.0.1:{port}" in err and "serving" not in err


def test_serve_cli_port_0_announces_the_real_port_once_listening(world):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLIP_ADAPTER_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "clip_adapter", "serve", str(world[2]), "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        announced = ""
        deadline = time.monotonic() + 60  # the subprocess imports torch and loads the artifact
        while "serving" not in announced and time.monotonic() < deadline and process.poll() is None:
            try:
                announced = lines.get(timeout=1)
            except queue.Empty:
                pass
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", announced)
        assert match, announced
        port = int(match.group(1))
        assert port != 0
        answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=BOUND_S)  # listening as soon as announced
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
    finally:
        process.terminate()
        try:
            process.wait(BOUND_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(BOUND_S)

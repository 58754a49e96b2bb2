"""`clip-adapter serve`: the HTTP app on the toy world (loopback only), good and bad requests, batching."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import clip_adapter  # noqa: E402
from clip_adapter.api import AdaptedCLIP  # noqa: E402
from clip_adapter.apps.serve import ServeLimits, create_app, serve_in_background  # noqa: E402
from clip_adapter.cli import main as cli_main  # noqa: E402
from clip_adapter.pipeline import FeatureConfig  # noqa: E402
from clip_adapter.toyworld import write_task_dataset  # noqa: E402


class CountingBackbone:
    """The real backbone, counting encoder calls (and optionally holding each call until released)."""

    def __init__(self, inner, gate: threading.Event | None = None) -> None:
        self.inner, self.calls, self.gate, self.entered = inner, [], gate, threading.Event()

    def encode_images(self, pixels):
        self.calls.append(len(pixels))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        return self.inner.encode_images(pixels)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


def build_world(tmp_path_factory):
    """A small trained toy artifact, its model and test images (shared with test_serve_hardening)."""
    work = tmp_path_factory.mktemp("serve")
    photos = write_task_dataset("color", "photo", work / "photos", 1, 1, 2, seed=0)
    backbone = clip_adapter.backbones.create_backbone("toy", precision="fp32")
    model = clip_adapter.fit(
        photos, backbone=backbone, shots=1, cache_dir=work / "cache", epochs=2, alpha=0.6, alpha_grid=()
    )
    artifact = model.save_pretrained(work / "artifact")
    images = sorted((photos / "images").rglob("test_*.png"))
    return model, images, artifact


def counted(model, gate=None) -> AdaptedCLIP:
    return AdaptedCLIP(model.classifier, CountingBackbone(model.backbone, gate), FeatureConfig())


def png_bytes(size=(32, 32), colour=(200, 30, 30), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, fmt)
    return buffer.getvalue()


def files(*paths):
    return [("images", (p.name, p.read_bytes(), "image/png")) for p in paths]


def test_health_and_info(world):
    model, _, _ = world
    with TestClient(create_app(model)) as client:
        health = client.get("/health")
        info = client.get("/info").json()
    with TestClient(create_app(model, info_full=True)) as client:
        full = client.get("/info").json()
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["in_flight"] == 0
    assert info["classes"] == model.classnames and info["method"] == "clip-adapter"
    assert info["backbone"]["id"] == model.backbone.id
    assert "versions" not in info  # exact versions only with info_full (--info-full)
    assert {"clip-adapter", "torch", "fastapi"} <= set(full["versions"])
    assert info["limits"]["max_batch"] == ServeLimits().max_batch and info["limits"]["body_timeout_s"] == 30.0


def test_predict_matches_the_library(world):
    model, images, _ = world
    expected = model.predict(images[:3], top_k=3)
    with TestClient(create_app(model)) as client:
        multipart = client.post("/predict?top_k=3", files=files(*images[:3]))
        as_json = client.post(
            "/predict", json={"images": [base64.b64encode(p.read_bytes()).decode() for p in images[:3]], "top_k": 3}
        )
    assert multipart.status_code == 200 and as_json.status_code == 200
    for answer in (multipart.json()["predictions"], as_json.json()["predictions"]):
        assert [r["label"] for r in answer] == [r["label"] for r in expected]
        for got, want in zip(answer, expected):
            assert [c for c, _ in got["top_k"]] == [c for c, _ in want["top_k"]]
            assert got["score"] == pytest.approx(want["score"], abs=1e-4)
    assert multipart.json()["predictions"][0]["path"] == f"images[0] ({images[0].name})"  # the upload's part name
    assert [set(r) for r in multipart.json()["predictions"]] == [set(r) for r in expected]  # one record shape


def _bomb_header() -> bytes:
    return png_bytes((300, 300))  # 90,000 pixels, refused by max_pixels=50,000 below


BAD_REQUESTS = {
    "not an image": (
        dict(files=[("images", ("notes.txt", b"hello, not pixels", "text/plain"))]),
        422,
        "not-an-image",
        "notes.txt",
    ),
    "truncated image": (
        dict(files=[("images", ("cut.png", png_bytes()[:60], "image/png"))]),
        422,
        "corrupt-image",
        "cut.png",
    ),
    "too many pixels": (
        dict(files=[("images", ("big.png", _bomb_header(), "image/png"))]),
        413,
        "too-many-pixels",
        "big.png",
    ),
    "extreme aspect ratio": (
        dict(files=[("images", ("strip.png", png_bytes((202, 2)), "image/png"))]),
        422,
        "extreme-aspect-ratio",
        "strip.png",
    ),
    "no file": (
        dict(
            content=b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nno image\r\n--b--\r\n',
            headers={"content-type": "multipart/form-data; boundary=b"},
        ),
        400,
        "no-file",
        None,
    ),
    "empty body": (dict(content=b"", headers={"content-type": "multipart/form-data; boundary=x"}), 400, None, None),
    "body too large": (
        dict(files=[("images", ("huge.bmp", png_bytes((200, 200), fmt="BMP"), "image/bmp"))]),
        413,
        "body-too-large",
        None,
    ),
    "too many images": (
        dict(files=[("images", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)]),
        400,
        "too-many-images",
        None,
    ),
    "far too many images": (
        dict(files=[("images", (f"{i}.png", b"x", "image/png")) for i in range(40)]),
        400,
        "too-many-images",
        None,
    ),
    "wrong content type": (
        dict(content=b"abc", headers={"content-type": "text/plain"}),
        415,
        "unsupported-content-type",
        None,
    ),
    "bad base64": (dict(json={"images": ["not base64!"]}), 400, "bad-base64", "images[0]"),
    "json without images": (dict(json={"pictures": []}), 400, "malformed-body", None),
    "top_k zero": (
        dict(files=[("images", ("a.png", png_bytes(), "image/png"))], params={"top_k": "0"}),
        400,
        "bad-top-k",
        None,
    ),
    "top_k text": (
        dict(files=[("images", ("a.png", png_bytes(), "image/png"))], params={"top_k": "three"}),
        400,
        "bad-top-k",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_are_one_line_4xx_naming_the_part(world, case):
    model, _, _ = world
    request, status, kind, part = BAD_REQUESTS[case]
    limits = ServeLimits(max_pixels=50_000, max_images=3, max_request_mb=100_000 / 2**20)
    app_model = counted(model)
    with TestClient(create_app(app_model, limits)) as client:
        response = client.post("/predict", **request)
        healthy = client.post("/predict", files=[("images", ("ok.png", png_bytes(), "image/png"))])
    body = response.json()
    assert response.status_code == status, body
    assert "\n" not in body["error"] and body["error"]
    if kind:
        assert body["kind"] == kind
    if part:
        assert part in body["part"] and part in body["error"]
    assert healthy.status_code == 200  # the server is unharmed and the refused request never reached the encoder
    assert app_model.backbone.calls == [1]


def test_concurrent_requests_share_one_encoder_call(world):
    model, images, _ = world
    app_model = counted(model)
    # Batches of 4 with a long wait: 8 concurrent one-image requests fill exactly two batches.
    app = create_app(app_model, ServeLimits(max_batch=4, max_wait_ms=5000, max_concurrency=8))
    expected = model.predict(images[:8])
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert url.startswith("http://127.0.0.1:")

        def send(path):
            return client.post("/predict", files=files(path)).json()["predictions"][0]["label"]

        with ThreadPoolExecutor(8) as pool:
            labels = list(pool.map(send, images[:8]))
    assert sorted(app_model.backbone.calls) == [4, 4]
    assert labels == [r["label"] for r in expected]


def test_no_wait_means_one_call_per_sequential_request(world):
    model, images, _ = world
    app_model = counted(model)
    with TestClient(create_app(app_model, ServeLimits(max_wait_ms=0))) as client:
        for path in images[:3]:
            assert client.post("/predict", files=files(path)).status_code == 200
        assert client.post("/predict", files=files(*images[:3])).status_code == 200
    assert app_model.backbone.calls == [1, 1, 1, 3]  # several images of one request: still one call


def test_requests_beyond_max_concurrency_get_503(world):
    model, images, _ = world
    gate = threading.Event()
    app_model = counted(model, gate)
    with serve_in_background(create_app(app_model, ServeLimits(max_concurrency=1, max_wait_ms=0))) as url:
        with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/predict", files=files(images[0]))
            assert app_model.backbone.entered.wait(30)  # the first request is inside the encoder
            busy = client.post("/predict", files=files(images[1]))
            gate.set()
            assert first.result().status_code == 200
            after = client.post("/predict", files=files(images[1]))
    assert busy.status_code == 503 and busy.json()["kind"] == "busy"
    assert after.status_code == 200


def test_serve_cli_without_the_extra_is_one_line(world, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert cli_main(["serve", str(world[2])]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "uvicorn" in err and "pip install" in err


@pytest.mark.parametrize(
    "option",
    [
        ["--max-wait-ms", "-1"],
        ["--max-batch", "0"],
        ["--port", "70000"],
        ["--max-request-mb", "0"],
        ["--body-timeout-s", "0"],
        ["--max-uploads", "0"],
    ],
)
def test_serve_cli_refuses_bad_limits(world, option, capsys):
    assert cli_main(["serve", str(world[2]), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_serve_cli_listens_on_loopback_by_default():
    from clip_adapter.cli import build_parser

    assert build_parser().parse_args(["serve", "artifact"]).host == "127.0.0.1"

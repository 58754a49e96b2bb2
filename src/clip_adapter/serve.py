"""An HTTP inference server for an artifact (FastAPI): micro-batched, bounded, loopback by default.

Endpoints:

* ``POST /predict?top_k=5`` — images as ``multipart/form-data`` files (any field name; use
  ``images``, repeated, for several) **or** ``application/json`` ``{"images": ["<base64>", …],
  "top_k": 5}``. Answer: ``{"predictions": [{"name", "label", "score", "top_k": [[label,
  probability], …]}, …]}`` in upload order (equal probabilities rank by class order).
* ``GET /health`` — ``{"status": "ok"}``; ``GET /info`` — classes, method, backbone, limits, versions.

Every refusal is one JSON object ``{"error": "<one line naming the part>", "kind": …, "part": …}``:
400 (no image, malformed body or base64, bad ``top_k``, too many images), 413 (body over
``max_request_mb``, image over ``max_pixels``), 415 (another content type), 422 (a part that is
not an image, corrupt, a decompression bomb, an extreme aspect ratio: the project's
:func:`~clip_adapter.data.images.load_rgb` rules), 503 (``max_concurrency`` requests already in
flight; retry later).

Micro-batching: each request decodes its images (in a worker thread) and queues them; one
worker takes up to ``max_batch`` queued images, waiting at most ``max_wait_ms`` after the first
for more, and runs them through ONE encoder call and the head, then answers every request
whose images were in the batch.

Example:
    >>> app = create_app(model)  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""


import asyncio
import base64
import binascii
import contextlib
import json
import logging
import platform
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import __version__
from .data.images import BadImage, load_rgb
from .errors import ConfigError
from .features.transforms import eval_view
from .io import one_line
from .metrics import top_k as ranked

log = logging.getLogger(__name__)
SERVE_HINT = "install the 'serve' extra: pip install 'clip-adapter[serve]' (fastapi, uvicorn, python-multipart)"
MAX_TOP_K = 1000


@dataclass(frozen=True)
class ServeLimits:
    """Batching and request limits (the ``clip-adapter serve`` options)."""

    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_request_mb: float = 20.0
    max_pixels: int = 25_000_000
    max_images: int = 16
    max_concurrency: int = 8

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_pixels", "max_images", "max_concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"--max-wait-ms must be in 0..10000, got {self.max_wait_ms}")
        if not 0 < self.max_request_mb <= 4096:
            raise ConfigError(f"--max-request-mb must be in (0, 4096], got {self.max_request_mb}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)


class RequestError(Exception):
    """A refused request: HTTP ``status``, a one-line message, the ``kind`` and the ``part`` at fault."""

    def __init__(self, status: int, message: str, kind: str, part: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.part = status, kind, part

    def body(self) -> dict[str, Any]:
        return {"error": one_line(str(self)), "kind": self.kind, "part": self.part}


class MicroBatcher:
    """Queues single images from concurrent requests and runs them in batches, one ``run_batch`` call each.

    ``run_batch(pixels [B, 3, S, S]) -> [B, C]`` runs on one dedicated thread, so the event loop
    keeps accepting requests while the encoder works.
    """

    def __init__(self, run_batch: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_ms: float) -> None:
        self.run_batch, self.max_batch, self.max_wait = run_batch, max_batch, max_wait_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-adapter-encoder")
        self.batches = 0

    async def submit(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """The ``[N, C]`` outputs for ``N`` preprocessed images, in order."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in pixels]
        for item in zip(pixels, futures):
            self.queue.put_nowait(item)
        return torch.stack(await asyncio.gather(*futures))

    async def run(self) -> None:
        """The worker loop (a task for the server's lifetime)."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            await self._answer(loop, [(p, f) for p, f in batch if not f.done()])  # a gone client's images are dropped

    async def _answer(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        if not batch:
            return
        self.batches += 1
        try:
            outputs = await loop.run_in_executor(self.executor, self.run_batch, torch.stack([p for p, _ in batch]))
        except Exception as exc:  # every waiting request gets the failure; the worker carries on
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), row in zip(batch, outputs):
            if not future.done():
                future.set_result(row)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def require_serve_extra() -> None:
    """A one-line ConfigError naming what to install when FastAPI, uvicorn or python-multipart is missing."""
    import importlib.util

    missing = [name for name, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python-multipart", "python_multipart"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"clip-adapter serve needs {', '.join(missing)}: {SERVE_HINT}")


def create_app(model: Any, limits: ServeLimits | None = None) -> Any:
    """A FastAPI app serving ``model`` (an :class:`~clip_adapter.api.AdaptedCLIP`: ``classifier`` + ``backbone``).

    See the module docstring for the endpoints, the limits and the error codes.
    """
    require_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    limits = limits or ServeLimits()
    state = _ServerState(model, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(title="clip-adapter", version=__version__, lifespan=lifespan)
    app.state.server = state

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return state.info()

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        try:
            return await state.predict(request)
        except RequestError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception as exc:  # a bug or a failed encoder call: one line to the client, the traceback to the log
            log.exception("POST /predict failed")
            return JSONResponse({"error": one_line(f"internal error ({exc.__class__.__name__}: {exc})"), "kind": "internal",
                                 "part": None}, status_code=500)

    return app


class _ServerState:
    """What the endpoints share: the model, the limits, the batcher and the in-flight count."""

    def __init__(self, model: Any, limits: ServeLimits) -> None:
        self.model, self.limits = model, limits
        self.batcher: MicroBatcher | None = None
        self.worker: asyncio.Task | None = None
        self.in_flight = 0
        self.tmp: Path | None = None

    def start(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="clip-adapter-serve-"))  # uploads are decoded from files, as on disk
        self.batcher = MicroBatcher(self._run_batch, self.limits.max_batch, self.limits.max_wait_ms)
        self.worker = asyncio.get_running_loop().create_task(self.batcher.run())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        if self.batcher is not None:
            self.batcher.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @torch.inference_mode()
    def _run_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.model.backbone.encode_images(pixels).float().cpu()  # the one encoder call of the batch
        return torch.softmax(self.model.classifier.logits(features), dim=1)

    def info(self) -> dict[str, Any]:
        clf = self.model.classifier
        return {
            "method": clf.method,
            "classes": list(clf.classnames),
            "templates": list(clf.templates),
            "method_config": clf.head.config.to_dict(),
            "backbone": self.model.backbone.describe(),
            "limits": asdict(self.limits),
            "input": {"multipart": "image files, any field name (e.g. images, repeated)",
                      "json": '{"images": ["<base64>", ...], "top_k": 5}'},
            "versions": _versions(),
        }

    async def predict(self, request: Any) -> dict[str, Any]:
        if self.in_flight >= self.limits.max_concurrency:  # one event loop: this check-and-increment cannot race
            raise RequestError(503, f"server busy: {self.in_flight} requests in flight (--max-concurrency); retry later", "busy")
        self.in_flight += 1
        try:
            parts, top_k = await _read_request(request, self.limits)
            from starlette.concurrency import run_in_threadpool

            pixels = await run_in_threadpool(self._decode_all, parts)
            assert self.batcher is not None
            probs = await self.batcher.submit(pixels)
            return {"predictions": self._records([name for name, _ in parts], probs, top_k)}
        finally:
            self.in_flight -= 1

    def _decode_all(self, parts: list[tuple[str, bytes]]) -> list[torch.Tensor]:
        assert self.tmp is not None
        pre = self.model.backbone.preprocess
        return [eval_view(decode_upload(name, data, self.limits.max_pixels, self.tmp), pre) for name, data in parts]

    def _records(self, names: list[str], probs: torch.Tensor, k: int) -> list[dict[str, Any]]:
        classes = self.model.classifier.classnames
        values, indices = ranked(probs, min(k, probs.shape[1]))
        records = []
        for n, name in enumerate(names):
            top = [[classes[int(i)], round(float(v), 6)] for v, i in zip(values[n], indices[n])]
            records.append({"name": name, "label": top[0][0], "score": top[0][1], "top_k": top})
        return records


@contextlib.contextmanager
def serve_in_background(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of ``host`` in a thread; yield its base URL, stop on exit.

    For tests, notebooks and the load benchmark (loopback by default).

    Example:
        >>> with serve_in_background(create_app(model)) as url:  # doctest: +SKIP
        ...     httpx.get(url + "/health").json()
        {'status': 'ok'}
    """
    import uvicorn

    # proto=IPPROTO_TCP, as uvicorn's own sockets have: asyncio then sets TCP_NODELAY on each connection
    # (with proto 0 it does not, and every small response waits ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="clip-adapter-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            time.sleep(0.01)
        port = sock.getsockname()[1]
        yield f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def decode_upload(name: str, data: bytes, max_pixels: int, tmp_dir: Path) -> Any:
    """Decode one uploaded image by the project's rules (:func:`load_rgb`), plus the server's pixel limit.

    Raises RequestError (413 for too many pixels, 422 for anything ``load_rgb`` refuses) naming ``name``.
    """
    _check_pixels(name, data, max_pixels)
    with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".upload") as handle:
        handle.write(data)
        handle.flush()
        try:
            return load_rgb(handle.name)[0]
        except BadImage as exc:
            message = str(exc).replace(f"image {handle.name}", f"image {name}").replace(handle.name, name)
            raise RequestError(422, message, exc.kind, name) from None


def _check_pixels(name: str, data: bytes, max_pixels: int) -> None:
    """Refuse an image over ``max_pixels`` from its header alone, before anything is decoded."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # not an image (or a bomb Pillow refuses): load_rgb reports it with the project's wording
        return
    if width * height > max_pixels:
        raise RequestError(413, f"image {name} is {width}x{height} = {width * height} pixels, over the server's "
                                f"limit of {max_pixels} (--max-pixels)", "too-many-pixels", name)


async def _read_request(request: Any, limits: ServeLimits) -> tuple[list[tuple[str, bytes]], int]:
    """``[(part name, bytes)]`` and ``top_k`` from a multipart or JSON body read within the size limit."""
    body = await _read_body(request, limits.max_body_bytes)
    top_k = request.query_params.get("top_k")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        parts = await _multipart_parts(request, body, limits.max_images)
    elif kind == "application/json":
        parts, top_k = _json_parts(body, top_k)
    else:
        raise RequestError(415, f"content type {kind or '(none)'!r} is not accepted: send multipart/form-data files "
                                "or application/json with base64 images", "unsupported-content-type")
    if not parts:
        raise RequestError(400, "the request holds no image file", "no-file")
    if len(parts) > limits.max_images:
        raise RequestError(400, f"the request holds {len(parts)} images, more than the {limits.max_images} allowed", "too-many-images")
    return parts, _top_k(top_k)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is over the limit of {limit} (--max-request-mb)", "body-too-large")
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a body without Content-Length is bounded too
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes (--max-request-mb)", "body-too-large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_parts(request: Any, body: bytes, max_images: int) -> list[tuple[str, bytes]]:
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_images + 1, max_fields=1000)
    except Exception as exc:  # Starlette raises HTTPException or MultiPartException for a malformed body
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
        if "too many files" in str(detail).lower():
            raise RequestError(400, f"the request holds more than the {max_images} images allowed", "too-many-images") from None
        raise RequestError(400, f"malformed multipart body ({one_line(str(detail))[:200]})", "malformed-body") from None
    parts = []
    for field, value in form.multi_items():
        if isinstance(value, UploadFile):
            index = sum(1 for f, _, _ in parts if f == field)
            parts.append((field, f"{field}[{index}] ({value.filename})" if value.filename else f"{field}[{index}]", await value.read()))
    await form.close()
    return [(name, data) for _, name, data in parts]


def _json_parts(body: bytes, top_k: Any) -> tuple[list[tuple[str, bytes]], Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"request body is not valid JSON ({exc.__class__.__name__})", "malformed-body") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise RequestError(400, 'a JSON body must be an object {"images": ["<base64>", ...]}', "malformed-body")
    parts = []
    for i, text in enumerate(payload["images"]):
        name = f"images[{i}]"
        if not isinstance(text, str):
            raise RequestError(400, f"{name} is not a base64 string", "bad-base64", name)
        try:
            parts.append((name, base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{name} is not valid base64", "bad-base64", name) from None
    return parts, payload.get("top_k", top_k)


def _top_k(value: Any) -> int:
    if value is None:
        return 5
    try:
        k = int(value)
        if isinstance(value, bool) or isinstance(value, float) or str(k) != str(value).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise RequestError(400, f"top_k must be an integer, got {str(value)[:40]!r}", "bad-top-k") from None
    if not 1 <= k <= MAX_TOP_K:
        raise RequestError(400, f"top_k must be in 1..{MAX_TOP_K}, got {k}", "bad-top-k")
    return k


def _versions() -> dict[str, str]:
    found = {"clip-adapter": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("fastapi", "starlette", "uvicorn", "open_clip_torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


__all__ = ["MicroBatcher", "RequestError", "ServeLimits", "create_app", "decode_upload", "require_serve_extra", "serve_in_background"]

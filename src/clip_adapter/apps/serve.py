"""An HTTP inference server for an artifact (FastAPI): micro-batched, bounded, loopback by default.

Endpoints:

* ``POST /predict?top_k=5`` — images as ``multipart/form-data`` files (any field name; use
  ``images``, repeated, for several) **or** ``application/json`` ``{"images": ["<base64>", …],
  "top_k": 5}``. Answer: ``{"predictions": [{"path", "label", "score", "top_k": [[label,
  probability], …]}, …]}`` in upload order (equal probabilities rank by class order), the
  prediction records of ``clip-adapter predict --format json`` and the API's ``predict``, built by
  the same function (:func:`clip_adapter.inference.apply_artifact`; the shape is documented in
  :mod:`clip_adapter.inference`): ``path`` is the upload's part name (``images[0] (a.png)``),
  probabilities are calibrated as the artifact says, plus ``set`` (its conformal prediction set)
  and ``ood_score``/``unknown`` when it has them.
  Base64 may be wrapped (spaces, tabs and line breaks are ignored, as ``base64(1)`` writes it);
  any other character outside the alphabet is refused.
* ``GET /health`` — ``{"status": "ok", "in_flight", "max_concurrency", "uploading", "max_uploads"}``
  with 200 while a request can be served; 503 with ``"status": "busy"`` while every model slot
  (``max_concurrency``) or every upload slot (``max_uploads``) is taken, ``"down"`` when the batch
  worker has stopped — a readiness check: a load balancer stops routing to a server that
  would refuse (as a liveness check, restart only on ``"down"`` or no answer).
* ``GET /info`` — classes, method, backbone (names and the weights' content-hash id; a local
  path is cut to its last part), limits. No library versions or paths unless ``info_full``.

Every refusal is one JSON object ``{"error": "<one line naming the part>", "kind": …, "part": …}``:
400 (no image, malformed body or base64, bad ``top_k``, too many images), 404/405 (no such
endpoint or method), 408 (the body did not arrive within ``body_timeout_s``), 413 (body over
``max_request_mb``, image over ``max_pixels``), 415 (another content type), 422 (a part that is
not an image, corrupt, a decompression bomb, an extreme aspect ratio: the project's
:func:`~clip_adapter.data.images.load_rgb` rules), 503 (``max_concurrency`` requests already in
flight or ``max_uploads`` bodies already arriving; retry later).

Slow clients: a request's body is read before it takes one of the ``max_concurrency`` model
slots, within ``body_timeout_s`` for the whole body, and at most ``max_uploads`` bodies arrive at
once; so idle or trickling uploads can neither hold the model nor wait forever, and at most
``max_uploads + max_concurrency`` bodies of ``max_request_mb`` are in memory. A client that hangs
up mid-upload is one INFO line in the log. (Headers are read by uvicorn before the app sees the
request; a client trickling its headers is only bounded by a proxy in front.) ``/docs`` and
``/openapi.json`` are off unless ``docs=True`` (the docs page loads scripts from a CDN).

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
import os
import platform
import re
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

from .._version import __version__
from ..core.errors import ConfigError
from ..core.files import one_line
from ..data.images import BadImage, load_rgb
from ..features.transforms import eval_view
from ..inference import apply_artifact

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
    body_timeout_s: float = 30.0
    max_uploads: int = 32

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_pixels", "max_images", "max_concurrency", "max_uploads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"--max-wait-ms must be in 0..10000, got {self.max_wait_ms}")
        if not 0 < self.max_request_mb <= 4096:
            raise ConfigError(f"--max-request-mb must be in (0, 4096], got {self.max_request_mb}")
        if not 0 < self.body_timeout_s <= 3600:
            raise ConfigError(f"--body-timeout-s must be in (0, 3600], got {self.body_timeout_s}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)


class RequestError(Exception):
    """A refused request: HTTP ``status``, a one-line message, the ``kind`` and the ``part`` at fault.

    ``close``: answer with ``Connection: close``, for a refusal sent before the body was read (the
    rest of it would otherwise keep the connection busy).
    """

    def __init__(self, status: int, message: str, kind: str, part: str | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.status, self.kind, self.part, self.close = status, kind, part, close

    def body(self) -> dict[str, Any]:
        return {"error": one_line(str(self)), "kind": self.kind, "part": self.part}

    def response(self) -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse(
            self.body(), status_code=self.status, headers={"connection": "close"} if self.close else None
        )


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

    missing = [
        name
        for name, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python-multipart", "python_multipart"))
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ConfigError(f"clip-adapter serve needs {', '.join(missing)}: {SERVE_HINT}")


def create_app(model: Any, limits: ServeLimits | None = None, *, info_full: bool = False, docs: bool = False) -> Any:
    """A FastAPI app serving ``model``, an :class:`~clip_adapter.api.AdaptedCLIP` (its classifier, backbone, cache).

    See the module docstring for the endpoints, the limits and the error codes. ``info_full``:
    ``/info`` also shows local paths and library versions (off: any client can read it).
    ``docs``: serve ``/docs``, ``/redoc`` and ``/openapi.json`` (off: the pages load a CDN's scripts).
    """
    require_serve_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    limits = limits or ServeLimits()
    state = _ServerState(model, limits, info_full)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        state.start()
        try:
            yield
        finally:
            await state.stop()

    pages = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="clip-adapter", version=__version__, lifespan=lifespan, **pages)
    app.state.server = state

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:  # 404, 405: the documented shape, not {"detail"}
        return JSONResponse(_http_error_body(request, exc), status_code=exc.status_code, headers=exc.headers)

    @app.get("/health")
    async def health() -> Any:
        body = state.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return state.info()

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        try:
            return await state.predict(request)
        except RequestError as exc:
            return exc.response()
        except Exception as exc:  # a bug or a failed encoder call: one line to the client, the traceback to the log
            log.exception("POST /predict failed")
            return JSONResponse(
                {
                    "error": one_line(f"internal error ({exc.__class__.__name__}: {exc})"),
                    "kind": "internal",
                    "part": None,
                },
                status_code=500,
            )

    return app


class _ServerState:
    """What the endpoints share: the model, the limits, the batcher, the in-flight and uploading counts."""

    def __init__(self, model: Any, limits: ServeLimits, info_full: bool = False) -> None:
        self.model, self.limits, self.info_full = model, limits, info_full
        self.batcher: MicroBatcher | None = None
        self.worker: asyncio.Task | None = None
        self.in_flight = 0  # requests holding a model slot (decoding, queued or in the encoder)
        self.uploading = 0  # requests whose body is still arriving
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
        return self.model.backbone.encode_images(pixels).float().cpu()  # the one encoder call of the batch

    def health(self) -> dict[str, Any]:
        """``status`` "ok" only while a new request could be served: a worker runs and a slot of each kind is free."""
        limits = self.limits
        if self.worker is None or self.worker.done():
            status = "down"
        elif self.in_flight >= limits.max_concurrency or self.uploading >= limits.max_uploads:
            status = "busy"
        else:
            status = "ok"
        return {
            "status": status,
            "in_flight": self.in_flight,
            "max_concurrency": limits.max_concurrency,
            "uploading": self.uploading,
            "max_uploads": limits.max_uploads,
        }

    def info(self) -> dict[str, Any]:
        clf = self.model.classifier
        backbone = self.model.backbone.describe()
        found = {
            "method": clf.method,
            "classes": list(clf.classnames),
            "templates": list(clf.templates),
            "method_config": clf.head.config.to_dict(),
            "backbone": backbone if self.info_full else _public_backbone(backbone),
            "limits": asdict(self.limits),
            "input": {
                "multipart": "image files, any field name (e.g. images, repeated)",
                "json": '{"images": ["<base64>", ...], "top_k": 5}',
            },
        }
        if self.info_full:
            found["versions"] = _versions()
        return found

    async def predict(self, request: Any) -> dict[str, Any]:
        body = await self._receive(request)
        if self.in_flight >= self.limits.max_concurrency:  # one event loop: this check-and-increment cannot race
            raise RequestError(
                503, f"server busy: {self.in_flight} requests in flight (--max-concurrency); retry later", "busy"
            )
        self.in_flight += 1
        try:
            parts, top_k = await _parse_request(request, body, self.limits)
            from starlette.concurrency import run_in_threadpool

            pixels = await run_in_threadpool(self._decode_all, parts)
            assert self.batcher is not None
            features = await self.batcher.submit(pixels)
            return {"predictions": self._records([name for name, _ in parts], features, top_k)}
        finally:
            self.in_flight -= 1

    async def _receive(self, request: Any) -> bytes:
        """The whole body, read before a model slot is taken and within ``body_timeout_s``.

        So a slow or idle uploader holds only one of ``max_uploads`` upload slots, and only for
        ``body_timeout_s``; a refusal here closes the connection (its body may still be coming).
        """
        from starlette.requests import ClientDisconnect

        limits = self.limits
        if self.uploading >= limits.max_uploads:
            raise RequestError(
                503,
                f"server busy: {self.uploading} uploads in progress (--max-uploads); retry later",
                "busy",
                close=True,
            )
        self.uploading += 1
        try:
            return await asyncio.wait_for(_read_body(request, limits.max_body_bytes), limits.body_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(
                408,
                f"the request body did not arrive within {limits.body_timeout_s:g} s (--body-timeout-s)",
                "body-timeout",
                close=True,
            ) from None
        except ClientDisconnect:  # the client's choice, not a server fault: one line, no traceback
            log.info("POST /predict: the client hung up during the upload")
            raise RequestError(400, "the client hung up during the upload", "client-disconnect", close=True) from None
        except RequestError as exc:
            exc.close = True
            raise
        finally:
            self.uploading -= 1

    def _decode_all(self, parts: list[tuple[str, bytes]]) -> list[torch.Tensor]:
        assert self.tmp is not None
        pre = self.model.backbone.preprocess
        return [eval_view(decode_upload(name, data, self.limits.max_pixels, self.tmp), pre) for name, data in parts]

    def _records(self, names: list[str], features: torch.Tensor, k: int) -> list[dict[str, Any]]:
        """The records ``predict`` and the API give, from the same function; ``path`` is each upload's part name."""
        model, config = self.model, getattr(self.model, "features", None)  # its cache holds ZS-Norm's text features
        cache_dir = config.cache_path() if config is not None else None
        return apply_artifact(model.classifier, model.backbone, features, names, k, cache_dir=cache_dir)


@contextlib.contextmanager
def serve_in_background(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of ``host`` in a thread; yield its base URL, stop on exit.

    For tests, notebooks and the load benchmark (loopback by default).

    Example:
        >>> with serve_in_background(create_app(model)) as url:  # doctest: +SKIP
        ...     httpx.get(url + "/health").json()["status"]
        'ok'
    """
    import uvicorn

    sock = bind_socket(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="clip-adapter-serve", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server stopped while starting")
            time.sleep(0.01)
        yield socket_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port``, IPv4 first where the name has both.

    Bound before the model loads and before anything is announced, so an unknown host or a taken
    port is one line at once (a ConfigError naming it) and ``port=0`` gives the real port. It
    listens at once, so the port stays ours while the model loads (early connections wait in the
    backlog and are answered once the server starts).
    """
    try:
        found = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP, socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"cannot resolve the host {host[:100]!r} (--host): {getattr(exc, 'strerror', None) or exc}"
        ) from None
    family, _, _, _, address = min(found, key=lambda entry: entry[0] != socket.AF_INET)
    # proto=IPPROTO_TCP, as uvicorn's own sockets have: asyncio then sets TCP_NODELAY on each connection
    # (with proto 0 it does not, and every small response waits ~40 ms for a delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name != "nt":  # a restart may bind while the last run's connections linger in TIME_WAIT (as uvicorn does)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        where = f"[{address[0]}]:{port}" if family == socket.AF_INET6 else f"{address[0]}:{port}"
        named = "" if host == address[0] else f" ({host})"
        raise ConfigError(f"cannot listen on {where}{named}: {exc.strerror or exc}") from None
    return sock


def socket_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 in brackets): the real port, also after ``port=0``."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def run_server(app: Any, sock: socket.socket, on_started: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` with uvicorn on the bound ``sock`` until stopped; ``on_started(url)`` once it accepts connections.

    The announcement waits for uvicorn's startup (the app's lifespan included), so what it names is
    what answers.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_started is not None:
                on_started(socket_url(sock))

    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits (status 3) when the app's startup fails: say so in one line
        if server.started:
            raise
        raise ConfigError(
            f"the server could not start (uvicorn stopped with status {exc.code}; its log above says why)"
        ) from None
    finally:
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
        raise RequestError(
            413,
            f"image {name} is {width}x{height} = {width * height} pixels, over the server's "
            f"limit of {max_pixels} (--max-pixels)",
            "too-many-pixels",
            name,
        )


async def _parse_request(request: Any, body: bytes, limits: ServeLimits) -> tuple[list[tuple[str, bytes]], int]:
    """``[(part name, bytes)]`` and ``top_k`` from a multipart or JSON ``body`` (already read within the size limit)."""
    top_k = request.query_params.get("top_k")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        parts = await _multipart_parts(request, body, limits.max_images)
    elif kind == "application/json":
        parts, top_k = _json_parts(body, top_k)
    else:
        raise RequestError(
            415,
            f"content type {kind or '(none)'!r} is not accepted: send multipart/form-data files "
            "or application/json with base64 images",
            "unsupported-content-type",
        )
    if not parts:
        raise RequestError(400, "the request holds no image file", "no-file")
    if len(parts) > limits.max_images:
        raise RequestError(
            400, f"the request holds {len(parts)} images, more than the {limits.max_images} allowed", "too-many-images"
        )
    return parts, _top_k(top_k)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413, f"request body of {declared} bytes is over the limit of {limit} (--max-request-mb)", "body-too-large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a body without Content-Length is bounded too
        size += len(chunk)
        if size > limit:
            raise RequestError(
                413, f"request body is over the limit of {limit} bytes (--max-request-mb)", "body-too-large"
            )
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
            raise RequestError(
                400, f"the request holds more than the {max_images} images allowed", "too-many-images"
            ) from None
        raise RequestError(400, f"malformed multipart body ({one_line(str(detail))[:200]})", "malformed-body") from None
    parts = []
    for field, value in form.multi_items():
        if isinstance(value, UploadFile):
            index = sum(1 for f, _, _ in parts if f == field)
            parts.append(
                (
                    field,
                    f"{field}[{index}] ({value.filename})" if value.filename else f"{field}[{index}]",
                    await value.read(),
                )
            )
    await form.close()
    return [(name, data) for _, name, data in parts]


def _json_parts(body: bytes, top_k: Any) -> tuple[list[tuple[str, bytes]], Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(
            400, f"request body is not valid JSON ({exc.__class__.__name__})", "malformed-body"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise RequestError(400, 'a JSON body must be an object {"images": ["<base64>", ...]}', "malformed-body")
    parts = []
    for i, text in enumerate(payload["images"]):
        name = f"images[{i}]"
        if not isinstance(text, str):
            raise RequestError(400, f"{name} is not a base64 string", "bad-base64", name)
        try:
            parts.append((name, base64.b64decode(text.translate(_BASE64_SPACE), validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"{name} is not valid base64", "bad-base64", name) from None
    return parts, payload.get("top_k", top_k)


_BASE64_SPACE = str.maketrans("", "", " \t\n\r\v\f")  # ASCII whitespace only: wrapped base64 (base64(1), PEM)


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


def _http_error_body(request: Any, exc: Any) -> dict[str, Any]:
    """The documented error object for a routing refusal (no such path: 404, a path without that method: 405)."""
    where = f"{request.method} {one_line(request.url.path)[:200]}"
    if exc.status_code == 404:
        return {
            "error": f"no endpoint {where}: the endpoints are POST /predict, GET /health and GET /info",
            "kind": "not-found",
            "part": None,
        }
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow") or "another method"
        return {"error": f"{where} is not allowed: use {allowed}", "kind": "method-not-allowed", "part": None}
    return {"error": one_line(f"{where}: {exc.detail}"), "kind": "http-error", "part": None}


def _public_backbone(described: dict[str, Any]) -> dict[str, Any]:
    """``describe()`` without local paths: a checkpoint file or model folder becomes its last part.

    The weights stay identified by the content hash in ``id``; where they lie on the server is no
    client's business.
    """
    return {
        key: _public_reference(value) if key in ("name", "pretrained") else value for key, value in described.items()
    }


def _public_reference(value: Any) -> Any:
    """A weights tag, hub id or architecture name as is; a local path (``hf:`` prefix kept) as its last part."""
    if not isinstance(value, str):
        return value
    prefix, rest = ("hf:", value[3:]) if value.startswith("hf:") else ("", value)
    if not _is_local_path(rest):
        return value
    return prefix + (re.split(r"[\\/]", rest.rstrip("/\\"))[-1] or "local")


def _is_local_path(text: str) -> bool:
    if text.startswith(("/", "\\", "~", ".")) or re.match(r"[A-Za-z]:[\\/]", text):
        return True
    try:
        return ("/" in text or "\\" in text) and Path(text).exists()  # a relative folder, not a hub id
    except (OSError, ValueError):
        return False


def _versions() -> dict[str, str]:
    found = {"clip-adapter": __version__, "python": platform.python_version(), "torch": torch.__version__}
    for package in ("fastapi", "starlette", "uvicorn", "open_clip_torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


__all__ = [
    "MicroBatcher",
    "RequestError",
    "ServeLimits",
    "bind_socket",
    "create_app",
    "decode_upload",
    "require_serve_extra",
    "run_server",
    "serve_in_background",
    "socket_url",
]

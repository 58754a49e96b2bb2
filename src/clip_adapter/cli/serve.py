"""``clip-adapter serve``: an HTTP inference server for an artifact (needs the ``serve`` extra).

``POST /predict`` takes images as multipart files (or JSON ``{"images": [base64, …]}``) and
answers top-k labels and probabilities; ``GET /health``, ``GET /info``. Concurrent requests are
micro-batched into one encoder call (``--max-batch`` images, waiting at most ``--max-wait-ms``);
request size, image pixels, images per request and requests in flight are bounded; a body must
arrive within ``--body-timeout-s`` and is read before a model slot is taken (so slow uploaders
cannot starve the model); a bad input is a 4xx JSON error naming the part at fault. ``/health`` is
503 while the server cannot take a request. Listens on 127.0.0.1 (this machine only) unless
``--host`` says otherwise; there is no authentication, so expose it only behind one. The address
is bound before the model loads and announced once the server answers (the real port for ``--port 0``).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..api import AdaptedCLIP
from ..apps.serve import ServeLimits, bind_socket, create_app, require_serve_extra, run_server
from ..pipeline import FeatureConfig
from .artifact_args import add_artifact_backbone_options, load_artifact_and_backbone
from .parsing import _bounded_int, positive_int

port_int = _bounded_int(0, 65535, "a port in 0..65535")
DEFAULTS = ServeLimits()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an artifact over HTTP (POST /predict)", description=__doc__)
    p.add_argument("artifact", help="artifact directory written by `clip-adapter train`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=port_int, default=8000, help="port (default: %(default)s; 0 = any free port)")
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=DEFAULTS.max_batch,
        help="images per encoder call (default: %(default)s)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=DEFAULTS.max_wait_ms,
        help="wait for a batch to fill, after its first image (default: %(default)s)",
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        default=DEFAULTS.max_request_mb,
        help="largest request body (default: %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULTS.max_pixels,
        help="largest image, width x height (default: %(default)s)",
    )
    p.add_argument(
        "--max-images", type=positive_int, default=DEFAULTS.max_images, help="images per request (default: %(default)s)"
    )
    p.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=DEFAULTS.max_concurrency,
        help="requests in flight; more are answered 503 (default: %(default)s)",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        default=DEFAULTS.body_timeout_s,
        help="seconds for a whole request body to arrive; slower is answered 408 (default: %(default)s)",
    )
    p.add_argument(
        "--max-uploads",
        type=positive_int,
        default=DEFAULTS.max_uploads,
        help="request bodies arriving at once; more are answered 503 (default: %(default)s)",
    )
    p.add_argument("--info-full", action="store_true", help="GET /info also shows local paths and library versions")
    p.add_argument(
        "--docs", action="store_true", help="serve /docs and /openapi.json (the docs page loads scripts from a CDN)"
    )
    add_artifact_backbone_options(p)
    p.set_defaults(func=main, interrupted_message="stopped (Ctrl-C)")  # a server has no work to resume


def main(args: argparse.Namespace) -> int:
    require_serve_extra()  # before the model is loaded: a missing extra is one line, at once
    limits = ServeLimits(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_request_mb=args.max_request_mb,
        max_pixels=args.max_pixels,
        max_images=args.max_images,
        max_concurrency=args.max_concurrency,
        body_timeout_s=args.body_timeout_s,
        max_uploads=args.max_uploads,
    )
    sock = bind_socket(args.host, args.port)  # an unknown host or a taken port: one line, before any warning or loading
    try:
        if not _is_loopback(sock.getsockname()[0]):
            print(
                f"warning: serving on {args.host}, reachable from other machines, with no authentication",
                file=sys.stderr,
            )
        clf, backbone = load_artifact_and_backbone(args.artifact, args)
        app = create_app(AdaptedCLIP(clf, backbone, FeatureConfig()), limits, info_full=args.info_full, docs=args.docs)
    except BaseException:
        sock.close()
        raise

    def announce(url: str) -> None:
        print(
            f"serving {args.artifact} ({clf.method}, {len(clf.classnames)} classes) on {url} (Ctrl-C stops)",
            file=sys.stderr,
            flush=True,
        )

    run_server(app, sock, announce)
    return 0


def _is_loopback(address: str) -> bool:
    """Whether the bound ``address`` (an IP, as the socket reports it) is reachable from this machine only."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

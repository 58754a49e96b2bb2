"""``clip-adapter serve``: an HTTP inference server for an artifact (needs the ``serve`` extra).

``POST /predict`` takes images as multipart files (or JSON ``{"images": [base64, …]}``) and
answers top-k labels and probabilities; ``GET /health``, ``GET /info``. Concurrent requests are
micro-batched into one encoder call (``--max-batch`` images, waiting at most ``--max-wait-ms``);
request size, image pixels, images per request and requests in flight are bounded; a bad input
is a 4xx JSON error naming the part at fault. Listens on 127.0.0.1 (this machine only) unless
``--host`` says otherwise; there is no authentication, so expose it only behind one.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..api import AdaptedCLIP
from ..pipeline import FeatureConfig
from ..serve import ServeLimits, create_app, require_serve_extra
from .artifact_args import add_artifact_backbone_options, load_artifact_and_backbone
from .parsing import _bounded_int, positive_int

port_int = _bounded_int(0, 65535, "a port in 0..65535")
DEFAULTS = ServeLimits()


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve an artifact over HTTP (POST /predict)", description=__doc__)
    p.add_argument("artifact", help="artifact directory written by `clip-adapter train`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=port_int, default=8000, help="port (default: %(default)s; 0 = any free port)")
    p.add_argument("--max-batch", type=positive_int, default=DEFAULTS.max_batch, help="images per encoder call (default: %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=DEFAULTS.max_wait_ms, help="wait for a batch to fill, after its first image (default: %(default)s)")
    p.add_argument("--max-request-mb", type=float, default=DEFAULTS.max_request_mb, help="largest request body (default: %(default)s)")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULTS.max_pixels, help="largest image, width x height (default: %(default)s)")
    p.add_argument("--max-images", type=positive_int, default=DEFAULTS.max_images, help="images per request (default: %(default)s)")
    p.add_argument("--max-concurrency", type=positive_int, default=DEFAULTS.max_concurrency,
                   help="requests in flight; more are answered 503 (default: %(default)s)")
    add_artifact_backbone_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    require_serve_extra()  # before the model is loaded: a missing extra is one line, at once
    limits = ServeLimits(args.max_batch, args.max_wait_ms, args.max_request_mb, args.max_pixels, args.max_images, args.max_concurrency)
    if not _is_loopback(args.host):
        print(f"warning: serving on {args.host}, reachable from other machines, with no authentication", file=sys.stderr)
    clf, backbone = load_artifact_and_backbone(args.artifact, args)
    app = create_app(AdaptedCLIP(clf, backbone, FeatureConfig()), limits)
    import uvicorn

    print(f"serving {args.artifact} ({clf.method}, {len(clf.classnames)} classes) on http://{args.host}:{args.port} (Ctrl-C stops)",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

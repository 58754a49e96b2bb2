"""Connecting to Ray, and what every Ray job here shares: options, the backbone recipe, fault injection.

Ray is imported lazily (``pip install 'clip-adapter[ray]'``), so the toolkit
works without it; asking for ``--ray`` without it is one line naming the extra.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.errors import ConfigError

ADDRESS_CHECK_SECONDS = 5.0  # Ray itself retries an unreachable address for minutes
RAY_CONNECT_SECONDS = 60.0  # a head that answers gRPC but not as Ray would still hold ray.init for minutes


@dataclass(frozen=True)
class RayOptions:
    """Where and how to run on Ray.

    ``address``: ``None`` starts a local Ray instance (or uses ``$RAY_ADDRESS``),
    ``auto`` the cluster this node belongs to, ``HOST:PORT`` a head node's GCS,
    ``ray://HOST:PORT`` a Ray Client server. ``workers``: extraction actors
    (default: as many as the cluster's free CPUs/GPUs fit). ``retries``: how
    often a dead worker is restarted / a failed run retried before it counts
    as failed. ``faults``: test-only fault injection (see :func:`maybe_crash`).

    Example:
        >>> RayOptions(address="auto", gpus_per_worker=0.5).gpus_per_worker
        0.5
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    retries: int = 3
    faults: tuple[dict[str, Any], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.workers is not None and not 1 <= self.workers <= 100_000:
            raise ConfigError(f"--ray-workers must be between 1 and 100000, got {self.workers}")
        for flag, value in (
            ("--ray-cpus-per-worker", self.cpus_per_worker),
            ("--ray-gpus-per-worker", self.gpus_per_worker),
        ):
            if not (math.isfinite(value) and 0 <= value <= 1024):
                raise ConfigError(f"{flag} must be a number between 0 and 1024, got {value}")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0:
            raise ConfigError("--ray-cpus-per-worker and --ray-gpus-per-worker cannot both be 0")
        if not 0 <= self.retries <= 100:
            raise ConfigError(f"--ray-retries must be between 0 and 100, got {self.retries}")

    @property
    def threads(self) -> int:
        """Encoder threads per worker: ``CLIP_ADAPTER_THREADS`` if set, else the CPUs it reserved (at least 1)."""
        value = os.environ.get("CLIP_ADAPTER_THREADS", "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else max(1, int(self.cpus_per_worker))


@dataclass(frozen=True)
class BackboneSpec:
    """How to build the backbone on a worker: the arguments of :func:`~clip_adapter.backbones.create_backbone`.

    ``precision`` is the driver's *resolved* precision, so a worker on other
    hardware does not pick another one; the worker's encoder fingerprint is
    then checked against the driver's.

    Example:
        >>> BackboneSpec("toy", None, "fp32", "cpu", 0).to_dict()["name"]
        'toy'
    """

    name: str
    pretrained: str | None
    precision: str
    device: str
    init_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build(self):
        from ..backbones import create_backbone

        return create_backbone(self.name, self.pretrained, self.precision, self.device, self.init_seed)


def check_fingerprint(worker: dict[str, str], driver: dict[str, str]) -> None:
    """A worker must encode exactly as the driver would, or its features would be filed under another encoder."""
    if worker != driver:
        diff = ", ".join(
            f"{k} {worker.get(k)} on the worker vs {driver.get(k)} here"
            for k in sorted(driver)
            if worker.get(k) != driver.get(k)
        )
        raise ConfigError(
            f"a Ray worker's encoder differs from this machine's ({diff}); run the command where it resolves "
            "the same device and weights (e.g. on a GPU node with --device cuda), or pass --device cpu"
        )


def import_ray():
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"--ray needs Ray, which is not installed ({exc.name or 'ray'}): pip install 'clip-adapter[ray]'"
        ) from None
    return ray


def check_address(address: str | None) -> None:
    """Refuse, in one line and within seconds, an address Ray would retry for minutes."""
    if address in (None, "", "auto", "local"):
        return
    text = address[len("ray://") :] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--address {address!r}: expected HOST:PORT (a head node's `ray start --head` address), "
            "ray://HOST:PORT or auto"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_CHECK_SECONDS) as conn:
            speaks_grpc = _answers_http2(conn)
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
            "start one with `ray start --head` or check the address"
        ) from None
    if not speaks_grpc:
        raise ConfigError(
            f"--address {address}: something listens there but it is not a Ray cluster (no gRPC answer "
            f"within {ADDRESS_CHECK_SECONDS:g} s); give the head node's GCS address (`ray start --head` prints it)"
        )


# Ray's head (GCS) and Ray Client servers speak gRPC, i.e. HTTP/2: a client that opens with the
# HTTP/2 preface gets a SETTINGS frame back at once. Anything else (a web server, a database, a
# silent port) answers differently or not at all, where ray.init would retry for minutes.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4


def _answers_http2(conn: socket.socket) -> bool:
    """True when the peer answers the HTTP/2 preface with a SETTINGS frame within the check's time."""
    try:
        conn.sendall(_HTTP2_PREFACE)
        header = b""
        while len(header) < 9:
            chunk = conn.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except (socket.timeout, OSError):
        return False
    return header[3] == _SETTINGS_FRAME


@contextlib.contextmanager
def ray_session(options: RayOptions, temp_dir: str | os.PathLike | None = None) -> Iterator[Any]:
    """Ray, connected: to ``options.address``, to a Ray already initialised in this process, or a new local instance.

    A local instance started here is shut down on exit; a cluster is left running.

    Example:
        >>> # with ray_session(RayOptions(address="auto")) as ray: ray.cluster_resources()
    """
    ray = import_ray()
    _ray_messages_to_stderr()
    if ray.is_initialized():
        yield ray
        return
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    check_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if temp_dir and address is None:
        kwargs["_temp_dir"] = str(temp_dir)
    try:
        _bounded(lambda: ray.init(address=address, **kwargs), RAY_CONNECT_SECONDS if address else None)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        raise ConfigError(f"cannot start or reach Ray at {address or 'a new local instance'}: {exc}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _bounded(call: Callable[[], Any], seconds: float | None) -> Any:
    """Run ``call``; with ``seconds``, give up after that long (Ray retries a wrong head for minutes)."""
    if seconds is None:
        return call()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 — handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)  # daemon: a hung connect never blocks the exit
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _ray_messages_to_stderr() -> None:
    """Send the driver's Ray messages ("task failed, will be retried", …) to stderr.

    Ray prints them on stdout from a background thread, where ``--json`` and the
    tables go. Its printing function is internal, so this is done only where it exists.
    """
    try:
        from ray._private import worker
    except ImportError:
        return
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "clip_adapter_stderr", False):
        return

    def to_stderr(data, *args, **kwargs):
        return original({**data, "is_err": True}, *args, **kwargs)

    to_stderr.clip_adapter_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def fitting_workers(ray, options: RayOptions) -> int:
    """How many workers of ``options``' size to start: as asked, capped at what the cluster holds (at least 1)."""
    resources = ray.cluster_resources()
    fits = []
    for flag, name, need in (
        ("--ray-cpus-per-worker", "CPU", options.cpus_per_worker),
        ("--ray-gpus-per-worker", "GPU", options.gpus_per_worker),
    ):
        have = float(resources.get(name, 0))
        if need > have:
            raise ConfigError(
                f"{flag} {need:g}: the Ray cluster has {have:g} {name}s in all, so no worker could ever start"
            )
        if need > 0:
            fits.append(int(have // need))
    most = max(1, min(fits))
    if options.workers and options.workers > most:
        warnings.warn(
            f"--ray-workers {options.workers}: the cluster holds only {most} workers of this size; starting {most}"
        )
    return min(options.workers or most, most)


def maybe_crash(faults: list[dict[str, Any]] | None, name: str) -> None:
    """Fault injection for tests: kill this worker process, as a crash or an OOM kill would (or raise).

    Each fault ``{"match": TEXT, "times": N, "dir": PATH}``: the first N attempts
    at jobs whose name contains TEXT (counted together) each leave a marker file
    in PATH and exit at once (with ``"raise": true``: raise RuntimeError);
    later attempts run normally.
    """
    for fault in faults or []:
        if fault["match"] not in name:
            continue
        for attempt in range(int(fault["times"])):
            marker = Path(fault["dir"]) / f"{fault['match'].replace('/', '_')}.crash{attempt}"
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            if fault.get("raise"):
                raise RuntimeError(f"injected failure {attempt + 1} of {name}")
            os._exit(17)

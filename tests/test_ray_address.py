"""--address: a port where something other than Ray listens is refused within seconds (no Ray needed)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from clip_adapter.core.errors import ConfigError


def _serve_once(reply: bytes | None, ready: threading.Event, port: list[int], stop: threading.Event) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(5)
        port.append(server.getsockname()[1])
        ready.set()
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.recv(64)
                if reply is not None:
                    conn.sendall(reply)
                stop.wait(5)


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n"], ids=["silent", "http1"])
def test_an_address_where_something_else_listens_is_refused_within_seconds(reply, monkeypatch):
    # A TCP port that accepts but is not Ray (a silent port, a web server) made ray.init hang for minutes.
    from clip_adapter.distributed import cluster

    monkeypatch.setattr(cluster, "ADDRESS_CHECK_SECONDS", 0.5)
    ready, stop, port = threading.Event(), threading.Event(), []
    thread = threading.Thread(target=_serve_once, args=(reply, ready, port, stop), daemon=True)
    thread.start()
    assert ready.wait(5)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="not a Ray cluster"):
        cluster.check_address(f"127.0.0.1:{port[0]}")
    stop.set()
    assert time.monotonic() - started < 3


def test_an_address_that_answers_grpc_passes_the_check():
    from clip_adapter.distributed import cluster

    settings = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an HTTP/2 SETTINGS frame, as a gRPC server sends first
    ready, stop, port = threading.Event(), threading.Event(), []
    threading.Thread(target=_serve_once, args=(settings, ready, port, stop), daemon=True).start()
    assert ready.wait(5)
    cluster.check_address(f"127.0.0.1:{port[0]}")
    stop.set()


def test_a_connect_that_never_returns_is_bounded():
    from clip_adapter.distributed.cluster import _bounded

    with pytest.raises(TimeoutError):
        _bounded(lambda: time.sleep(30), 0.2)
    assert _bounded(lambda: 7, 1.0) == 7

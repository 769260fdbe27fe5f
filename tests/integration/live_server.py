"""A real exchange over TCP: uvicorn serving ``exchange.app:create_app(settings)`` on 127.0.0.1.

The server runs in a thread of the test process with its own event loop, on a socket bound to a
free port before it starts, against the per-test database that ``settings`` carries (SQLite or
PostgreSQL). Tests talk to it over HTTP exactly as a partner would: with the SDK
(``partners.client``), plain httpx, or ``requests`` (schemathesis). Nothing is mocked; the
tests may still open the same database to count what was posted.

Use it as a fixture in a test module::

    from tests.integration.live_server import LiveServer, live_server  # noqa: F401
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.app import create_app
from exchange.settings import Settings
from exchange.signing import load_master_key

STARTUP_TIMEOUT = 20.0


@dataclass(frozen=True)
class LiveServer:
    """A running exchange: its base URL, the master key it encrypts HMAC secrets under and the
    public keys it publishes at ``GET /v1/keys``."""

    base_url: str
    master_key: bytes
    exchange_keys: dict[str, Ed25519PublicKey]

    @property
    def authority(self) -> str:
        return self.base_url.removeprefix("http://")


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """Serve the app on a free port for one test; stop it (lifespan shutdown included) after."""
    master_key = load_master_key(settings)  # made once in the data dir; the app loads the same
    sock = _free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported by the fixture, not lost in the thread
            failure.append(exc)

    thread = threading.Thread(target=serve, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise RuntimeError(f"the exchange did not start on port {port}: {failure!r}")
        time.sleep(0.01)
    base_url = f"http://127.0.0.1:{port}"
    try:
        answer = httpx.get(f"{base_url}/v1/keys", timeout=10)
        answer.raise_for_status()
        keys = {}
        for entry in answer.json():
            public = serialization.load_pem_public_key(entry["public_key"].encode())
            assert isinstance(public, Ed25519PublicKey)
            keys[entry["key_id"]] = public
        yield LiveServer(base_url, master_key, keys)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "the exchange did not stop"
        if failure:
            raise failure[0]

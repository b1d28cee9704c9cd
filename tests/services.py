"""The servers some tests need, found through environment variables.

``scripts/services.sh`` (run by ``make test`` and ``.ci/run``) starts a redis-server and a
PostgreSQL server on loopback ports and sets ``TRIO_LANES_TEST_REDIS_URL`` and
``TRIO_LANES_TEST_POSTGRES_DSN``. Without them a test that needs one skips with a hint on
how to install it, except under ``CI=true``, where a missing server fails the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REDIS_URL_VAR = "TRIO_LANES_TEST_REDIS_URL"
POSTGRES_DSN_VAR = "TRIO_LANES_TEST_POSTGRES_DSN"

_HINT = (
    "install it (Debian/Ubuntu: `sudo apt-get install -y --no-install-recommends "
    "redis-server postgresql`) and run `make test`, which starts the servers "
    "(scripts/services.sh)"
)


def missing(what: str) -> None:
    """Skip (locally) or fail (CI) a test whose server is not there."""
    message = f"{what} is not available: {_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; under CI=true this is a failure, not a skip")
    pytest.skip(message)


def _from_env(variable: str, what: str) -> str:
    value = os.environ.get(variable)
    if not value:
        missing(f"{what} (${variable})")
    assert value is not None
    return value


def redis_url() -> str:
    return _from_env(REDIS_URL_VAR, "a Redis server")


def postgres_dsn() -> str:
    return _from_env(POSTGRES_DSN_VAR, "a PostgreSQL server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of the test's own (append-only file on), to stop and restart."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server (the binary)")
        assert binary is not None
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()  # SIGTERM: redis flushes its append-only file and exits
            process.wait(timeout=10)

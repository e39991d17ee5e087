"""Shared fixtures: a LocalDirector per test, a throwaway PKI, asyncio for async tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from shardclient.testing import LocalDirector
from tests.helpers.certs import Pki, make_pki
from tests.helpers.director import PERIOD, SAMPLE_SHAPE, TARGET_SHAPE

# Tests run side by side (pytest -n): a slow example under load is not a failure.
settings.register_profile("shardclient", deadline=None)
settings.load_profile("shardclient")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def director() -> Iterator[LocalDirector]:
    """A LocalDirector served from a background thread, shapes 28x28 -> 1."""
    with LocalDirector(
        sample_shape=SAMPLE_SHAPE, target_shape=TARGET_SHAPE, health_check_period=PERIOD
    ) as local:
        yield local


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fail the test if it leaves a thread running."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"

"""Shared fixtures: real services on 127.0.0.1 (RabbitMQ, PostgreSQL) and tiny candidate spaces."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

RABBITMQ_URL = os.environ.get("NASOA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES_URL = os.environ.get("NASOA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    # The real broker is part of the test environment: its absence is a failure, not a skip.
    assert _port_open(5672), "RabbitMQ is not running on 127.0.0.1:5672 (start it: rabbitmq-server -detached)"
    return RABBITMQ_URL


@pytest.fixture
def queue_prefix(rabbitmq_url, monkeypatch):
    """Queues of this test only on the shared broker (NASOA_QUEUE_PREFIX); deleted afterwards."""
    from kombu import Connection

    prefix = f"nasoa-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("NASOA_QUEUE_PREFIX", prefix)
    yield prefix
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        for suffix in ("cpu", "cuda", "dead"):
            channel.queue_delete(f"{prefix}.{suffix}")


@pytest.fixture(scope="module")
def zoo_address():
    """The default zoo served in this process on a free port."""
    from zoo_store import DEFAULT_ZOO_DIR, make_zoo_server

    server, port = make_zoo_server(DEFAULT_ZOO_DIR, "127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0).wait()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    assert _port_open(5432), "PostgreSQL is not running on 127.0.0.1:5432"
    return POSTGRES_URL


@pytest.fixture
def postgres_store_url(postgres_url: str):
    """A fresh schema per test, so tests never see each other's rows."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture
def tiny_space():
    from adaptor_service import CandidateSpace, ModelInfo, RegimeGrid

    models = [
        ModelInfo("small", {"cpu": 10.0}, num_params=10_000, macs=1_000_000, source_accuracy=50, num_stages=3),
        ModelInfo("large", {"cpu": 80.0}, num_params=900_000, macs=90_000_000, source_accuracy=70, num_stages=4),
    ]
    grid = RegimeGrid(learning_rates=(0.01, 0.1), epochs=(1, 3), batch_sizes=(64,), frozen_stages=(0, 1),
                      optimizers=("sgd",))
    return CandidateSpace(models, grid)


@pytest.fixture
def digits_task():
    from nasoa_contracts import TaskSpec

    return TaskSpec("builtin:digits", 30.0, {"num_samples": 1347.0, "num_classes": 10.0})


def serve(adaptor):
    """``adaptor`` behind a real gRPC server on a free port: yields (adaptor, address)."""
    from adaptor_service.server import make_server

    server, port, _ = make_server(adaptor, "127.0.0.1:0")
    server.start()
    try:
        yield adaptor, f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()


@pytest.fixture
def served(tiny_space):
    """A real adaptor gRPC server on a free port (in-memory store, no dispatcher)."""
    from adaptor_service import Adaptor

    yield from serve(Adaptor.in_memory(candidate_space=tiny_space))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty embedded broker: the CLI's worker check finds nobody consuming the queue."""
    monkeypatch.setenv("NASOA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NASOA_BROKER_URL", "")
    (tmp_path / "home" / "broker").mkdir(parents=True)
    return tmp_path / "home"


@pytest.fixture(scope="session")
def quicktune_data():
    """The real QuickTune-extended meta-data, carried in the repository (benchmarks/data)."""
    from benchmarks._quicktune import DEFAULT_QUICKTUNE_DIR

    assert DEFAULT_QUICKTUNE_DIR.is_dir(), (
        f"QuickTune-extended data not found at {DEFAULT_QUICKTUNE_DIR}: set NASOA_QUICKTUNE_DIR"
    )
    return DEFAULT_QUICKTUNE_DIR

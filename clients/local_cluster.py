"""The whole service on one machine: zoo store, adaptor and workers as real processes.

Each part starts the way a user starts it (``nasoa-zoo serve``, ``nasoa-adaptor``,
``nasoa-worker``), on free localhost ports, sharing one ``NASOA_HOME``. The broker is the
embedded one unless ``broker_url`` (or ``NASOA_BROKER_URL``) names RabbitMQ.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["LocalCluster", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the gRPC health service at ``address`` answers SERVING.

    Waits on the channel's readiness (``grpc.channel_ready_future``); a watcher thread cancels
    that wait if ``process`` exits first.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        ready = grpc.channel_ready_future(channel)
        if process is not None:
            threading.Thread(target=lambda: (process.wait(), ready.cancel()), daemon=True).start()
        try:
            ready.result(timeout=timeout)
        except grpc.FutureCancelledError:
            raise RuntimeError(f"the process serving {address} exited with status {process.returncode}") from None
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"nothing served at {address} within {timeout:.0f}s") from None
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=max(1.0, deadline - time.monotonic()),
                           wait_for_ready=True)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"the service at {address} is {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")


class LocalCluster:
    """Start a zoo service, an adaptor and ``workers`` Celery workers; stop them on exit.

    >>> with LocalCluster("/tmp/nasoa-demo") as cluster:        # doctest: +SKIP
    ...     client = cluster.client()
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        broker_url: str | None = None,
        workers: int = 1,
        policy: str = "nasoa",
        fresh: bool = False,
        env: dict[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        warm_start: str | os.PathLike[str] | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.broker_url = broker_url if broker_url is not None else os.environ.get("NASOA_BROKER_URL", "")
        self.workers = workers
        self.policy = policy
        self.fresh = fresh
        self.extra_env = dict(env or {})
        # None: a cold adaptor (tests and benchmarks choose their experience explicitly).
        self.extra_env["NASOA_WARM_START"] = "none" if warm_start is None else str(Path(warm_start).resolve())
        self.log_dir = Path(log_dir) if log_dir else self.home / "logs"
        self.adaptor_address = f"127.0.0.1:{free_port()}"
        self.zoo_address = f"127.0.0.1:{free_port()}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # Celery node names must be unique on a shared broker (its pidbox queue is exclusive).
        self.node_tag = uuid.uuid4().hex[:6]

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            NASOA_HOME=str(self.home),
            NASOA_ADAPTOR_ADDRESS=self.adaptor_address,
            NASOA_ZOO_ADDRESS=self.zoo_address,
            NASOA_POLICY=self.policy,
            NASOA_BROKER_URL=self.broker_url,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                [sys.executable, "-m", *argv], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = proc
        return proc

    def start(self, timeout: float = 120.0) -> LocalCluster:
        if self.fresh and self.home.exists():
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            zoo = self._spawn("zoo", ["zoo_store.cli", "serve", "--address", self.zoo_address])
            wait_serving(self.zoo_address, timeout, zoo)
            self.start_adaptor(timeout)
            for i in range(self.workers):
                self.start_worker(i)
        except BaseException:
            self.stop()
            raise
        return self

    def start_adaptor(self, timeout: float = 120.0) -> None:
        adaptor = self._spawn("adaptor", ["adaptor_service.server", "--address", self.adaptor_address])
        wait_serving(self.adaptor_address, timeout, adaptor)

    def start_worker(self, index: int = 0) -> subprocess.Popen[bytes]:
        return self._spawn(
            f"worker{index}", ["worker.cli", "--concurrency", "1", "--hostname", f"nasoa{index}.{self.node_tag}@%h"]
        )

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        # Workers first, so no job is left half-reported; then the adaptor flushes its snapshot.
        for name in [n for n in self.processes if n.startswith("worker")]:
            self.stop_process(name)
        for name in ("adaptor", "zoo"):
            self.stop_process(name)

    def client(self, timeout: float = 30.0) -> object:
        from clients import AdaptorClient

        return AdaptorClient(self.adaptor_address, timeout=timeout)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

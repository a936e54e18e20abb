"""The adaptor's gRPC server and the ``nasoa-adaptor`` command.

Configuration (environment, with defaults):

========================  ===============================================================
NASOA_ADAPTOR_ADDRESS     address to bind, ``127.0.0.1:50051``
NASOA_HOME                state directory of the embedded setup, ``~/.nasoa``
NASOA_STORE_URL           ``sqlite:///$NASOA_HOME/adaptor.db``; or ``postgresql://...``
NASOA_SNAPSHOT            River snapshot file, ``$NASOA_HOME/adaptor.snapshot``
NASOA_SNAPSHOT_EVERY      observations between snapshots, ``20`` (the log covers the rest)
NASOA_LEARN               ``background`` (default): Observe returns once results are recorded
                          and a learner thread learns them in log order; ``inline``: Observe
                          returns after learning them
NASOA_ZOO_ADDRESS         the zoo service whose models are the candidates, ``127.0.0.1:50052``
NASOA_CANDIDATES          regime grid file, ``adaptor_service/candidates.toml``
NASOA_POLICY              ``nasoa`` (default), ``random`` or ``fixed``
NASOA_FIXED_MODEL         model of the ``fixed`` policy (default: the zoo's median by CPU step time)
NASOA_SEED                seed of the policy, ``0``
NASOA_RISK_AVERSION       ``nasoa`` ranks by accuracy - k x its std; k, ``0.5``
NASOA_EXPLORATION         probability of an optimistic (accuracy + std) pick, ``0`` = off
NASOA_DISPATCH            ``celery`` (default) or ``none`` (plan and learn only)
NASOA_WARM_START          experience table (.jsonl/.csv, docs/EXPERIENCE_FORMAT.md) learned
                          at start; its runs are recorded once, so restarts do not relearn
NASOA_TOKEN               when set, every call needs ``authorization: Bearer <token>``
NASOA_TLS_CERT/KEY        PEM files: serve TLS instead of plaintext
NASOA_REFLECTION          ``1`` registers gRPC server reflection
NASOA_GRACE_SECONDS       SIGTERM grace period for in-flight calls, ``10``
NASOA_RECONCILE_SECONDS   period of the reconciler that re-queues lost jobs, ``30``
NASOA_REQUEUE_AFTER_SECONDS
                          a QUEUED job published this long ago while its queue is empty
                          has lost its message and is published again, ``300``
NASOA_DATA_ROOT           folders given as datasets must lie inside it (when set)
NASOA_MAX_*, ...          request and memory bounds: see ``adaptor_service._limits.Limits``
========================  ===============================================================
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from adaptor_service._adaptor import Adaptor
from adaptor_service._auth import TokenAuthInterceptor
from adaptor_service._candidates import DEFAULT_SPACE_FILE, CandidateSpace, ModelInfo, RegimeGrid
from adaptor_service._limits import Limits
from adaptor_service._reconciler import Reconciler
from adaptor_service._schedulers import make_generator
from adaptor_service._servicer import AdaptorServicer
from adaptor_service._stores import open_store
from nasoa_api.v1 import adaptor_pb2, adaptor_pb2_grpc

log = logging.getLogger("nasoa.adaptor")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAME = adaptor_pb2.DESCRIPTOR.services_by_name["AdaptorService"].full_name


def make_server(
    adaptor: Adaptor,
    address: str = "127.0.0.1:0",
    token: str = "",
    tls: tuple[bytes, bytes] | None = None,
    reflection: bool = False,
    max_workers: int | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """An unstarted server for ``adaptor``, its bound port and its health servicer.

    The pool has ``adaptor.limits.rpc_threads`` threads (or ``max_workers``) for unary calls
    and Observe streams, plus one per allowed WatchJob stream; past that, calls get
    RESOURCE_EXHAUSTED at once instead of waiting in a queue.
    """
    limits = adaptor.limits
    threads = (max_workers or limits.rpc_threads) + limits.max_watch_streams
    interceptors = [TokenAuthInterceptor(token)] if token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="adaptor-rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
        maximum_concurrent_rpcs=threads,
    )
    adaptor_pb2_grpc.add_AdaptorServiceServicer_to_server(AdaptorServicer(adaptor), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if reflection:
        from grpc_reflection.v1alpha import reflection as grpc_reflection

        grpc_reflection.enable_server_reflection(
            (SERVICE_NAME, grpc_reflection.SERVICE_NAME, health.SERVICE_NAME), server
        )
    if tls is not None:
        creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind the adaptor service to {address}")
    return server, port, health_servicer


def models_from_zoo(address: str, timeout: float = 60.0, token: str = "") -> list[ModelInfo]:
    """The zoo's entries as the adaptor sees them, read through ZooService.ListModels."""
    from clients._client import make_channel
    from nasoa_api.v1 import zoo_pb2, zoo_pb2_grpc

    with make_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"nasoa-adaptor: no zoo service at {address} (set NASOA_ZOO_ADDRESS)") from None
        stub = zoo_pb2_grpc.ZooServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        reply = stub.ListModels(zoo_pb2.ListModelsRequest(), timeout=30, metadata=metadata)
    return [
        ModelInfo(
            name=e.name,
            step_time_ms=dict(e.step_time_ms),
            step_batch_size=e.step_batch_size or 64,
            num_params=e.num_params,
            macs=e.macs,
            source_accuracy=e.source_accuracy,
            num_stages=e.num_stages or 1,
        )
        for e in reply.models
    ]


# The practice NASOA is measured against: one mid-sized model, textbook settings.
FIXED_DEFAULT_REGIME = {"lr": 0.01, "batch_size": 64, "frozen_stages": 0, "optimizer": "sgd"}


def _median_model(models: list[ModelInfo], device_class: str = "cpu") -> str:
    """The zoo's median model by measured step time on ``device_class``."""
    ranked = sorted(models, key=lambda m: (m.step_time_ms.get(device_class, float("inf")), m.name))
    return ranked[len(ranked) // 2].name


def adaptor_from_env() -> Adaptor:
    home = Path(os.environ.get("NASOA_HOME", Path.home() / ".nasoa")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    store = open_store(os.environ.get("NASOA_STORE_URL", f"sqlite:///{home / 'adaptor.db'}"))
    grid = RegimeGrid.from_toml(os.environ.get("NASOA_CANDIDATES", str(DEFAULT_SPACE_FILE)))
    token = os.environ.get("NASOA_TOKEN", "")
    models = models_from_zoo(os.environ.get("NASOA_ZOO_ADDRESS", "127.0.0.1:50052"), token=token)
    if not models:
        raise SystemExit("nasoa-adaptor: the zoo has no models; run `nasoa-zoo list` to check")
    dispatch = os.environ.get("NASOA_DISPATCH", "celery")
    dispatcher = None
    if dispatch == "celery":
        from adaptor_service._dispatch import CeleryDispatcher

        dispatcher = CeleryDispatcher()
    elif dispatch != "none":
        raise SystemExit(f"nasoa-adaptor: NASOA_DISPATCH must be celery or none, got {dispatch!r}")
    learn = os.environ.get("NASOA_LEARN", "background")
    if learn not in ("background", "inline"):
        raise SystemExit(f"nasoa-adaptor: NASOA_LEARN must be background or inline, got {learn!r}")
    policy = os.environ.get("NASOA_POLICY", "nasoa")
    options: dict[str, object] = {}
    if policy == "nasoa":
        options = {"risk_aversion": float(os.environ.get("NASOA_RISK_AVERSION", "0.5")),
                   "exploration": float(os.environ.get("NASOA_EXPLORATION", "0"))}
    elif policy == "fixed":
        options = {"model": os.environ.get("NASOA_FIXED_MODEL", "") or _median_model(models),
                   "hparams": dict(FIXED_DEFAULT_REGIME)}
    return Adaptor(
        store,
        candidate_space=CandidateSpace(models, grid),
        generator=make_generator(policy, seed=int(os.environ.get("NASOA_SEED", "0")), **options),
        dispatcher=dispatcher,
        snapshot_path=os.environ.get("NASOA_SNAPSHOT", str(home / "adaptor.snapshot")),
        snapshot_every=int(os.environ.get("NASOA_SNAPSHOT_EVERY", "20")),
        learn_in_background=learn == "background",
        limits=Limits.from_env(),
    )


def warm_start_from_file(adaptor: Adaptor, path: str) -> int:
    """Learn the runs of an experience table (docs/EXPERIENCE_FORMAT.md); idempotent by run.

    Each run's candidate gets the descriptors and physics prior of its zoo model, so that
    past runs and the service's own jobs share one feature space.
    """
    from dataclasses import replace

    from adaptor_service._experience import read_table, runs_to_observations

    observations = runs_to_observations(read_table(path).runs)
    if not observations:
        raise ValueError(f"warm-start table {path} has no runs (NASOA_WARM_START)")
    space = adaptor.candidate_space
    if space is not None:
        unknown = sorted({o.candidate.model for o in observations} - set(space.models))
        if unknown:
            raise ValueError(
                f"warm-start table {path} names models the zoo does not have: {', '.join(unknown[:10])}"
                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
            )
        observations = [replace(o, candidate=space.complete(o.task, o.candidate)) for o in observations]
    learned = adaptor.warm_start(observations)
    log.info("warm start from %s: %d runs, %d new", path, len(observations), learned)
    return learned


def serve(adaptor: Adaptor, address: str, grace: float = 10.0) -> None:
    """Serve until SIGTERM/SIGINT: health turns NOT_SERVING, calls drain, snapshot flushed."""
    tls = None
    cert, key = os.environ.get("NASOA_TLS_CERT"), os.environ.get("NASOA_TLS_KEY")
    if cert and key:
        tls = (Path(cert).read_bytes(), Path(key).read_bytes())
    server, port, health_servicer = make_server(
        adaptor,
        address,
        token=os.environ.get("NASOA_TOKEN", ""),
        tls=tls,
        reflection=os.environ.get("NASOA_REFLECTION", "") == "1",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    reconciler = Reconciler(
        adaptor,
        lease_seconds=float(os.environ.get("NASOA_REQUEUE_AFTER_SECONDS", "300")),
        every_seconds=float(os.environ.get("NASOA_RECONCILE_SECONDS", "30")),
    ).start()
    host = address.rsplit(":", 1)[0]
    log.info("adaptor serving on %s:%d (%d candidates)", host, port, len(adaptor.candidate_space or []))
    print(f"nasoa-adaptor: serving on {host}:{port}", flush=True)
    stop.wait()
    log.info("shutting down: draining calls for up to %.0fs", grace)
    health_servicer.enter_graceful_shutdown()
    reconciler.stop()
    server.stop(grace).wait()
    adaptor.close()  # results not learned yet are in the log: the next start learns them
    adaptor.snapshot()
    adaptor.store.close()
    print("nasoa-adaptor: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nasoa-adaptor",
        description="Serve the NASOA adaptor (gRPC). Settings come from NASOA_* environment variables.",
        epilog="See `python -c 'import adaptor_service.server as s; print(s.__doc__)'` for every variable.",
    )
    parser.add_argument("--address", default=os.environ.get("NASOA_ADAPTOR_ADDRESS", "127.0.0.1:50051"))
    parser.add_argument("--grace", type=float, default=float(os.environ.get("NASOA_GRACE_SECONDS", "10")))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("NASOA_LOG_LEVEL", "INFO"),
        format='{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", "message": "%(message)s"}',
    )
    try:
        adaptor = adaptor_from_env()
        if os.environ.get("NASOA_WARM_START"):
            warm_start_from_file(adaptor, os.environ["NASOA_WARM_START"])
    except (ValueError, LookupError, OSError) as exc:
        print(f"nasoa-adaptor: {exc}", file=sys.stderr)
        return 2
    # What start-up made lives as long as the process: keeping it out of the collector's
    # full passes takes tens of ms off the Recommend calls that land on one.
    gc.freeze()
    serve(adaptor, args.address, args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
                          at start, by default the shipped one
                          (``benchmarks/data/experience-builtin.jsonl``, 48 runs on the
                          built-in data); ``none`` starts cold. Its runs are recorded once,
                          so restarts do not relearn them
NASOA_TOKEN               when set, every call needs ``authorization: Bearer <token>``
NASOA_TLS_CERT/KEY        PEM files: serve TLS instead of plaintext
NASOA_REFLECTION          ``1`` registers gRPC server reflection (``grpcurl``), as on the zoo
NASOA_GRACE_SECONDS       SIGTERM grace period for in-flight calls, ``10``
NASOA_LOG_FORMAT/LEVEL    ``json`` (default) or ``text``; ``INFO`` (nasoa_contracts/_logging.py)
========================  ===============================================================
"""

from __future__ import annotations

import argparse
import gc
import importlib.resources
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
from adaptor_service._schedulers import make_generator
from adaptor_service._servicer import AdaptorServicer
from adaptor_service._stores import open_store
from nasoa_api.v1 import adaptor_pb2, adaptor_pb2_grpc
from nasoa_contracts import enable_reflection, reflection_enabled, setup_logging

log = logging.getLogger("nasoa.adaptor")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVICE_NAME = adaptor_pb2.DESCRIPTOR.services_by_name["AdaptorService"].full_name


def make_server(
    adaptor: Adaptor,
    address: str = "127.0.0.1:0",
    token: str = "",
    tls: tuple[bytes, bytes] | None = None,
    reflection: bool = False,
    max_workers: int = 32,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """An unstarted server for ``adaptor``, its bound port and its health servicer."""
    interceptors = [TokenAuthInterceptor(token)] if token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="adaptor-rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    adaptor_pb2_grpc.add_AdaptorServiceServicer_to_server(AdaptorServicer(adaptor), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if reflection:
        enable_reflection(server, [SERVICE_NAME])
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
    )


def warm_start_from_file(adaptor: Adaptor, path: str) -> int:
    """Learn the runs of an experience table (docs/EXPERIENCE_FORMAT.md); idempotent by run.

    Each run's candidate gets the descriptors and physics prior of its zoo model, so that
    past runs and the service's own jobs share one feature space.
    """
    from dataclasses import replace

    from adaptor_service._experience import read_table, runs_to_observations

    observations = runs_to_observations(read_table(path).runs)
    space = adaptor.candidate_space
    if space is not None:
        observations = [replace(o, candidate=space.complete(o.task, o.candidate)) for o in observations]
    learned = adaptor.warm_start(observations)
    log.info("warm start from %s: %d runs, %d new", path, len(observations), learned,
             extra={"warm_start": str(path), "runs": len(observations), "new": learned})
    return learned


def shipped_experience() -> str:
    """The path of the experience table shipped with the project."""
    return str(importlib.resources.files("benchmarks").joinpath("data", "experience-builtin.jsonl"))


def warm_start_setting() -> str | None:
    """The experience table to learn at start (NASOA_WARM_START): None for a cold start."""
    value = os.environ.get("NASOA_WARM_START", "").strip()
    if value.lower() == "none":
        return None
    return value or shipped_experience()


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
        reflection=reflection_enabled(),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    host = address.rsplit(":", 1)[0]
    log.info("adaptor serving on %s:%d (%d candidates)", host, port, len(adaptor.candidate_space or []))
    print(f"nasoa-adaptor: serving on {host}:{port}", flush=True)
    stop.wait()
    log.info("shutting down: draining calls for up to %.0fs", grace)
    health_servicer.enter_graceful_shutdown()
    server.stop(grace).wait()
    adaptor.close()  # results not learned yet are in the log: the next start learns them
    adaptor.snapshot()
    adaptor.store.close()
    print("nasoa-adaptor: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nasoa-adaptor",
        description="Serve the NASOA adaptor (gRPC): plans fine-tuning tasks, queues them for the "
        "workers, learns from their results.",
        epilog=__doc__.split("\n\n", 1)[1].replace("``", "").replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", default=os.environ.get("NASOA_ADAPTOR_ADDRESS", "127.0.0.1:50051"),
                        help="HOST:PORT to bind (NASOA_ADAPTOR_ADDRESS; default %(default)s)")
    parser.add_argument("--grace", type=float, default=float(os.environ.get("NASOA_GRACE_SECONDS", "10")),
                        help="seconds in-flight calls get after SIGTERM (NASOA_GRACE_SECONDS; default %(default)s)")
    parser.add_argument("--warm-start", metavar="TABLE",
                        help="experience table learned at start, or 'none' for a cold start "
                        "(NASOA_WARM_START; default: the shipped table)")
    args = parser.parse_args(argv)
    if args.warm_start is not None:
        os.environ["NASOA_WARM_START"] = args.warm_start
    try:
        setup_logging()
        adaptor = adaptor_from_env()
        table = warm_start_setting()
        if table is None:
            log.info("cold start: no experience table (NASOA_WARM_START=none)")
        else:
            warm_start_from_file(adaptor, table)
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

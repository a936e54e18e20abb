"""The adaptor's gRPC server and the ``nasoa-adaptor`` command.

Settings: :class:`nasoa_contracts.AdaptorSettings` (``NASOA_*`` variables, or the ``[adaptor]``
table of the ``NASOA_CONFIG`` file); ``nasoa-adaptor --help`` lists them with their defaults.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from adaptor_service._adaptor import Adaptor
from adaptor_service._candidates import DEFAULT_SPACE_FILE, CandidateSpace, ModelInfo, RegimeGrid
from adaptor_service._limits import Limits
from adaptor_service._predictors import AccuracyPredictor, TimePredictor
from adaptor_service._reconciler import Reconciler
from adaptor_service._schedulers import make_generator
from adaptor_service._servicer import AdaptorServicer
from adaptor_service._stores import open_store
from nasoa_api.v1 import adaptor_pb2, adaptor_pb2_grpc
from nasoa_contracts import (
    DEFAULT_REGIME,
    MAX_MESSAGE_BYTES,
    AdaptorSettings,
    SettingsError,
    TokenAuthInterceptor,
    enable_reflection,
    list_zoo_models,
    load_settings,
    make_channel,
    settings_table,
    setup_logging,
)

log = logging.getLogger("nasoa.adaptor")

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
    with make_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise SystemExit(f"nasoa-adaptor: no zoo service at {address} (set NASOA_ZOO_ADDRESS)") from None
        entries = list_zoo_models(channel, token=token)
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
        for e in entries
    ]




def _median_model(models: list[ModelInfo], device_class: str = "cpu") -> str:
    """The zoo's median model by measured step time on ``device_class``."""
    ranked = sorted(models, key=lambda m: (m.step_time_ms.get(device_class, float("inf")), m.name))
    return ranked[len(ranked) // 2].name


def adaptor_from_settings(settings: AdaptorSettings) -> Adaptor:
    """The adaptor the settings describe: store, zoo models, candidate space, policy, dispatch."""
    settings.home.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url)
    grid = RegimeGrid.from_toml(settings.candidates or DEFAULT_SPACE_FILE)
    models = models_from_zoo(settings.zoo_address, token=settings.token)
    if not models:
        raise SystemExit("nasoa-adaptor: the zoo has no models; run `nasoa-zoo list` to check")
    dispatcher = None
    if settings.dispatch == "celery":
        from adaptor_service._dispatch import CeleryDispatcher

        dispatcher = CeleryDispatcher(settings.broker_url, settings.home, settings.topology())
    options: dict[str, object] = {}
    if settings.policy == "nasoa":  # probe-then-commit
        options = {"risk_aversion": settings.risk_aversion, "max_epochs": settings.max_epochs}
    elif settings.policy == "one-shot":
        options = {"risk_aversion": settings.risk_aversion, "exploration": settings.exploration}
    elif settings.policy == "fixed":
        # The practice NASOA is measured against: one mid-sized model, textbook settings.
        regime = DEFAULT_REGIME.as_hparams()
        regime.pop("weight_decay")  # any weight decay of the grid
        options = {"model": settings.fixed_model or _median_model(models), "hparams": regime}
    return Adaptor(
        store,
        candidate_space=CandidateSpace(models, grid),
        generator=make_generator(settings.policy, seed=settings.seed, **options),
        dispatcher=dispatcher,
        snapshot_path=settings.snapshot,
        snapshot_every=settings.snapshot_every,
        learn_in_background=settings.learn == "background",
        limits=Limits.from_settings(settings),
        accuracy_predictor=AccuracyPredictor(window=settings.training_window),
        time_predictor=TimePredictor(window=settings.training_window),
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
    log.info("warm start from %s: %d runs, %d new", path, len(observations), learned,
             extra={"warm_start": str(path), "runs": len(observations), "new": learned})
    return learned


#: The experience table shipped with the adaptor: 48 real runs on other subsets of the built-in data.
SHIPPED_EXPERIENCE = Path(__file__).with_name("experience-builtin.jsonl")


def warm_start_table(setting: str) -> Path | None:
    """The table ``NASOA_WARM_START`` names: the shipped one when empty, None (cold) for ``none``."""
    if setting.strip().lower() == "none":
        return None
    return Path(setting) if setting.strip() else SHIPPED_EXPERIENCE


def serve(adaptor: Adaptor, settings: AdaptorSettings) -> None:
    """Serve until SIGTERM/SIGINT: health turns NOT_SERVING, calls drain, snapshot flushed."""
    address, grace = settings.adaptor_address, settings.grace_seconds
    server, port, health_servicer = make_server(
        adaptor, address, token=settings.token, tls=settings.tls(), reflection=settings.reflection
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    reconciler = Reconciler(
        adaptor, lease_seconds=settings.requeue_after_seconds, every_seconds=settings.reconcile_seconds
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
        description="Serve the NASOA adaptor (gRPC): plans fine-tuning tasks, queues them for the "
        "workers, learns from their results.",
        epilog="settings (environment variables, or the [adaptor] table of the TOML file $NASOA_CONFIG):\n"
        + settings_table(AdaptorSettings).replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--address", help="HOST:PORT to serve on (overrides NASOA_ADAPTOR_ADDRESS)")
    parser.add_argument("--grace", type=float, help="SIGTERM grace period in seconds (overrides NASOA_GRACE_SECONDS)")
    parser.add_argument("--warm-start", metavar="TABLE",
                        help="experience table learned at start, or 'none' for a cold start "
                        "(overrides NASOA_WARM_START; default: the shipped table)")
    args = parser.parse_args(argv)
    overrides = {"adaptor_address": args.address, "grace_seconds": args.grace, "warm_start": args.warm_start}
    try:
        settings = load_settings(AdaptorSettings, **{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        parser.error(str(exc))
    try:
        setup_logging(settings.log_level, settings.log_format)
        adaptor = adaptor_from_settings(settings)
        table = warm_start_table(settings.warm_start)
        if table is None:
            log.info("cold start: no experience table (NASOA_WARM_START=none)", extra={"warm_start": "none"})
        else:
            warm_start_from_file(adaptor, str(table))
    except (ValueError, LookupError, OSError) as exc:
        print(f"nasoa-adaptor: {exc}", file=sys.stderr)
        return 2
    try:
        adaptor.prepare()
    except Exception:  # the first request then builds it, or says what is wrong
        log.exception("preparing the planner failed")
    # What start-up made lives as long as the process: keeping it out of the collector's
    # full passes takes tens of ms off the Recommend calls that land on one.
    gc.freeze()
    serve(adaptor, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())

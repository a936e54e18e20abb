"""``nasoa-worker``: start a Celery worker that fine-tunes NASOA jobs.

Settings: :class:`nasoa_contracts.WorkerSettings` (``NASOA_*`` variables, or the ``[worker]``
table of the ``NASOA_CONFIG`` file); ``nasoa-worker --help`` lists them with their defaults.
Task events are on (Flower, ``celery events``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from nasoa_contracts import SettingsError, WorkerSettings, load_settings, queue_for, settings_table, setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nasoa-worker",
        description="Start a Celery worker that pulls NASOA fine-tuning jobs. "
        "Extra arguments after -- go to `celery worker` unchanged.",
        epilog="settings (environment variables, or the [worker] table of the TOML file $NASOA_CONFIG):\n"
        + settings_table(WorkerSettings).replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="device to train on, and so the queue to pull from (overrides NASOA_DEVICE)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    parser.add_argument("--hostname", default=None, help="Celery node name")
    parser.add_argument("--loglevel", help="log level (overrides NASOA_LOG_LEVEL)")
    parser.add_argument("celery_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    try:
        settings = load_settings(WorkerSettings, **({"device": args.device} if args.device else {}))
    except SettingsError as exc:
        parser.error(str(exc))
    device = settings.device
    if device == "auto":
        # Decided without initialising CUDA in this (parent) process: children fork from it.
        device = "cuda" if os.path.exists("/dev/nvidia0") else "cpu"
    # The forked children read their settings from the environment: pass the choices on.
    os.environ["NASOA_DEVICE"] = device
    # One thread per job by default: the zoo's step times are profiled that way, and on a
    # small shared machine more threads than free cores make steps erratically slow.
    os.environ.setdefault("NASOA_TORCH_THREADS", "1")

    from worker.celery import app

    setup_logging(args.loglevel or settings.log_level, settings.log_format)

    celery_argv = [
        "worker",
        "--queues", queue_for(device, settings.queue_prefix),
        "--concurrency", str(args.concurrency),
        "--pool", "prefork",
        "--loglevel", args.loglevel or settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        celery_argv += ["--hostname", args.hostname]
    app.worker_main(celery_argv + list(args.celery_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

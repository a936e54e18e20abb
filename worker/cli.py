"""``nasoa-worker``: start a Celery worker that fine-tunes NASOA jobs.

Settings come from the environment (see worker/_config.py): NASOA_BROKER_URL (default: the
embedded broker), NASOA_ADAPTOR_ADDRESS, NASOA_ZOO_ADDRESS, NASOA_DEVICE, NASOA_CACHE_DIR,
NASOA_ADAPTOR_RETRY_SECONDS (how long the adaptor may be unreachable before a job goes back to
the queue), NASOA_MAX_DELIVERIES (deliveries before a job is dead-lettered), NASOA_DEVICE_CLASSES.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nasoa-worker",
        description="Start a Celery worker that pulls NASOA fine-tuning jobs.",
        epilog="Extra arguments after -- go to `celery worker` unchanged.",
    )
    parser.add_argument("--device", default=os.environ.get("NASOA_DEVICE", "auto"),
                        help="cpu, cuda or auto (default %(default)s); picks the queue too")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    parser.add_argument("--hostname", default=None, help="Celery node name")
    parser.add_argument("--loglevel", default=os.environ.get("NASOA_LOG_LEVEL", "INFO"))
    parser.add_argument("celery_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    device = args.device
    if device == "auto":
        # Decided without initialising CUDA in this (parent) process: children fork from it.
        device = "cuda" if os.path.exists("/dev/nvidia0") else "cpu"
    os.environ["NASOA_DEVICE"] = device
    # One thread per job by default: the zoo's step times are profiled that way, and on a
    # small shared machine more threads than free cores make steps erratically slow.
    os.environ.setdefault("NASOA_TORCH_THREADS", "1")

    from worker._config import queue_for
    from worker.celery import app

    celery_argv = [
        "worker",
        "--queues", queue_for(device),
        "--concurrency", str(args.concurrency),
        "--pool", "prefork",
        "--loglevel", args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        celery_argv += ["--hostname", args.hostname]
    app.worker_main(celery_argv + list(args.celery_args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

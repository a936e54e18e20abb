"""The same scheduler loop as ``embedded_scheduler.py``, over gRPC.

The scheduler talks to an adaptor service (``--address``; without one, this script serves
an adaptor on a free local port for the run): ``submit`` plans and stores the job, the
scheduler fine-tunes it itself and reports it with ``Observe`` (started, each epoch, the
result), so ``nasoa-submit watch`` and ``status`` follow it like any other job.

    python examples/grpc_scheduler.py --requests 4
    python examples/grpc_scheduler.py --address 127.0.0.1:50051   # a running nasoa-adaptor (NASOA_DISPATCH=none)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded_scheduler import STREAM, schedule, warm_start, zoo_candidates  # noqa: E402

from adaptor_service import Adaptor, MemoryStore  # noqa: E402
from clients import AdaptorClient  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=len(STREAM), help="how many requests of the stream to run")
    parser.add_argument("--address", help="HOST:PORT of an adaptor service; default: serve one here")
    args = parser.parse_args(argv)
    server = None
    address = args.address
    if address is None:
        from adaptor_service.server import make_server

        adaptor = Adaptor(MemoryStore(), zoo_candidates())  # gRPC threads share it (SQLite :memory: would not)
        warm_start(adaptor)
        server, port, _ = make_server(adaptor, "127.0.0.1:0")
        server.start()
        address = f"127.0.0.1:{port}"
    try:
        with AdaptorClient(address) as client:
            def submit(task, job_id):  # noqa: ANN001, ANN202
                job = client.submit(task, job_id=job_id)
                client.report_started(job.job_id, "grpc-example")
                return job

            rows = schedule(STREAM[: args.requests], submit=submit, report=lambda obs: client.observe([obs]),
                            progress=client.report_progress)
            jobs = {j.job_id: j for j in client.list_jobs()}
            stats = client.get_stats()
        print(f"adaptor at {address}: {stats.observations} results learned, "
              f"jobs {dict(stats.jobs_by_state)}, accuracy MAE {stats.accuracy_mae:.1f} points")
        finished = [jobs[f"example-{i}"].state.value for i in range(1, len(rows) + 1)]
        return 0 if finished == ["DONE"] * args.requests else 1
    finally:
        if server is not None:
            server.stop(0).wait()


if __name__ == "__main__":
    sys.exit(main())

"""Service benchmark: Recommend latency and Observe throughput, through gRPC and direct.

Both paths run in the same process against the same kind of adaptor (the server's: learning
in the background), so the ratio shows what the gRPC layer costs. Observe throughput counts
results acknowledged (recorded, so durable); "learned" also waits until the background
learner has learned them all. These adaptors keep jobs and results in memory; Observe through
gRPC is also measured with the SQLite store that ``nasoa-adaptor`` uses by default.
Latencies are timed after ``WARMUP_CALLS`` untimed calls on other tasks (the first call of a
process builds the candidate space's feature block, about 15 ms more).
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from adaptor_service import Adaptor, CandidateSpace, ModelInfo, RegimeGrid, open_store
from nasoa_contracts import CurvePoint, Observation, TaskSpec


@dataclass(frozen=True)
class LatencyFigures:
    calls: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class ServiceBenchResult:
    candidates: int
    warm_observations: int
    recommend_grpc: LatencyFigures
    recommend_direct: LatencyFigures
    observe_grpc_per_s: float
    observe_direct_per_s: float
    observations_per_run: int
    observe_grpc_learned_per_s: float = 0.0
    observe_direct_learned_per_s: float = 0.0
    observe_grpc_sqlite_per_s: float = 0.0
    observe_grpc_sqlite_learned_per_s: float = 0.0
    #: Recommend through gRPC from a client in its own process (as workers and nasoa-submit call it).
    recommend_grpc_other_process: LatencyFigures | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: Recommend calls made before timing, on other tasks: one-time set-up is not a request's latency.
WARMUP_CALLS = 3


def benchmark_space(n_models: int = 6) -> CandidateSpace:
    """A zoo-shaped space: ``n_models`` models x the default regime grid (360 regimes)."""
    models = [
        ModelInfo(f"etnas-bench-{i}", {"cpu": 5.0 * 2**i}, num_params=50_000 * 2**i, macs=5_000_000 * 2**i,
                  source_accuracy=40.0 + 5 * i, num_stages=4)
        for i in range(n_models)
    ]
    return CandidateSpace(models, RegimeGrid())


def _task(i: int, source: str = "digits") -> TaskSpec:
    return TaskSpec(
        f"builtin:{source}?seed={i % 7}",
        10.0 + (i * 13) % 50,
        {"num_samples": 500.0 + (i * 97) % 3000, "num_classes": 10.0, "channels": 1.0, "image_size": 8.0},
    )


def _observation(adaptor: Adaptor, i: int) -> Observation:
    task = _task(i)
    candidate = adaptor.candidate_space.candidates(task)[(i * 31) % 500]  # type: ignore[union-attr]
    acc = 40.0 + (i * 17) % 55
    secs = 2.0 + (i * 7) % 30
    curve = tuple(CurvePoint(e, acc * e / candidate.epochs, secs * e / candidate.epochs) for e in range(1, candidate.epochs + 1))
    return Observation(f"bench-{uuid.uuid4().hex}", task, candidate, acc, secs, curve)


def _latencies(fn: Callable[[int], object], calls: int) -> LatencyFigures:
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    return LatencyFigures(calls, statistics.median(samples), p99, statistics.fmean(samples))


def run_service_benchmark(
    calls: int = 300, observations: int = 2000, warm: int = 200, progress: Callable[[str], None] = print
) -> ServiceBenchResult:
    from adaptor_service.server import make_server
    from clients import AdaptorClient

    space = benchmark_space()
    direct = Adaptor.in_memory(candidate_space=space, learn_in_background=True)
    served = Adaptor.in_memory(candidate_space=space, learn_in_background=True)
    for adaptor in (direct, served):
        adaptor.warm_start(_observation(adaptor, i) for i in range(warm))
    gc.freeze()  # as nasoa-adaptor does once started (adaptor_service/server.py)
    server, port, _ = make_server(served, "127.0.0.1:0")
    server.start()
    try:
        with AdaptorClient(f"127.0.0.1:{port}", timeout=30) as client:
            progress(f"recommend over {len(space)} candidates: {calls} calls direct, {calls} through gRPC")
            for i in range(WARMUP_CALLS):  # the first call builds the space's feature block and the forests
                direct.recommend(_task(-1 - i))
                client.recommend(_task(-1 - i))
            rec_direct = _latencies(lambda i: direct.recommend(_task(i)), calls)
            rec_grpc = _latencies(lambda i: client.recommend(_task(i)), calls)
            progress(f"recommend: {calls} calls through gRPC from a client in another process")
            rec_other = _recommend_from_another_process(f"127.0.0.1:{port}", calls)

            progress(f"observe: {observations} results direct, {observations} through one gRPC stream")
            batch = [_observation(direct, warm + i) for i in range(observations)]
            start = time.perf_counter()
            for obs in batch:
                direct.observe(obs)
            direct_rate = observations / (time.perf_counter() - start)
            direct.flush()
            direct_learned = observations / (time.perf_counter() - start)

            from nasoa_contracts import convert

            requests = [convert.observation_to_pb(o) for o in batch]
            start = time.perf_counter()
            summary = client.observe_requests(requests, timeout=600)
            grpc_rate = observations / (time.perf_counter() - start)
            served.flush()
            grpc_learned = observations / (time.perf_counter() - start)
            if summary.learned != observations:
                raise RuntimeError(f"gRPC Observe learned {summary.learned} of {observations}")
    finally:
        server.stop(0).wait()
        direct.close()
        served.close()
    progress(f"observe with the SQLite store: {observations} results through one gRPC stream")
    with tempfile.TemporaryDirectory(prefix="nasoa-bench-") as home:
        sqlite_rate, sqlite_learned = _observe_sqlite(space, f"sqlite:///{home}/adaptor.db", warm, requests)
    return ServiceBenchResult(
        candidates=len(space),
        warm_observations=warm,
        recommend_grpc=rec_grpc,
        recommend_direct=rec_direct,
        recommend_grpc_other_process=rec_other,
        observe_grpc_per_s=grpc_rate,
        observe_direct_per_s=direct_rate,
        observations_per_run=observations,
        observe_grpc_learned_per_s=grpc_learned,
        observe_direct_learned_per_s=direct_learned,
        observe_grpc_sqlite_per_s=sqlite_rate,
        observe_grpc_sqlite_learned_per_s=sqlite_learned,
    )


def _recommend_from_another_process(address: str, calls: int) -> LatencyFigures:
    """Recommend latency seen by a client in its own process (other tasks: no cache hits)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_client_latencies, (address, calls))


def _client_latencies(address: str, calls: int) -> LatencyFigures:
    from clients import AdaptorClient

    with AdaptorClient(address, timeout=30) as client:
        for i in range(WARMUP_CALLS):
            client.recommend(_task(-1 - i, "shapes"))
        return _latencies(lambda i: client.recommend(_task(i, "shapes")), calls)


def _observe_sqlite(space: CandidateSpace, url: str, warm: int, requests: list) -> tuple[float, float]:
    """Observe through gRPC into ``nasoa-adaptor``'s default store: (acknowledged /s, learned /s)."""
    from adaptor_service.server import make_server
    from clients import AdaptorClient

    stored = Adaptor(open_store(url), candidate_space=space, learn_in_background=True)
    stored.warm_start(_observation(stored, i) for i in range(warm))
    server, port, _ = make_server(stored, "127.0.0.1:0")
    server.start()
    try:
        with AdaptorClient(f"127.0.0.1:{port}", timeout=30) as client:
            start = time.perf_counter()
            summary = client.observe_requests(requests, timeout=600)
            rate = len(requests) / (time.perf_counter() - start)
            stored.flush()
            learned = len(requests) / (time.perf_counter() - start)
        if summary.learned != len(requests):
            raise RuntimeError(f"gRPC Observe (SQLite) learned {summary.learned} of {len(requests)}")
    finally:
        server.stop(0).wait()
        stored.close()
        stored.store.close()
    return rate, learned


def format_service_result(r: ServiceBenchResult) -> str:
    lines = [
        f"candidates per Recommend: {r.candidates} (after {r.warm_observations} warm observations)",
        f"Recommend direct: p50 {r.recommend_direct.p50_ms:.1f} ms, p99 {r.recommend_direct.p99_ms:.1f} ms",
        f"Recommend gRPC:   p50 {r.recommend_grpc.p50_ms:.1f} ms, p99 {r.recommend_grpc.p99_ms:.1f} ms "
        f"(gRPC/direct p50 x{r.recommend_grpc.p50_ms / max(r.recommend_direct.p50_ms, 1e-9):.2f})",
    ]
    if r.recommend_grpc_other_process is not None:
        other = r.recommend_grpc_other_process
        lines.append(f"Recommend gRPC, client in another process: p50 {other.p50_ms:.1f} ms, p99 {other.p99_ms:.1f} ms")
    lines += [
        f"Observe direct, memory store: {r.observe_direct_per_s:.0f} observations/s "
        f"(learned: {r.observe_direct_learned_per_s:.0f}/s)",
        f"Observe gRPC, memory store:   {r.observe_grpc_per_s:.0f} observations/s "
        f"(gRPC/direct x{r.observe_grpc_per_s / max(r.observe_direct_per_s, 1e-9):.2f}; "
        f"learned: {r.observe_grpc_learned_per_s:.0f}/s)",
        f"Observe gRPC, SQLite store:   {r.observe_grpc_sqlite_per_s:.0f} observations/s "
        f"(learned: {r.observe_grpc_sqlite_learned_per_s:.0f}/s)",
    ]
    return "\n".join(lines)

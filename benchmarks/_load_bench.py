"""``nasoa-bench load``: many clients against a real ``nasoa-adaptor`` for a fixed time.

The adaptor runs as the command a user starts (its own process, the SQLite store, the
default zoo served on loopback, warm-started from the shipped experience table, no workers:
jobs stay QUEUED). For ``seconds``:

- ``clients`` threads each loop Recommend then Submit over a pool of tasks (four built-in
  datasets x eight seeds, budgets of 20-300 s);
- ``streams`` threads each hold one Observe stream open and send a result for every job the
  clients submitted, and every tenth one again (a duplicate, as a worker that retried).

Then it stops by itself, waits for the learner, and checks that the store's counts match
what was acknowledged exactly: one job per accepted Submit, one observation per distinct
result, every observed job DONE.
"""

from __future__ import annotations

import itertools
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["LoadResult", "RestartResult", "format_load", "run_load_benchmark", "run_restart_benchmark"]

DATASETS = ("digits", "fashion-mnist", "shapes", "patterns")
SEEDS = 8


@dataclass
class _Tally:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"Recommend": [], "Submit": []})
    errors: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    timeline: list[tuple[float, str, float]] = field(default_factory=list)  # (start, call, ms)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class LoadResult:
    clients: int
    streams: int
    seconds: float
    requests: int
    errors: int
    error_samples: list[str]
    recommend_p50_ms: float
    recommend_p99_ms: float
    submit_p50_ms: float
    submit_p99_ms: float
    plans_per_s: float
    results_sent: int
    duplicates_sent: int
    jobs_submitted: int
    jobs_stored: int
    observations_stored: int
    jobs_done: int
    counts_match: bool
    adaptor_rss_mb: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _tasks() -> list[object]:
    from nasoa_contracts import TaskSpec
    from nasoa_data import compute_meta_features

    tasks = []
    for name in DATASETS:
        meta = compute_meta_features(f"builtin:{name}").as_dict()
        for seed in range(SEEDS):
            tasks.append(TaskSpec(f"builtin:{name}?seed={seed}", 20.0 + 35 * seed, meta))
    return tasks


def run_load_benchmark(
    clients: int = 16,
    streams: int = 4,
    seconds: float = 60.0,
    progress: Callable[[str], None] = print,
    experience: str | None = None,
    timeline: Path | None = None,
) -> LoadResult:
    """Run the load for ``seconds`` against a fresh adaptor process and check its counts.

    ``experience``: an experience table the adaptor warm-starts from (``NASOA_WARM_START``),
    as a deployment does; ``None`` starts it empty. ``timeline``: a CSV file to write every
    Recommend and Submit to (seconds from the start, call, latency in ms).
    """
    import psutil

    from clients import AdaptorClient
    from clients.local_cluster import free_port, wait_serving
    from nasoa_contracts import Observation
    from zoo_store import DEFAULT_ZOO_DIR, make_zoo_server

    tasks = _tasks()
    zoo, zoo_port = make_zoo_server(DEFAULT_ZOO_DIR, "127.0.0.1:0")
    zoo.start()
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="nasoa-load-") as home:
        env = dict(os.environ, NASOA_HOME=home, NASOA_ZOO_ADDRESS=f"127.0.0.1:{zoo_port}", NASOA_DISPATCH="none",
                   NASOA_LOG_LEVEL="WARNING")
        if experience:
            env["NASOA_WARM_START"] = str(Path(experience).resolve())
        with open(Path(home) / "adaptor.log", "ab") as log:
            adaptor = subprocess.Popen([sys.executable, "-m", "adaptor_service.server", "--address", address],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_serving(address, 120, adaptor)
            with AdaptorClient(address, timeout=60) as client:
                base = client.get_stats()  # the warm start's runs: observations, no jobs
            progress(f"load: {clients} clients (Recommend + Submit) and {streams} Observe streams for {seconds:.0f}s")
            tally = _Tally()
            done = threading.Event()
            results: queue.Queue[object | None] = queue.Queue()
            sent = {"results": 0, "duplicates": 0}

            def client_loop(index: int) -> None:
                with AdaptorClient(address, timeout=30, retries=0) as client:
                    for i in itertools.count():
                        if done.is_set():
                            return
                        task = tasks[(index * 7 + i) % len(tasks)]
                        for name, call in (("Recommend", lambda t=task: client.recommend(t)),
                                           ("Submit", lambda t=task: client.submit(t))):
                            start = time.perf_counter()
                            try:
                                reply = call()
                            except Exception as exc:
                                with tally.lock:
                                    tally.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                                continue
                            elapsed = (time.perf_counter() - start) * 1000
                            with tally.lock:
                                tally.latencies_ms[name].append(elapsed)
                                tally.timeline.append((start, name, elapsed))
                                if name == "Submit":
                                    tally.submitted.append(reply.job_id)
                            if name == "Submit":
                                accuracy = 40.0 + (i * 13 + index) % 55
                                results.put(Observation(reply.job_id, reply.task, reply.plan.candidate, accuracy,
                                                        5.0 + i % 30))

            def stream_loop() -> None:
                def feed() -> Iterator[object]:
                    from nasoa_contracts import convert

                    n = 0
                    while (obs := results.get()) is not None:
                        message = convert.observation_to_pb(obs)
                        n += 1
                        again = n % 10 == 0  # a worker that retried: the same result again
                        with tally.lock:
                            sent["results"] += 1
                            sent["duplicates"] += again
                        yield message
                        if again:
                            yield message

                with AdaptorClient(address, timeout=seconds + 120) as client:
                    try:
                        client.observe_requests(feed(), timeout=seconds + 120)
                    except Exception as exc:
                        with tally.lock:
                            tally.errors.append(f"Observe: {type(exc).__name__}: {exc}"[:300])

            threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
            feeders = [threading.Thread(target=stream_loop, daemon=True) for _ in range(streams)]
            began = time.perf_counter()
            for thread in threads + feeders:
                thread.start()
            time.sleep(seconds)
            done.set()
            for thread in threads:
                thread.join(60)
            elapsed = time.perf_counter() - began
            for _ in feeders:
                results.put(None)
            for thread in feeders:
                thread.join(120)
            rss = psutil.Process(adaptor.pid).memory_info().rss / 2**20
            with AdaptorClient(address, timeout=60) as client:
                stats = client.get_stats()
            submitted = len(tally.submitted)
            jobs_done = stats.jobs_by_state.get("DONE", 0)
            new_observations = stats.observations - base.observations
            match = (stats.jobs - base.jobs == submitted and new_observations == sent["results"]
                     and jobs_done == sent["results"] and len(set(tally.submitted)) == submitted)
        finally:
            adaptor.terminate()
            adaptor.wait(60)
            zoo.stop(0).wait()
    recommend, submit = tally.latencies_ms["Recommend"], tally.latencies_ms["Submit"]
    if timeline is not None:
        rows = [f"{start - began:.3f},{name},{ms:.1f}" for start, name, ms in sorted(tally.timeline)]
        Path(timeline).write_text("\n".join(["seconds,call,latency_ms", *rows]) + "\n")
    return LoadResult(
        clients=clients,
        streams=streams,
        seconds=round(elapsed, 1),
        requests=len(recommend) + len(submit) + len(tally.errors) + sent["results"] + sent["duplicates"],
        errors=len(tally.errors),
        error_samples=tally.errors[:5],
        recommend_p50_ms=statistics.median(recommend) if recommend else float("nan"),
        recommend_p99_ms=_percentile(recommend, 0.99),
        submit_p50_ms=statistics.median(submit) if submit else float("nan"),
        submit_p99_ms=_percentile(submit, 0.99),
        plans_per_s=(len(recommend) + len(submit)) / elapsed,
        results_sent=sent["results"],
        duplicates_sent=sent["duplicates"],
        jobs_submitted=submitted,
        jobs_stored=stats.jobs,
        observations_stored=new_observations,
        jobs_done=jobs_done,
        counts_match=match,
        adaptor_rss_mb=round(rss, 1),
    )


def format_load(r: LoadResult) -> str:
    lines = [
        f"{r.clients} clients, {r.streams} Observe streams, {r.seconds:.0f}s: {r.requests} requests, {r.errors} errors",
        f"Recommend p50 {r.recommend_p50_ms:.1f} ms, p99 {r.recommend_p99_ms:.1f} ms; "
        f"Submit p50 {r.submit_p50_ms:.1f} ms, p99 {r.submit_p99_ms:.1f} ms",
        f"plans/s (Recommend + Submit): {r.plans_per_s:.1f}",
        f"results sent {r.results_sent} (+{r.duplicates_sent} duplicates); stored: {r.jobs_stored} jobs "
        f"(submitted {r.jobs_submitted}), {r.observations_stored} observations, {r.jobs_done} DONE",
        f"counts match exactly: {'yes' if r.counts_match else 'NO'}; adaptor RSS {r.adaptor_rss_mb:.0f} MB",
    ]
    lines += [f"  error: {e}" for e in r.error_samples]
    return "\n".join(lines)


@dataclass(frozen=True)
class RestartResult:
    observations: int
    learn_seconds: float
    snapshot_mb: float
    restart_to_serving_s: float
    adaptor_rss_mb: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def run_restart_benchmark(observations: int = 100_000, progress: Callable[[str], None] = print) -> RestartResult:
    """Seconds from starting ``nasoa-adaptor`` to SERVING over ``observations`` learned results.

    The results (zoo models on the built-in datasets) are recorded and learned in this
    process, into the SQLite store and the snapshot of a fresh ``NASOA_HOME``, as the
    service itself would have left them; then the real command is started on that home.
    """
    import psutil

    from adaptor_service import DEFAULT_SPACE_FILE, Adaptor, CandidateSpace, RegimeGrid, open_store
    from adaptor_service.server import models_from_zoo
    from clients.local_cluster import free_port, wait_serving
    from nasoa_contracts import Observation
    from zoo_store import DEFAULT_ZOO_DIR, make_zoo_server

    tasks = _tasks()
    zoo, zoo_port = make_zoo_server(DEFAULT_ZOO_DIR, "127.0.0.1:0")
    zoo.start()
    try:
        space = CandidateSpace(models_from_zoo(f"127.0.0.1:{zoo_port}"),
                               RegimeGrid.from_toml(str(DEFAULT_SPACE_FILE)))
        with tempfile.TemporaryDirectory(prefix="nasoa-restart-") as home:
            adaptor = Adaptor(open_store(f"sqlite:///{home}/adaptor.db"), candidate_space=space,
                              snapshot_path=Path(home) / "adaptor.snapshot", snapshot_every=10**9)
            candidates = {id(t): space.candidates(t) for t in tasks}

            def stream() -> Iterator[Observation]:
                for i in range(observations):
                    task = tasks[i % len(tasks)]
                    pool = candidates[id(task)]
                    candidate = pool[(i * 7919) % len(pool)]
                    yield Observation(f"restart-{i}", task, candidate, 30.0 + (i * 37) % 65, 2.0 + (i * 13) % 120)

            progress(f"restart: recording and learning {observations} results")
            began = time.perf_counter()
            adaptor.warm_start(stream())  # recorded in batches, learned, refit once, snapshotted
            learn_seconds = time.perf_counter() - began
            adaptor.close()
            adaptor.store.close()
            snapshot_mb = (Path(home) / "adaptor.snapshot").stat().st_size / 2**20
            address = f"127.0.0.1:{free_port()}"
            env = dict(os.environ, NASOA_HOME=home, NASOA_ZOO_ADDRESS=f"127.0.0.1:{zoo_port}", NASOA_DISPATCH="none",
                       NASOA_LOG_LEVEL="WARNING")
            progress("restart: starting nasoa-adaptor on that home")
            began = time.perf_counter()
            with open(Path(home) / "adaptor.log", "ab") as log:
                proc = subprocess.Popen([sys.executable, "-m", "adaptor_service.server", "--address", address],
                                        env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_serving(address, 600, proc)
                restart = time.perf_counter() - began
                rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            finally:
                proc.terminate()
                proc.wait(60)
    finally:
        zoo.stop(0).wait()
    return RestartResult(observations, round(learn_seconds, 1), round(snapshot_mb, 1), round(restart, 2), round(rss, 1))

"""The main job (``make demo``): a stream of real fine-tuning requests through the service.

Starts the zoo store, the adaptor and a worker on localhost (embedded broker unless
``NASOA_BROKER_URL`` is set), submits a stream of requests over three built-in datasets
with budgets from 10 s to 60 s, and prints for each the plan, the predictions and what
really happened, then a summary of how the predictions improved along the stream. A staged
plan (probe-then-commit, successive halving) runs as child jobs: its row shows the winner and
the worker-seconds of all its child jobs, which the budget bounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adaptor_service import SHIPPED_EXPERIENCE

DATASETS = ("builtin:digits", "builtin:shapes", "builtin:fashion-mnist")
# Past jobs on other subsets of the built-in sources (nasoa-bench collect): the adaptor starts
# from this experience, as NASOA's predictor starts from the experience of past tasks.
EXPERIENCE = SHIPPED_EXPERIENCE
BUDGETS = (10.0, 20.0, 30.0, 45.0, 60.0, 15.0)


@dataclass(frozen=True)
class StreamRow:
    dataset: str
    budget: float
    plan: str
    predicted_accuracy: float
    accuracy: float
    predicted_seconds: float
    seconds: float
    state: str
    worker_seconds: float = float("nan")  # all the job's runs: its child jobs' seconds for a staged plan
    stages: int = 1
    child_jobs: int = 0


def budget_ladder(low: float, high: float, steps: int = 6) -> tuple[float, ...]:
    """``steps`` budgets from ``low`` to ``high`` seconds, evenly spaced on a log scale, in a mixed order.

    >>> budget_ladder(10, 120)
    (10.0, 27.0, 73.0, 16.0, 44.0, 120.0)
    """
    if not 0 < low <= high or steps < 1:
        raise ValueError(f"a budget range needs 0 < low <= high and steps >= 1, got {low}, {high}, {steps}")
    ladder = [round(low * (high / low) ** (i / max(steps - 1, 1))) for i in range(steps)]
    return tuple(float(b) for b in ladder[0::2] + ladder[1::2])  # short and long budgets alternate


def request_stream(n: int, budgets: Sequence[float] = BUDGETS) -> list[tuple[str, float]]:
    """Datasets in turn, budgets cycling for each dataset from its own offset, so every dataset meets
    every budget (in ``len(budgets)`` rounds) and consecutive requests differ in budget.

    >>> request_stream(4, (10, 20, 30))
    [('builtin:digits', 10), ('builtin:shapes', 30), ('builtin:fashion-mnist', 20), ('builtin:digits', 20)]
    """
    count = len(DATASETS)
    return [(DATASETS[i % count], budgets[(i // count + 2 * (i % count)) % len(budgets)]) for i in range(n)]


def short_regime(candidate: object) -> str:
    """``etnas-z3 e5 b32 f0 lr0.003 sgd``: the plan in one table cell."""
    hp = candidate.hparams  # type: ignore[attr-defined]
    return (f"{candidate.model} e{candidate.epochs} b{hp.get('batch_size', '?')} "  # type: ignore[attr-defined]
            f"f{hp.get('frozen_stages', '?')} lr{hp.get('lr', '?')} {hp.get('optimizer', '?')}")


def run_stream(client: object, requests: Sequence[tuple[str, float]], out: object = sys.stdout) -> list[StreamRow]:
    from nasoa_contracts import TaskSpec
    from nasoa_data import compute_meta_features

    rows = []
    header = (f"{'#':>2} {'dataset':22s} {'budget':>6s}  {'plan: model epochs batch frozen lr opt':40s} "
              f"{'acc pred':>8s} {'acc':>6s} {'s pred':>7s} {'s':>6s}")
    print(header, file=out, flush=True)
    for i, (dataset, budget) in enumerate(requests, start=1):
        meta = compute_meta_features(dataset).as_dict()
        job = client.submit(TaskSpec(dataset, budget, meta))  # type: ignore[attr-defined]
        for _event in client.watch_job(job.job_id, timeout=budget * 4 + 120):  # type: ignore[attr-defined]
            pass
        job = client.get_job(job.job_id)  # type: ignore[attr-defined]
        result = job.result
        children = [client.get_job(c) for c in job.child_job_ids]  # type: ignore[attr-defined]
        if children:
            worker_seconds = sum(c.result.seconds for c in children if c.result is not None)
        else:
            worker_seconds = result.seconds if result else float("nan")
        ran = result.candidate if result else job.plan.candidate  # a staged plan's winner
        staged = f"{len(job.plan.stages[0].runs)}>1 " if job.plan.staged else ""
        row = StreamRow(
            dataset=dataset,
            budget=budget,
            plan=staged + short_regime(ran),
            predicted_accuracy=job.plan.prediction.accuracy,
            accuracy=result.accuracy if result else float("nan"),
            predicted_seconds=job.plan.total_seconds(),
            seconds=result.seconds if result else float("nan"),
            state=job.state.value,
            worker_seconds=worker_seconds,
            stages=max(len(job.plan.stages), 1),
            child_jobs=len(children),
        )
        rows.append(row)
        flag = "" if row.state == "DONE" else f"  [{row.state}: {job.message}]"
        print(f"{i:2d} {dataset.removeprefix('builtin:'):22s} {budget:5.0f}s  {row.plan[:40]:40s} "
              f"{row.predicted_accuracy:8.1f} {row.accuracy:6.1f} {row.predicted_seconds:7.1f} {row.seconds:6.1f}{flag}",
              file=out, flush=True)
    return rows


def summarize(rows: Sequence[StreamRow]) -> dict[str, float]:
    done = [r for r in rows if r.state == "DONE"]
    half = len(rows) // 2

    def mae(part: Sequence[StreamRow], attr: str) -> float:
        pairs = [(getattr(r, f"predicted_{attr}"), getattr(r, attr)) for r in part if r.state == "DONE"]
        return statistics.fmean(abs(p - a) for p, a in pairs) if pairs else float("nan")

    shares = sorted(r.worker_seconds / r.budget for r in done if r.worker_seconds == r.worker_seconds)
    return {
        "requests": float(len(rows)),
        "done": float(len(done)),
        "mean_accuracy": statistics.fmean(r.accuracy for r in done) if done else float("nan"),
        # the budget bounds the worker-seconds of all of a job's runs
        "budget_overruns": float(sum(max(r.seconds, r.worker_seconds) > r.budget for r in done)),
        "budget_share_mean": statistics.fmean(shares) if shares else float("nan"),
        "budget_share_p10": _percentile(shares, 10.0),
        "staged_jobs": float(sum(r.stages > 1 for r in rows)),
        "accuracy_mae_first_half": mae(rows[:half], "accuracy"),
        "accuracy_mae_second_half": mae(rows[half:], "accuracy"),
        "time_mae_first_half": mae(rows[:half], "seconds"),
        "time_mae_second_half": mae(rows[half:], "seconds"),
    }


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, linearly interpolated (numpy's default).

    >>> _percentile([0.2, 0.4, 0.6, 0.8, 1.0], 10)
    0.28
    """
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return round(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low), 12)


def print_summary(summary: dict[str, float], out: object = sys.stdout) -> None:
    print("\nsummary", file=out)
    print(f"  requests done          {summary['done']:.0f} of {summary['requests']:.0f}", file=out)
    print(f"  mean accuracy          {summary['mean_accuracy']:.1f}%", file=out)
    print(f"  budget overruns        {summary['budget_overruns']:.0f}", file=out)
    print(f"  budget used            mean {summary['budget_share_mean']:.0%}, "
          f"10th percentile {summary['budget_share_p10']:.0%} (worker-seconds over budget)", file=out)
    print(f"  accuracy MAE (points)  first half {summary['accuracy_mae_first_half']:.1f}, "
          f"second half {summary['accuracy_mae_second_half']:.1f}", file=out)
    print(f"  time MAE (seconds)     first half {summary['time_mae_first_half']:.1f}, "
          f"second half {summary['time_mae_second_half']:.1f}", file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nasoa-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12, help="length of the stream (default %(default)s)")
    parser.add_argument("--home", default=os.environ.get("NASOA_HOME", "var/demo"), help="state directory")
    parser.add_argument("--experience", default=str(EXPERIENCE),
                        help="experience table to warm-start from ('' for a cold start; default %(default)s)")
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be >= 1")
    from clients.local_cluster import LocalCluster

    broker = os.environ.get("NASOA_BROKER_URL", "")
    warm = args.experience or None  # None: LocalCluster starts the adaptor cold
    print(f"starting zoo, adaptor and one worker (broker: {broker or 'embedded'}, state: {args.home}, "
          f"warm start: {warm or 'none'})", flush=True)
    started = time.monotonic()
    with LocalCluster(Path(args.home), fresh=True, warm_start=warm) as cluster:
        print(f"services up in {time.monotonic() - started:.1f}s; logs in {cluster.log_dir}\n", flush=True)
        client = cluster.client()
        rows = run_stream(client, request_stream(args.requests))
        stats = client.get_stats()  # type: ignore[attr-defined]
        print(f"\nadaptor: {stats.observations} observations, progressive MAE {stats.accuracy_mae:.1f} points, "
              f"time error {100 * stats.time_relative_error:.0f}%, margin x{stats.time_margin:.2f}")
        summary = summarize(rows)
        print_summary(summary)
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    return 0 if summary["done"] == summary["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())

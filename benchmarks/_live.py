"""Live benchmark: the same stream of real fine-tuning requests through the running service,
once per policy, each from a fresh state.

Policies: ``nasoa`` (the service's default generator), ``nasoa-one-shot`` (NASOA's one-shot
pick), ``fixed`` (the fixed default regime), ``asha`` (successive halving over real runs),
``random``. Each reaches the adaptor as its ``NASOA_POLICY``. The budget of a request bounds
the worker-seconds of all its runs; the share of it used is reported per policy.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clients.demo import EXPERIENCE, StreamRow, budget_ladder, request_stream, run_stream, summarize

# The benchmark's policy names and the adaptor's NASOA_POLICY for each.
LIVE_POLICIES = {"nasoa": "nasoa", "nasoa-one-shot": "one-shot", "fixed": "fixed", "asha": "asha",
                 "random": "random"}
DEFAULT_LIVE_POLICIES = ("nasoa", "nasoa-one-shot", "fixed", "asha")


@dataclass(frozen=True)
class LivePolicyResult:
    policy: str
    summary: dict[str, float]
    rows: list[StreamRow]

    @property
    def abs_accuracy_errors(self) -> list[float]:
        return [abs(r.predicted_accuracy - r.accuracy) for r in self.rows if r.state == "DONE"]


def run_live_benchmark(
    requests: int = 24,
    policies: Sequence[str] = DEFAULT_LIVE_POLICIES,
    home: str | Path = "var/bench-live",
    progress: Callable[[str], None] = print,
    experience: str | Path | None = EXPERIENCE,
    budget_range: tuple[float, float] = (10.0, 120.0),
) -> list[LivePolicyResult]:
    from clients.local_cluster import LocalCluster

    unknown = sorted(set(policies) - set(LIVE_POLICIES))
    if unknown:
        raise ValueError(f"unknown policies {unknown}: choose among {', '.join(LIVE_POLICIES)}")
    stream = request_stream(requests, budget_ladder(*budget_range))
    results = []
    for policy in policies:
        progress(f"\n== policy {policy}: {requests} requests, budgets {budget_range[0]:g}-{budget_range[1]:g}s ==")
        # Every policy's adaptor starts from the same experience: only the choice differs.
        with LocalCluster(Path(home) / policy, policy=LIVE_POLICIES[policy], fresh=True,
                          warm_start=experience) as cluster:
            rows = run_stream(cluster.client(timeout=60), stream)
        results.append(LivePolicyResult(policy, summarize(rows), rows))
    return results


def format_live(results: Sequence[LivePolicyResult]) -> str:
    lines = [f"{'policy':14s} {'done':>5s} {'mean acc':>9s} {'overruns':>9s} {'budget used mean/p10':>21s} "
             f"{'staged':>7s} {'acc MAE 1st/2nd half':>22s} {'time MAE 1st/2nd half':>22s}"]
    for r in results:
        s = r.summary
        used = f"{s['budget_share_mean']:.0%} / {s['budget_share_p10']:.0%}"
        lines.append(
            f"{r.policy:14s} {s['done']:5.0f} {s['mean_accuracy']:9.1f} {s['budget_overruns']:9.0f} {used:>21s} "
            f"{s['staged_jobs']:7.0f} "
            f"{s['accuracy_mae_first_half']:10.1f} / {s['accuracy_mae_second_half']:<9.1f} "
            f"{s['time_mae_first_half']:10.1f} / {s['time_mae_second_half']:<9.1f}"
        )
    if len(results) > 1:
        base = {r.policy: r.summary["mean_accuracy"] for r in results}
        if "nasoa" in base:
            for other, acc in base.items():
                if other != "nasoa":
                    lines.append(f"nasoa - {other}: {base['nasoa'] - acc:+.1f} accuracy points at equal budgets")
    return "\n".join(lines)


def live_json(results: Sequence[LivePolicyResult]) -> str:
    return json.dumps(
        [{"policy": r.policy, "summary": r.summary, "rows": [asdict(x) for x in r.rows],
          "median_abs_accuracy_error": statistics.median(r.abs_accuracy_errors) if r.abs_accuracy_errors else None}
         for r in results],
        indent=2,
    )

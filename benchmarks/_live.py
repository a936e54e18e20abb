"""Live benchmark: the same stream of real fine-tuning requests through the running service,
once per policy (NASOA, the fixed default regime, random), each from a fresh state.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from clients.demo import EXPERIENCE, StreamRow, request_stream, run_stream, summarize


@dataclass(frozen=True)
class LivePolicyResult:
    policy: str
    summary: dict[str, float]
    rows: list[StreamRow]

    @property
    def abs_accuracy_errors(self) -> list[float]:
        return [abs(r.predicted_accuracy - r.accuracy) for r in self.rows if r.state == "DONE"]


def run_live_benchmark(
    requests: int = 30,
    policies: Sequence[str] = ("nasoa", "fixed", "random"),
    home: str | Path = "var/bench-live",
    progress: Callable[[str], None] = print,
    experience: str | Path | None = EXPERIENCE,
) -> list[LivePolicyResult]:
    from clients.local_cluster import LocalCluster

    stream = request_stream(requests)
    results = []
    for policy in policies:
        progress(f"\n== policy {policy}: {requests} requests ==")
        # Every policy's adaptor starts from the same experience: only the choice differs.
        with LocalCluster(Path(home) / policy, policy=policy, fresh=True, warm_start=experience) as cluster:
            rows = run_stream(cluster.client(timeout=60), stream)
        results.append(LivePolicyResult(policy, summarize(rows), rows))
    return results


def format_live(results: Sequence[LivePolicyResult]) -> str:
    lines = [f"{'policy':8s} {'done':>5s} {'mean acc':>9s} {'overruns':>9s} {'acc MAE 1st/2nd half':>22s} {'time MAE 1st/2nd half':>22s}"]
    for r in results:
        s = r.summary
        lines.append(
            f"{r.policy:8s} {s['done']:5.0f} {s['mean_accuracy']:9.1f} {s['budget_overruns']:9.0f} "
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

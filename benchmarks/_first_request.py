"""The first request on a fresh adaptor: cold against warm from the shipped experience table.

Each start gets its own single-machine cluster (zoo, adaptor, one worker, embedded broker);
one job is submitted through ``nasoa.Client`` and followed to its result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["format_first_request", "run_first_request"]


def run_first_request(
    dataset: str = "builtin:digits", budget: float = 30.0, home: str | Path = "var/bench-first-request",
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    import nasoa
    from adaptor_service import SHIPPED_EXPERIENCE
    from clients import LocalCluster

    rows = []
    for start, table in (("cold", None), ("warm", SHIPPED_EXPERIENCE)):
        folder = Path(home) / start
        progress(f"== {start} adaptor: {dataset}, budget {budget:g}s ==")
        with LocalCluster(folder, broker_url="", fresh=True, warm_start=table) as cluster:
            previous = os.environ.get("NASOA_HOME")
            os.environ["NASOA_HOME"] = str(folder.resolve())  # the worker check asks this embedded broker
            try:
                with nasoa.Client(cluster.adaptor_address) as client:
                    job = client.wait(client.submit(dataset, budget).job_id, raise_on_failure=False)
            finally:
                if previous is None:
                    del os.environ["NASOA_HOME"]
                else:
                    os.environ["NASOA_HOME"] = previous
        p, result = job.plan.prediction, job.result
        rows.append({
            "start": start, "plan": job.plan.candidate.describe(), "state": job.state.value,
            "predicted_accuracy": p.accuracy, "predicted_std": p.accuracy_std, "predicted_seconds": p.seconds,
            "accuracy": result.accuracy if result else None, "seconds": result.seconds if result else None,
            "budget_seconds": budget,
        })
    return rows


def format_first_request(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'start':6s} {'predicted':>20s} {'actual':>16s} {'budget used':>12s}  plan"]
    for r in rows:
        used = f"{100 * r['seconds'] / r['budget_seconds']:.0f}%" if r["seconds"] is not None else "-"
        actual = f"{r['accuracy']:.1f}% in {r['seconds']:.1f}s" if r["accuracy"] is not None else r["state"]
        lines.append(f"{r['start']:6s} {r['predicted_accuracy']:5.1f}% +/- {r['predicted_std']:4.1f} "
                     f"in {r['predicted_seconds']:4.1f}s {actual:>16s} {used:>12s}  {r['plan']}")
    if len(rows) == 2 and all(r["accuracy"] is not None for r in rows):
        cold, warm = rows
        lines.append(f"warm - cold: {warm['accuracy'] - cold['accuracy']:+.1f} accuracy points")
    return "\n".join(lines)
